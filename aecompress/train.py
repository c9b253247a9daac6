"""The training loop: rate-distortion training of a codec on a folder of images, resumable.

Loss = lambda * 255^2 * MSE + bits per pixel, with additive uniform noise standing in for rounding.
A checkpoint (weights, optimizer, step, RNG state) is written every ``checkpoint_every`` steps
beside the output, and the output itself is always a ready-to-use model file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aecompress.device import select_device
from aecompress.errors import ImageError, TrainingError
from aecompress.imageio import read_image
from aecompress.modelfile import load_model, save_model
from aecompress.nn import LatentCodec, build

log = logging.getLogger("aecompress")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".ppm", ".pgm", ".pnm"}


@dataclass
class TrainConfig:
    data: list[str]
    output: str
    arch: str = "factorized"
    arch_config: dict[str, Any] = field(default_factory=dict)
    steps: int = 100_000
    batch_size: int = 8
    crop: int = 256
    lr: float = 5e-4
    warmup: int = 100
    decay_at: tuple[float, float] = (0.78, 0.93)
    lmbda: float = 0.01
    clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 1000
    log_every: int = 100
    time_budget: float | None = None
    init: str | None = None
    name: str | None = None
    command: str = ""


def find_images(roots: list[str]) -> list[Path]:
    """Every file with an image extension under the given folders (recursive), sorted."""
    found: list[Path] = []
    for root in roots:
        p = Path(root)
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found += [f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
        else:
            raise TrainingError(f"training data not found: {root}")
    return sorted(found)


def load_images(paths: list[Path]) -> tuple[list[torch.Tensor], int]:
    """Decode images into uint8 (3, H, W) tensors; unreadable files are skipped and counted."""
    images: list[torch.Tensor] = []
    skipped = 0
    for path in paths:
        try:
            img = read_image(path)
        except ImageError as exc:
            log.warning("skipping %s", exc)
            skipped += 1
            continue
        images.append(torch.from_numpy(img.rgb).permute(2, 0, 1).contiguous())
    if not images:
        raise TrainingError("no readable images in the training data")
    return images, skipped


def random_crop(image: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """A size x size crop with a random flip; images smaller than the crop are reflect-padded."""
    _, h, w = image.shape
    if h < size or w < size:
        pad_h, pad_w = max(0, size - h), max(0, size - w)
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        image = F.pad(image[None].float(), (0, pad_w, 0, pad_h), mode=mode)[0]
        _, h, w = image.shape
    top = int(torch.randint(0, h - size + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - size + 1, (1,), generator=gen))
    crop = image[:, top : top + size, left : left + size]
    if bool(torch.randint(0, 2, (1,), generator=gen)):
        crop = crop.flip(2)
    if bool(torch.randint(0, 2, (1,), generator=gen)):
        crop = crop.flip(1)
    return crop


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
    model: LatentCodec, batch: torch.Tensor, lmbda: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Rate-distortion loss of a batch in [0, 1], with its parts (detached tensors, for logs)."""
    x_hat, bits = model(batch)
    mse = F.mse_loss(x_hat, batch)
    bpp = bits / (batch.shape[0] * batch.shape[2] * batch.shape[3])
    loss = lmbda * 255.0**2 * mse + bpp
    return loss, {"loss": loss.detach(), "bpp": bpp.detach(), "mse": mse.detach()}


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of images in [0, 1]."""
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def _checkpoint_path(output: Path) -> Path:
    return output.with_name(output.name + ".ckpt")


def _log_path(output: Path) -> Path:
    return output.with_name(output.name + ".log.jsonl")


def _make_model(cfg: TrainConfig) -> LatentCodec:
    if cfg.init:
        base, info = load_model(Path(cfg.init))
        model = build(info.arch, info.config)
        model.load_state_dict(base.state_dict())
        return model
    return build(cfg.arch, cfg.arch_config)


def train(
    cfg: TrainConfig,
    resume: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    stop: Callable[[int], bool] | None = None,
) -> Path:
    """Train (or resume) a codec and write the model file at cfg.output; returns its path.

    ``stop(step)`` is asked after every step (a signal handler sets it on Ctrl-C): when it says
    yes, the checkpoint and the model are written and training returns, ready for ``resume``.
    """
    output = Path(cfg.output)
    ckpt_path = _checkpoint_path(output)
    device = select_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    state: dict[str, Any] | None = None
    if resume:
        if not ckpt_path.is_file():
            raise TrainingError(f"nothing to resume: {ckpt_path} does not exist")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        saved = dict(state["config"])
        saved["decay_at"] = tuple(saved["decay_at"])
        keep = {"device", "checkpoint_every", "log_every", "time_budget", "command", "steps"}
        cfg = TrainConfig(**{**saved, **{k: getattr(cfg, k) for k in keep}})

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = build(cfg.arch, cfg.arch_config) if state else _make_model(cfg)
    cfg.arch, cfg.arch_config = model.arch, dict(model.config)
    model.to(device).train()
    fused = device.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=fused)

    paths = find_images(cfg.data)
    images, skipped = load_images(paths)
    if device.type == "cuda":
        images = [im.to(device) for im in images]
    log.info("training on %d images (%d skipped) on %s", len(images), skipped, device)

    step, elapsed_before = 0, 0.0
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed_before = int(state["step"]), float(state["elapsed"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)

    def save_checkpoint() -> None:
        payload = {
            "config": asdict(cfg),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "elapsed": elapsed_before + time.monotonic() - start,
            "gen": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }
        tmp = ckpt_path.with_name(ckpt_path.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, ckpt_path)

    start = time.monotonic()
    logf = open(_log_path(output), "a", encoding="utf-8")  # noqa: SIM115 (closed in finally)
    sums: dict[str, torch.Tensor] = {}
    skipped_steps = 0
    try:
        while True:
            elapsed = elapsed_before + time.monotonic() - start
            progress = step / cfg.steps
            if cfg.time_budget:
                progress = max(progress, elapsed / cfg.time_budget)
            if progress >= 1.0:
                break
            lr = lr_at(cfg, step, progress)
            for group in optimizer.param_groups:
                group["lr"] = lr
            crops = [
                random_crop(images[int(torch.randint(0, len(images), (1,), generator=gen))], cfg.crop, gen)
                for _ in range(cfg.batch_size)
            ]
            batch = torch.stack(crops).to(device, non_blocking=True).float().div_(255.0)
            loss, parts = rd_loss(model, batch, cfg.lmbda)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            if not torch.isfinite(norm):
                skipped_steps += 1
                if skipped_steps > 100:
                    raise TrainingError("training diverged (non-finite gradients); lower --lr")
                continue
            optimizer.step()
            step += 1
            for k, v in parts.items():
                sums[k] = sums[k] + v if k in sums else v
            if step % cfg.log_every == 0:
                record: dict[str, Any] = {k: float(v) / cfg.log_every for k, v in sums.items()}
                record["psnr"] = round(psnr_from_mse(record["mse"]), 3)
                record.update(step=step, lr=lr, elapsed=round(elapsed, 1), progress=round(progress, 4))
                logf.write(json.dumps(record) + "\n")
                logf.flush()
                sums = {}
                if on_log:
                    on_log(record)
            if step % cfg.checkpoint_every == 0:
                save_checkpoint()
            if stop is not None and stop(step):
                log.info("stopping at step %d; resume with --resume", step)
                break
        save_checkpoint()
    finally:
        logf.close()
    card = {
        "name": cfg.name or output.stem,
        "arch": cfg.arch,
        "config": cfg.arch_config,
        "lambda": cfg.lmbda,
        "steps": step,
        "batch_size": cfg.batch_size,
        "crop": cfg.crop,
        "train_images": len(images),
        "train_data": [str(d) for d in cfg.data],
        "train_seconds": round(elapsed_before + time.monotonic() - start, 1),
        "device": str(device),
        "command": cfg.command,
    }
    model.eval()
    save_model(model, output, cfg.name or output.stem, card)
    return output


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (for scripts that build their own data)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
