"""The training loop: a codec fitted to a folder of images, resumable, on one device or many.

Loss = lambda * D + bits per pixel, with additive uniform noise standing in for rounding, where the
distortion D is 255^2 * MSE, or with ``ms_ssim_weight`` w a blend (1 - w) * 255^2 * MSE +
w * MS_SSIM_SCALE * (1 - MS-SSIM) (architectures without a rate term, like ``tutorial``, train on
MSE alone). A checkpoint (weights, optimizer, step) is written every ``checkpoint_every`` steps
and when stopping; since every sample and every noise draw is a function of (seed, step), a
resumed run continues exactly as a straight one would. Under ``torchrun`` it runs
DistributedDataParallel: each rank draws its own samples, rank 0 alone writes files.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader

from aecompress import data as train_data
from aecompress import format as aecformat
from aecompress import pack
from aecompress.device import native_bf16, select_device
from aecompress.errors import TrainingError
from aecompress.fileio import atomic_torch_save, atomic_write
from aecompress.imageio import ImageData
from aecompress.metrics import ms_ssim_batch, psnr
from aecompress.modelfile import load_model, read_info, save_model
from aecompress.nn import LatentCodec, build
from aecompress.nn.models import FactorizedCodec, HyperpriorCodec

log = logging.getLogger("aecompress")

# How many units of 255^2 * MSE one unit of 1 - MS-SSIM counts for in a blended distortion: the
# ratio in which the two fall along our codecs' rate-distortion curves (the stage-12 hyperprior on
# 10 BSDS500 validation images, -q 10 to 90: 2,113), so that a blend keeps lambda's rate roughly
# where pure MSE puts it.
MS_SSIM_SCALE = 2000.0
# The floor under each MS-SSIM scale term in training: the power's gradient is unbounded near 0.
MS_SSIM_FLOOR = 1e-4

# Config keys that fix the shapes of the image transforms: a warm start takes them from the init.
# what a warm start carries across architectures (the shapes of the parts they share)
TRANSFORM_KEYS = (
    "channels",
    "latent_channels",
    "act",
    "downsamples",
    "hyper_channels",
    "hyper_latent_channels",
)


@dataclass
class TrainConfig:
    data: list[str]
    output: str
    arch: str = "factorized"
    arch_config: dict[str, Any] = field(default_factory=dict)
    steps: int = 20_000
    batch_size: int = 8
    crop: int | None = None
    lr: float = 5e-4
    warmup: int = 100
    decay_at: tuple[float, float] = (0.78, 0.93)
    lmbda: float = 0.01
    clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    checkpoint_every: int = 1000
    log_every: int = 100
    val: list[str] | None = None
    val_every: int = 1000
    time_budget: float | None = None
    init: str | None = None
    name: str | None = None
    dataset: str = "folder"
    precision: str | None = None  # "bf16": networks under bfloat16 autocast; None: as saved, else fp32
    lr_scales: dict[str, float] = field(default_factory=dict)  # parameter-name prefix -> lr factor
    ema: float = 0.0  # decay of the weight average that validation and the model file use; 0: off
    frozen: list[str] = field(default_factory=list)  # parameter-name prefixes that do not train
    ms_ssim_weight: float | None = None  # share of MS-SSIM in the distortion; None: as saved, else 0
    synthetic: float = 0.0  # share of crops drawn from generated screens, slides, comics, patterns
    train_rates: tuple[float, float] | None = None  # variable-rate models: positions trained; None: all
    compile: bool = False  # the training step through torch.compile (how the steps run, not what they learn)
    command: str = ""


ARCHS_WITH_TRANSFORMS = ("factorized", "hyperprior", "context")  # --channels, --act, --stride apply
VARIABLE_RATE = ("hyperprior", "context")  # --lambdas, --rate-range apply


def make_config(
    *,
    data: list[str] | None,
    output: str,
    dataset: str = "folder",
    data_root: str | None = None,
    arch: str | None = None,
    init: Path | None = None,
    channels: int = 128,
    act: str = "gdn",
    stride: int | None = None,
    lambdas: list[float] | None = None,
    rate_range: list[float] | None = None,
    synthesis_channels: int | None = None,
    **settings: Any,
) -> TrainConfig:
    """The training rules, from what a user asked for: a config or one clear TrainingError.

    ``init`` is a model file (a family's member already chosen); the architecture defaults to
    its own (fine-tuning keeps it), else factorized. ``settings`` are TrainConfig's other fields.
    """
    if not output:
        raise TrainingError("-o/--output MODEL is required")
    if dataset == "stl10":
        if not data_root:
            raise TrainingError("--dataset stl10 needs --data-root DIR")
        sources = [data_root]
    elif data:
        sources = list(data)
    else:
        raise TrainingError("give a folder of training images (or --dataset stl10 --data-root DIR)")
    if arch is None:
        arch = read_info(init).arch if init else "factorized"
    arch_config: dict[str, Any] = {}
    if arch in ARCHS_WITH_TRANSFORMS:
        arch_config = {"channels": channels, "act": act}
        if stride is not None:
            if stride not in (2, 4, 8, 16):
                raise TrainingError(f"--stride must be 2, 4, 8 or 16, not {stride}")
            arch_config["downsamples"] = stride.bit_length() - 1
    elif stride is not None:
        raise TrainingError(f"--stride applies to the factorized architecture, not {arch!r}")
    if lambdas is not None or rate_range is not None or synthesis_channels is not None:
        if arch not in VARIABLE_RATE:
            options = "--lambdas, --rate-range and --synthesis-channels"
            raise TrainingError(f"{options} apply to variable-rate models, not {arch!r}")
        if synthesis_channels is not None:
            arch_config["synthesis_channels"] = synthesis_channels
        if lambdas is not None:
            arch_config["lambdas"] = lambdas
        if rate_range is not None:
            arch_config["rate_range"] = rate_range
    return TrainConfig(
        data=sources, output=output, arch=arch, arch_config=arch_config, dataset=dataset,
        init=str(init) if init else None, **settings,
    )  # fmt: skip


@dataclass
class TrainHooks:
    """What the caller hears of (progress bar, log lines) and how it asks training to stop."""

    on_step: Callable[[int, float], None] | None = None
    on_log: Callable[[dict[str, Any]], None] | None = None
    on_val: Callable[[dict[str, Any]], None] | None = None
    stop: Callable[[int], bool] | None = None


class WeightAverage:
    """An exponential moving average of the parameters (Polyak averaging). A small batch at a
    high learning rate leaves the raw weights wandering around the optimum; their average sits
    closer to it, so validation and the model file use the average while training follows the
    raw weights. Buffers are not averaged: the copy takes them from the model as it is."""

    def __init__(self, model: LatentCodec, decay: float, saved: dict[str, torch.Tensor] | None) -> None:
        self.decay = decay
        self._model = model
        self.state = {
            name: (saved[name] if saved is not None else p).detach().to(p.device, p.dtype).clone()
            for name, p in model.named_parameters()
        }

    @torch.no_grad()
    def update(self, model: LatentCodec) -> None:
        for name, p in model.named_parameters():
            self.state[name].lerp_(p, 1.0 - self.decay)

    def model(self) -> LatentCodec:
        """A copy of the model holding the averaged parameters."""
        averaged = copy.deepcopy(self._model)
        averaged.load_state_dict(self.state, strict=False)
        return averaged


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Warm-up, a long plateau, then two decays (x0.2 and x0.05 of the peak)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if progress >= cfg.decay_at[1]:
        return cfg.lr * 0.05
    if progress >= cfg.decay_at[0]:
        return cfg.lr * 0.2
    return cfg.lr


def rd_loss(
    model: torch.nn.Module, batch: torch.Tensor, lmbda: float, rate: bool, ms_ssim_weight: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Rate-distortion loss of a batch in [0, 1] (MSE alone when ``rate`` is False), with parts.

    A variable-rate model says which lambda each sample was coded at; it weights that sample's
    distortion. ``ms_ssim_weight`` blends MS-SSIM into the distortion: MSE alone blurs fine
    texture that MS-SSIM (and the eye) miss more than the squared error says.
    """
    out = model(batch)
    mse_each = (out.x_hat - batch).square().mean(dim=(1, 2, 3))
    mse = mse_each.mean()
    bpp = out.bits / (batch.shape[0] * batch.shape[2] * batch.shape[3])
    weight = out.lmbda if out.lmbda is not None else lmbda
    parts = {"bpp": bpp.detach(), "mse": mse.detach()}
    distortion = 255.0**2 * mse_each
    if ms_ssim_weight:
        with torch.autocast(batch.device.type, enabled=False):
            similarity = ms_ssim_batch(out.x_hat.float() * 255.0, batch.float() * 255.0, MS_SSIM_FLOOR)
        distortion = (1 - ms_ssim_weight) * distortion + ms_ssim_weight * MS_SSIM_SCALE * (1 - similarity)
        parts["ms_ssim"] = similarity.mean().detach()
    loss = (weight * distortion).mean() + bpp if rate else mse
    return loss, {"loss": loss.detach(), **parts}


def loss_formula(rate: bool, ms_ssim_weight: float) -> str:
    """The training loss in words, for the model card."""
    if not rate:
        return "MSE"
    if not ms_ssim_weight:
        return "lambda * 255^2 * MSE + bpp"
    mse_part = f"{1 - ms_ssim_weight:g} * 255^2 * MSE"
    return f"lambda * ({mse_part} + {ms_ssim_weight:g} * {MS_SSIM_SCALE:g} * (1 - MS-SSIM)) + bpp"


def _check_prefixes(model: torch.nn.Module, prefixes: list[str], option: str) -> None:
    """A typo in a parameter-name prefix is an error, not an option that silently does nothing."""
    unknown = [p for p in prefixes if not any(n.startswith(p) for n, _ in model.named_parameters())]
    if unknown:
        raise TrainingError(f"{option} names no parameters of this model: {', '.join(unknown)}")


def parameter_groups(model: torch.nn.Module, scales: dict[str, float]) -> list[dict[str, Any]]:
    """Adam's parameter groups: the parameters whose names start with a prefix in ``scales``
    learn at that multiple of the learning rate (new parts of a warm-started model can move
    faster than the parts it inherited); the rest at the learning rate itself. The groups come
    in a fixed order, so a resumed optimizer finds its state where it left it."""
    _check_prefixes(model, list(scales), "--lr-scale")
    groups: dict[str, list[torch.nn.Parameter]] = {prefix: [] for prefix in sorted(scales)}
    rest: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        prefix = next((p for p in sorted(scales) if name.startswith(p)), None)
        (groups[prefix] if prefix is not None else rest).append(param)
    out: list[dict[str, Any]] = [{"params": rest, "lr_scale": 1.0}]
    out += [{"params": params, "lr_scale": scales[prefix]} for prefix, params in groups.items()]
    return [group for group in out if group["params"]]


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of images in [0, 1]."""
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def checkpoint_path(output: Path) -> Path:
    return output.with_name(output.name + ".ckpt")


def log_path(output: Path) -> Path:
    return output.with_name(output.name + ".log.jsonl")


def preview_path(output: Path) -> Path:
    return output.with_name(output.name + ".preview.png")


def _make_model(cfg: TrainConfig) -> LatentCodec:
    """A fresh model, or one started from ``cfg.init``: the same architecture fine-tuned (or
    re-strided, or given other rate settings), or a warm start of another architecture from the
    weights that match. The init's transforms keep their shapes and stride unless --stride says
    otherwise (its full config, not the file's, so defaults left out of the file count too)."""
    if not cfg.init:
        return build(cfg.arch, cfg.arch_config)
    base, info = load_model(Path(cfg.init))
    transforms = {k: v for k, v in base.config.items() if k in TRANSFORM_KEYS}
    wanted = cfg.arch_config.get("downsamples")
    if cfg.arch != info.arch:
        if wanted is not None:
            transforms["downsamples"] = wanted
        model = build(cfg.arch, {**cfg.arch_config, **transforms})
        if model.adopt(base, info.card.get("lambda")) == 0:
            raise TrainingError(f"{cfg.init}: a {info.arch} model shares no weights with {cfg.arch}")
        return model
    settings = {k: v for k, v in cfg.arch_config.items() if k not in TRANSFORM_KEYS}
    if settings and any(base.config.get(k) != v for k, v in settings.items()):
        # the same transforms under other settings (a variable-rate model's lambdas): what fits
        model = build(info.arch, {**base.config, **settings})
        taken = model.adopt(base, None)
        log.info("%s: took %d of %d tensors for the new settings", cfg.init, taken, len(model.state_dict()))
    else:
        model = build(info.arch, base.config)
        model.load_state_dict(base.state_dict())
    if wanted is not None and wanted != model.config.get("downsamples", 4):
        if not isinstance(model, FactorizedCodec):
            raise TrainingError(f"{cfg.init}: a {info.arch} model cannot be re-strided")
        model = model.restrided(wanted)
    return model


def freeze(model: torch.nn.Module, prefixes: list[str]) -> int:
    """Leave the parameters whose names start with one of ``prefixes`` as they are (no gradients,
    not in the optimizer): new parts learn around inherited ones first. Returns how many."""
    _check_prefixes(model, prefixes, "--freeze")
    count = 0
    for name, param in model.named_parameters():
        if name.startswith(tuple(prefixes)):
            param.requires_grad_(False)
            count += 1
    return count


def _training_images(cfg: TrainConfig) -> tuple[list[torch.Tensor], list[np.ndarray], dict[str, Any]]:
    """Training tensors, validation images (uint8 HxWx3) and a summary for the model card."""
    if cfg.dataset == "stl10":
        images = train_data.load_stl10(cfg.data[0])
        held = [images[i].permute(1, 2, 0).numpy() for i in range(0, min(len(images), 8 * 97), 97)][:8]
        keep = set(range(0, min(len(images), 8 * 97), 97))
        train_images = [im for i, im in enumerate(images) if i not in keep]
        summary = {"dataset": "stl10", "root": cfg.data[0], "images": len(train_images)}
        return train_images, held, summary
    if cfg.dataset != "folder":
        raise TrainingError(f"unknown dataset kind {cfg.dataset!r} (folder or stl10)")
    paths = train_data.find_images(cfg.data)
    if cfg.val:
        val_paths = train_data.find_images(cfg.val)
    else:
        paths, val_paths = train_data.split_validation(paths)
    images, skipped = train_data.load_images(paths)
    val_images, val_skipped = train_data.load_images(val_paths)
    if not images:
        raise TrainingError(
            f"no readable images in {', '.join(cfg.data)} ({skipped} unreadable files skipped)"
        )
    summary = {
        "dataset": "folder",
        "sources": [str(d) for d in cfg.data],
        "images": len(images),
        "skipped_unreadable": skipped + val_skipped,
        "validation_images": len(val_images),
        "validation_source": [str(v) for v in cfg.val] if cfg.val else "held out automatically",
        "smaller_than_crop": sum(1 for im in images if min(im.shape[1:]) < (cfg.crop or 0)),
    }
    return images, [im.permute(1, 2, 0).numpy() for im in val_images], summary


@torch.inference_mode()
def validate(
    model: LatentCodec, images: list[np.ndarray], device: torch.device
) -> tuple[dict[str, float], Image.Image | None]:
    """Real .aec bytes (header included) and PSNR on the validation images, plus a preview:
    originals above their reconstructions."""
    if not images:
        return {}, None
    was_training = model.training
    model.eval()
    bpps: list[float] = []
    psnrs: list[float] = []
    tops: list[np.ndarray] = []
    bottoms: list[np.ndarray] = []
    for rgb in images:
        rgb = rgb[:768, :768]
        data, _ = pack.encode_with(
            model, "validation", bytes(16), ImageData(np.ascontiguousarray(rgb), None, "RGB"), device=device
        )
        back = pack.decode_with(model, aecformat.unpack(data), device).rgb
        bpps.append(8 * len(data) / (rgb.shape[0] * rgb.shape[1]))
        psnrs.append(psnr(rgb, back))
        if len(tops) < 4:
            side = min(128, rgb.shape[0], rgb.shape[1])
            tops.append(rgb[:side, :side])
            bottoms.append(back[:side, :side])
    model.train(was_training)
    side = min(t.shape[0] for t in tops)
    grid = np.concatenate(
        [
            np.concatenate([t[:side, :side] for t in tops], axis=1),
            np.concatenate([b[:side, :side] for b in bottoms], axis=1),
        ],
        axis=0,
    )
    return {"val_bpp": float(np.mean(bpps)), "val_psnr": float(np.mean(psnrs))}, Image.fromarray(grid)


def _device_for(cfg: TrainConfig, world: int) -> torch.device:
    """The device this process trains on (its own GPU under torchrun), with the fast settings."""
    device = select_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


RESUME_MAY_CHANGE = (
    "output",
    "device",
    "workers",
    "checkpoint_every",
    "log_every",
    "val_every",
    "time_budget",
    "command",
    "steps",
    "compile",
)


def resumed_config(cfg: TrainConfig, state: dict[str, Any]) -> TrainConfig:
    """The saved run's config, with what a resume may change taken from ``cfg``: where it writes
    (-o: the checkpoint was read from there, so a copied state resumes where it was copied), where
    and how often it reports, the schedule's length (``--steps`` moves the decays), the weight average
    (it can start on a resume, never silently stop), and the MS-SSIM blend and the precision when
    given (a state saved where bfloat16 is native resumes in float32 on a CPU without it)."""
    saved = dict(state["config"])
    saved["decay_at"] = tuple(saved["decay_at"])
    keep = set(RESUME_MAY_CHANGE)
    if cfg.ms_ssim_weight is not None:
        keep.add("ms_ssim_weight")  # the distortion may change at a resume (a fine-tune's branch)
    if cfg.precision is not None:
        keep.add("precision")
    if cfg.train_rates is not None:
        keep.add("train_rates")  # a branch may narrow (or widen) the rates it spends its steps on
    merged = TrainConfig(**{**saved, **{k: getattr(cfg, k) for k in keep}})
    merged.ema = cfg.ema or merged.ema
    return merged


def check_config(cfg: TrainConfig) -> None:
    """The rules a config must meet before any work (each a clear TrainingError)."""
    if not 0.0 <= (cfg.ms_ssim_weight or 0.0) <= 1.0:
        raise TrainingError(f"--ms-ssim-weight must be in [0, 1], not {cfg.ms_ssim_weight}")
    if not 0.0 <= cfg.ema < 1.0:
        raise TrainingError(f"--ema must be in [0, 1), not {cfg.ema}")
    if not 0.0 <= cfg.synthetic < 1.0:
        raise TrainingError(f"--synthetic must be in [0, 1), not {cfg.synthetic}")
    if cfg.precision not in ("fp32", "bf16"):
        raise TrainingError(f"unknown precision {cfg.precision!r} (fp32 or bf16)")


def _narrow_rates(model: LatentCodec, rates: tuple[float, float]) -> None:
    """--train-rates set on the model once checked: a variable-rate model's trained positions,
    inside its lambdas (gains past the ends are extrapolated at inference, never trained)."""
    if not isinstance(model, HyperpriorCodec):
        raise TrainingError(f"--train-rates applies to variable-rate models, not {model.arch!r}")
    lo, hi = rates
    if not 0.0 <= lo < hi <= model.levels - 1:
        bound = f"0 <= LO < HI <= {model.levels - 1}"
        raise TrainingError(f"--train-rates must be LO,HI with {bound}, not {lo:g},{hi:g}")
    model.training_positions = (lo, hi)


def compiled(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The training forward through torch.compile: inductor fuses the elementwise work around
    the convolutions (GDN's squares, roots and quotients, the noise, the rate terms), which on a
    CPU is about a third of an eager step (measured: 1.3-1.5x the steps per hour, after a minute
    or two of compiling). Its random draws (the noise, each sample's rate) come from eager's
    generator, so a compiled step is the eager step to float rounding. The checkpoint holds the
    model's own weights, so a run may switch it at any resume. On a CPU inductor writes C++ and
    needs a compiler."""
    if device.type == "cpu" and shutil.which(os.environ.get("CXX", "g++")) is None:
        raise TrainingError("--compile on a CPU needs a C++ compiler (g++, or the one CXX names)")
    import torch._inductor.config as inductor

    inductor.fallback_random = True  # the noise and rates eager steps draw, so runs compare step for step
    return cast(torch.nn.Module, torch.compile(net))


@dataclass
class _Run:
    """Everything one training run holds while it steps."""

    cfg: TrainConfig
    model: LatentCodec
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    average: WeightAverage | None
    device: torch.device
    output: Path
    rank: int
    world: int
    step: int
    elapsed_before: float
    started: float = field(default_factory=time.monotonic)
    last_val: dict[str, float] = field(default_factory=dict)

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def save_checkpoint(self) -> None:
        if self.rank == 0:
            payload = {
                "config": asdict(self.cfg),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                **({"ema": self.average.state} if self.average else {}),
                "step": self.step,
                "elapsed": self.elapsed(),
            }
            atomic_torch_save(payload, checkpoint_path(self.output))

    def validate(self, images: list[np.ndarray], hooks: TrainHooks) -> None:
        if self.rank != 0 or not images:
            return
        metrics, preview = validate(self.average.model() if self.average else self.model, images, self.device)
        self.last_val = {**metrics, "step": self.step}
        if preview is not None:
            buf = io.BytesIO()
            preview.save(buf, "PNG")
            atomic_write(preview_path(self.output), buf.getvalue(), force=True)
        with open(log_path(self.output), "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"validation": True, **self.last_val}) + "\n")
        if hooks.on_val:
            hooks.on_val(self.last_val)


def _start(cfg: TrainConfig, resume: bool, device: torch.device, rank: int, world: int) -> _Run:
    """The model (fresh, warm-started or resumed), its optimizer and weight average."""
    state: dict[str, Any] | None = None
    if resume:
        ckpt_path = checkpoint_path(Path(cfg.output))
        if not ckpt_path.is_file():
            raise TrainingError(f"nothing to resume: {ckpt_path} does not exist")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        cfg = resumed_config(cfg, state)
    cfg.ms_ssim_weight = cfg.ms_ssim_weight or 0.0
    cfg.precision = cfg.precision or "fp32"
    check_config(cfg)
    if cfg.precision == "bf16" and device.type == "cpu" and not native_bf16():
        log.warning("this CPU has no native bfloat16: --precision bf16 emulates it, about 100x slower")
    torch.manual_seed(cfg.seed)
    model = build(cfg.arch, cfg.arch_config) if state else _make_model(cfg)
    cfg.arch, cfg.arch_config = model.arch, dict(model.config)
    if cfg.train_rates is not None:
        _narrow_rates(model, cfg.train_rates)
    cfg.crop = cfg.crop or model.default_crop
    # channels-last activations and weights: oneDNN's and cuDNN's fast layout (a hyperprior step
    # on 2 CPU threads under bfloat16: 0.63 s instead of 0.76 s)
    model.to(device).to(memory_format=torch.channels_last).train()
    frozen = freeze(model, cfg.frozen)
    if frozen == sum(1 for _ in model.parameters()):
        raise TrainingError("--freeze leaves nothing to train")
    if frozen and rank == 0:
        log.info("%d parameter tensors frozen (%s)", frozen, ", ".join(cfg.frozen))
    optimizer = torch.optim.Adam(
        parameter_groups(model, cfg.lr_scales), lr=cfg.lr, weight_decay=model.weight_decay,
        fused=device.type == "cuda",
    )  # fmt: skip
    step, elapsed = 0, 0.0
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
    average = WeightAverage(model, cfg.ema, state.get("ema") if state else None) if cfg.ema else None
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        net = compiled(net, device)
    return _Run(cfg, model, net, optimizer, average, device, Path(cfg.output), rank, world, step, elapsed)


def _progress(run: _Run, hooks: TrainHooks) -> tuple[float, bool]:
    """How far the schedule is (steps or time budget), and whether to stop (agreed by all ranks)."""
    cfg = run.cfg
    progress = run.step / cfg.steps
    if cfg.time_budget:
        progress = max(progress, run.elapsed() / cfg.time_budget)
    stop = progress >= 1.0 or bool(hooks.stop and hooks.stop(run.step))
    if run.world > 1:
        agreed = torch.tensor([progress, float(stop)], device=run.device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        progress, stop = float(agreed[0]), bool(agreed[1] > 0)
    return progress, stop


def _step(run: _Run, batch_u8: torch.Tensor, lr: float) -> dict[str, torch.Tensor] | None:
    """One optimizer step on a batch; None when its gradients were not finite (skipped)."""
    cfg = run.cfg
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    torch.manual_seed((cfg.seed * 1_000_003 + run.step * 7919 + run.rank) % (1 << 62))
    batch = batch_u8.to(run.device, non_blocking=True).float().div_(255.0)
    batch = batch.contiguous(memory_format=torch.channels_last)
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        loss, parts = rd_loss(run.net, batch, cfg.lmbda, run.model.rate_distortion, cfg.ms_ssim_weight or 0.0)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip)
    run.step += 1
    if not torch.isfinite(norm):
        return None
    run.optimizer.step()
    if run.average:
        run.average.update(run.model)
    return parts


def _log(
    run: _Run, sums: dict[str, torch.Tensor], count: int, lr: float, progress: float, hooks: TrainHooks
) -> None:
    """One log line: the means over the ``count`` steps since the last (fewer after a resume)."""
    record: dict[str, Any] = {k: float(v) / max(count, 1) for k, v in sums.items()}
    record.update(
        psnr=round(psnr_from_mse(record["mse"]), 3), step=run.step, lr=lr,
        elapsed=round(run.elapsed(), 1), progress=round(progress, 4),
    )  # fmt: skip
    with open(log_path(run.output), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    if hooks.on_log:
        hooks.on_log(record)


def _finish(run: _Run, dataset: train_data.CropDataset, val_images: list[np.ndarray], summary: dict[str, Any],
            hooks: TrainHooks) -> None:  # fmt: skip
    """Calibrate, checkpoint, validate (unless this step was), and write the model file and card."""
    cfg, model = run.cfg, run.model
    if run.rank == 0:
        model.eval()
        sample = torch.stack([dataset[i] for i in range(64)]).to(run.device).float().div_(255.0)
        model.calibrate(sample)
        model.train()
    run.save_checkpoint()
    if not run.last_val or run.last_val.get("step") != run.step:
        run.validate(val_images, hooks)
    if run.rank != 0:
        return
    model.eval()
    card = {
        "name": cfg.name or run.output.stem, "arch": cfg.arch, "config": cfg.arch_config,
        "lambda": cfg.lmbda if model.rate_distortion else None,
        "loss": loss_formula(model.rate_distortion, cfg.ms_ssim_weight or 0.0),
        "steps": run.step, "batch_size": cfg.batch_size * run.world, "crop": cfg.crop, "data": summary,
        "validation": run.last_val, "train_seconds": round(run.elapsed(), 1),
        "device": f"{run.device} x{run.world}", "init": cfg.init, "weight_average": cfg.ema or None,
        "frozen": cfg.frozen or None, "command": cfg.command,
    }  # fmt: skip
    save_model(run.average.model() if run.average else model, run.output, cfg.name or run.output.stem, card)


def train(cfg: TrainConfig, resume: bool = False, hooks: TrainHooks | None = None) -> Path:
    """Train (or resume) a codec and write the model file at cfg.output; returns its path."""
    hooks = hooks or TrainHooks()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    run = _start(cfg, resume, _device_for(cfg, world), rank, world)
    cfg = run.cfg
    images, val_images, summary = _training_images(cfg)
    summary["world_size"] = world
    dataset = train_data.CropDataset(
        images, cfg.crop or run.model.default_crop, cfg.seed, run.model.input_size, cfg.synthetic
    )
    if cfg.synthetic:
        summary["synthetic"] = cfg.synthetic
    workers = cfg.workers if cfg.workers is not None else (0 if run.device.type == "cpu" else 4)
    loader = DataLoader(
        dataset, batch_size=cfg.batch_size,
        sampler=train_data.IndexRange(run.step, cfg.steps, cfg.batch_size, rank, world),
        num_workers=workers, pin_memory=run.device.type == "cuda", prefetch_factor=4 if workers else None,
    )  # fmt: skip
    if rank == 0:
        log.info("training %s on %d images (%s) on %s x%d", cfg.arch, len(images), summary, run.device, world)
    sums: dict[str, torch.Tensor] = {}
    counted = bad_steps = 0
    for batch_u8 in loader:
        progress, stop = _progress(run, hooks)
        if stop:
            break
        lr = lr_at(cfg, run.step, progress)
        parts = _step(run, batch_u8, lr)
        if parts is None:
            bad_steps += 1
            if bad_steps > 100:
                raise TrainingError("training diverged (non-finite gradients); lower --lr")
            continue
        for k, v in parts.items():
            sums[k] = sums[k] + v if k in sums else v
        counted += 1
        if hooks.on_step and rank == 0:
            hooks.on_step(run.step, progress)
        if run.step % cfg.log_every == 0:
            if rank == 0:
                _log(run, sums, counted, lr, progress, hooks)
            sums, counted = {}, 0
        if run.step % cfg.val_every == 0:
            run.validate(val_images, hooks)
        if run.step % cfg.checkpoint_every == 0:
            run.save_checkpoint()
    _finish(run, dataset, val_images, summary, hooks)
    if world > 1:
        dist.barrier()
    return run.output
