"""Training: real steps on generated images, exact resume, validation, the tutorial model,
STL10's layout, fine-tuning, Ctrl-C, and DistributedDataParallel over two CPU processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from aecompress import codec
from aecompress.cli import app
from aecompress.data import CropDataset, IndexRange, load_stl10, split_validation
from aecompress.errors import TrainingError
from aecompress.imageio import from_pil
from aecompress.metrics import ms_ssim, ms_ssim_batch
from aecompress.modelfile import FULL_PRECISION_UP_TO, load_model, read_info
from aecompress.train import MS_SSIM_SCALE, TrainConfig, TrainHooks, rd_loss, train
from tests.conftest import REPO, photo_like


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "nested"
    folder.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(photo_like(40 + 8 * i, 48, seed=i)).save(folder / f"img{i}.png")
    Image.fromarray(photo_like(20, 24, seed=9)).save(folder / "small.jpg")  # smaller than the crop
    (folder / "broken.png").write_bytes(b"not a png")
    return tmp_path / "data"


def _config(data: Path, out: Path, steps: int, **changes: object) -> TrainConfig:
    cfg = TrainConfig(
        data=[str(data)], output=str(out), arch_config={"channels": 8}, steps=steps, batch_size=2,
        crop=32, warmup=2, checkpoint_every=100, log_every=2, val_every=100, device="cpu", seed=5,
    )  # fmt: skip
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def _as_stored(value: torch.Tensor) -> torch.Tensor:
    """A weight as a model file gives it back: large float tensors through float16."""
    if value.is_floating_point() and value.numel() > FULL_PRECISION_UP_TO:
        return value.half().float()
    return value


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["model"]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread (bit-for-bit resume comparisons), given back after the test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_resumed_training_equals_straight_training(data_dir: Path, tmp_path: Path) -> None:
    straight = train(_config(data_dir, tmp_path / "straight.pt", 8))
    half = _config(data_dir, tmp_path / "halves.pt", 8)
    train(half, hooks=TrainHooks(stop=lambda step: step >= 4))
    assert torch.load(tmp_path / "halves.pt.ckpt", weights_only=True)["step"] == 4
    halves = train(half, resume=True)
    a, b = _weights(Path(f"{straight}.ckpt")), _weights(Path(f"{halves}.ckpt"))
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
    assert read_info(straight).weights_hash == read_info(halves).weights_hash


def test_samples_do_not_depend_on_workers_or_resume_point() -> None:
    images = [torch.from_numpy(photo_like(50, 60, seed=i)).permute(2, 0, 1).contiguous() for i in range(3)]
    ds = CropDataset(images, 16, seed=3)
    assert torch.equal(ds[12345], ds[12345])
    straight = list(IndexRange(0, 6, 4))
    assert list(IndexRange(0, 3, 4)) + list(IndexRange(3, 6, 4)) == straight
    ranks = sorted(list(IndexRange(0, 3, 4, rank=0, world=2)) + list(IndexRange(0, 3, 4, rank=1, world=2)))
    assert ranks == list(range(24))


def test_model_card_validation_preview_and_log(data_dir: Path, tmp_path: Path) -> None:
    out = train(
        _config(data_dir, tmp_path / "mine.pt", 4, val=[str(data_dir / "nested" / "img0.png")], val_every=2)
    )
    info = read_info(out)
    assert info.name == "mine" and info.card["steps"] == 4
    assert info.card["data"]["images"] == 5 and info.card["data"]["skipped_unreadable"] == 1
    assert info.card["data"]["smaller_than_crop"] == 1
    val = info.card["validation"]
    assert val["step"] == 4 and val["val_bpp"] > 0 and val["val_psnr"] > 0
    preview = Image.open(tmp_path / "mine.pt.preview.png")
    assert preview.size == (40, 80)  # one 40x40 crop: original above its reconstruction
    records = [json.loads(line) for line in (tmp_path / "mine.pt.log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "validation" in r] == [2, 4]
    image = from_pil(Image.fromarray(photo_like(20, 20)))
    data = codec.encode(image, model=str(out), device="cpu").data
    assert codec.decode(data, device="cpu", model=str(out)).rgb.shape == (20, 20, 3)


def test_automatic_validation_split() -> None:
    paths = [Path(f"{i:03d}.png") for i in range(100)]
    train_part, held = split_validation(paths)
    assert len(held) == 8 and not set(held) & set(train_part) and len(train_part) == 92
    assert split_validation(paths[:5]) == (paths[:5], [])


def test_no_readable_images_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"nope")
    with pytest.raises(TrainingError, match="no readable images"):
        train(_config(tmp_path, tmp_path / "m.pt", 2))


def test_fine_tuning_starts_from_the_given_model(data_dir: Path, tmp_path: Path, models_dir: Path) -> None:
    out = train(_config(data_dir, tmp_path / "tuned.pt", 2, init=str(models_dir / "default.pt"), lr=1e-9))
    base = read_info(models_dir / "default.pt")
    tuned = read_info(out)
    assert tuned.config == base.config and tuned.card["init"].endswith("default.pt")
    # with a vanishing learning rate the weights stay where the base model left them
    image = from_pil(Image.fromarray(photo_like(32, 32)))
    a = codec.decode(codec.encode(image, model=str(out), device="cpu").data, device="cpu", model=str(out)).rgb
    b = codec.decode(codec.encode(image, device="cpu").data, device="cpu").rgb
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_train_cli_restrides_the_starting_model_and_resumes_at_that_stride(
    data_dir: Path, tmp_path: Path, models_dir: Path
) -> None:
    out = tmp_path / "fine.pt"
    args = ["train", str(data_dir), "-o", str(out), "--init", "default", "--crop", "32", "--batch-size", "2",
            "--device", "cpu", "--checkpoint-every", "1"]  # fmt: skip
    runner = CliRunner()
    first = runner.invoke(app, [*args, "--stride", "8", "--steps", "2"])
    assert first.exit_code == 0, first.output
    info = read_info(out)
    assert (
        info.config["downsamples"] == 3
        and info.config["channels"] == read_info(models_dir / "default.pt").config["channels"]
    )
    image = from_pil(Image.fromarray(photo_like(40, 56)))
    data = codec.encode(image, model=str(out), device="cpu").data
    assert codec.decode(data, device="cpu", model=str(out)).rgb.shape == (40, 56, 3)
    resumed = runner.invoke(app, [*args, "--steps", "3", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert read_info(out).config["downsamples"] == 3 and read_info(out).card["steps"] == 3
    for bad, message in (
        (["--stride", "3"], "must be 2, 4, 8 or 16"),
        (["--arch", "tutorial", "--stride", "8"], "factorized"),
    ):
        result = runner.invoke(app, ["train", str(data_dir), "-o", str(tmp_path / "x.pt"), *bad])
        assert result.exit_code == 1 and message in result.output


def _stl10(root: Path, count: int) -> np.ndarray:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    images = np.stack([photo_like(96, 96, seed=i) for i in range(count)])  # (N, H, W, 3)
    images.transpose(0, 3, 2, 1).astype(np.uint8).tofile(folder / "train_X.bin")  # column-major, as STL10
    return images


def test_stl10_layout_is_read_and_its_absence_is_clear(tmp_path: Path) -> None:
    expected = _stl10(tmp_path / "stl", 3)
    images = load_stl10(str(tmp_path / "stl"))
    assert len(images) == 3
    np.testing.assert_array_equal(images[1].permute(1, 2, 0).numpy(), expected[1])
    with pytest.raises(TrainingError, match="STL10 not found"):
        load_stl10(str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_tutorial_architecture_trains_on_stl10_and_codes_any_image(tmp_path: Path) -> None:
    _stl10(tmp_path / "stl", 20)
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["--quiet", "train", "--arch", "tutorial", "--dataset", "stl10", "--data-root", str(tmp_path / "stl"),
         "-o", str(tmp_path / "tutorial.pt"), "--steps", "2", "--batch-size", "4", "--device", "cpu",
         "--lr", "1e-3", "--val-every", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    info = read_info(tmp_path / "tutorial.pt")
    assert info.arch == "tutorial" and info.card["loss"] == "MSE" and info.card["crop"] == 96
    image = from_pil(Image.fromarray(photo_like(45, 70)))
    data = codec.encode(image, model=str(tmp_path / "tutorial.pt"), device="cpu").data
    back = codec.decode(data, device="cpu", model=str(tmp_path / "tutorial.pt"))
    assert back.rgb.shape == (45, 70, 3)
    missing = runner.invoke(
        app, ["train", "--arch", "tutorial", "--dataset", "stl10", "--data-root", str(tmp_path), "-o", "x.pt"]
    )
    assert missing.exit_code == 1 and "STL10 not found" in missing.stderr


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    args = [sys.executable, "-m", "aecompress", "train", str(data_dir), "-o", str(out), "--channels", "8",
            "--crop", "32", "--batch-size", "2", "--device", "cpu", "--log-every", "1"]  # fmt: skip
    proc = subprocess.Popen([*args, "--steps", "100000"], env=_env(), stderr=subprocess.PIPE, text=True)
    log = tmp_path / "m.pt.log.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    step = torch.load(f"{out}.ckpt", weights_only=True)["step"]
    assert step >= 3 and read_info(out).card["steps"] == step
    resumed = subprocess.run(
        [*args[:-4], "--steps", str(step + 2), "--resume"], env=_env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(f"{out}.ckpt", weights_only=True)["step"] == step + 2


@pytest.mark.slow
def test_distributed_training_on_two_cpu_processes(data_dir: Path, tmp_path: Path) -> None:
    def torchrun(out: Path, steps: int, *extra: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", "29517", "-m", "aecompress", "--quiet", "train", str(data_dir),
               "-o", str(out), "--channels", "8",
               "--crop", "32", "--batch-size", "2", "--steps", str(steps), "--device", "cpu",
               "--checkpoint-every", "2", *extra]  # fmt: skip
        return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)

    first = torchrun(tmp_path / "ddp.pt", 4)
    assert first.returncode == 0, first.stderr[-2000:]
    info = read_info(tmp_path / "ddp.pt")
    assert info.card["data"]["world_size"] == 2 and info.card["batch_size"] == 4
    resumed = torchrun(tmp_path / "ddp.pt", 6, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert torch.load(tmp_path / "ddp.pt.ckpt", weights_only=True)["step"] == 6
    assert not list(tmp_path.glob("*.tmp"))


def test_lr_scales_give_named_parts_their_own_learning_rate_and_resume(
    data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scaled.pt"
    train(_config(data_dir, out, 3, lr_scales={"g_s": 10.0}))
    state = torch.load(str(out) + ".ckpt", map_location="cpu", weights_only=True)
    groups = state["optimizer"]["param_groups"]
    assert [g["lr_scale"] for g in groups] == [1.0, 10.0]
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])
    train(_config(data_dir, out, 5), resume=True)  # the saved groups come back
    assert torch.load(str(out) + ".ckpt", map_location="cpu", weights_only=True)["step"] == 5
    with pytest.raises(TrainingError, match="names no parameters"):
        train(_config(data_dir, tmp_path / "bad.pt", 1, lr_scales={"h_s": 2.0}))


@pytest.mark.usefixtures("one_thread")
def test_weight_average_feeds_the_model_file_resumes_exactly_and_can_start_on_resume(
    data_dir: Path, tmp_path: Path
) -> None:
    straight = tmp_path / "avg.pt"
    train(_config(data_dir, straight, 6, ema=0.5, lr=1e-2))
    state = torch.load(f"{straight}.ckpt", map_location="cpu", weights_only=True)
    raw, avg = state["model"], state["ema"]
    stored, _ = load_model(straight)
    assert set(avg) == {name for name, _ in stored.named_parameters()}
    assert any(not torch.equal(raw[k], avg[k]) for k in avg)  # the average trails the raw weights
    for name, value in stored.state_dict().items():
        want = avg.get(name, raw[name])
        assert torch.equal(value, _as_stored(want)), name
    assert read_info(straight).card["weight_average"] == 0.5

    halves = tmp_path / "halves.pt"
    train(_config(data_dir, halves, 6, ema=0.5, lr=1e-2), hooks=TrainHooks(stop=lambda step: step >= 3))
    train(_config(data_dir, halves, 6), resume=True)  # the saved decay comes back
    resumed = torch.load(f"{halves}.ckpt", map_location="cpu", weights_only=True)["ema"]
    for key, value in avg.items():
        assert torch.equal(value, resumed[key]), key

    late = tmp_path / "late.pt"
    args = ["train", str(data_dir), "-o", str(late), "--crop", "32", "--batch-size", "2", "--channels", "8",
            "--device", "cpu", "--seed", "5"]  # fmt: skip
    runner = CliRunner()
    assert runner.invoke(app, [*args, "--steps", "2"]).exit_code == 0
    assert "ema" not in torch.load(f"{late}.ckpt", map_location="cpu", weights_only=True)
    result = runner.invoke(app, [*args, "--steps", "4", "--resume", "--ema", "0.9"])
    assert result.exit_code == 0, result.output
    late_state = torch.load(f"{late}.ckpt", map_location="cpu", weights_only=True)
    assert late_state["config"]["ema"] == 0.9 and set(late_state["ema"]) <= set(late_state["model"])
    bad = runner.invoke(app, [*args, "--steps", "1", "--ema", "1.5"])
    assert bad.exit_code != 0


def test_checkpoint_script_compacts_expands_and_takes_out_the_averaged_model(
    data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run.pt"
    train(_config(data_dir, out, 3, ema=0.5, lr=1e-2))
    script = [sys.executable, str(REPO / "scripts/checkpoint.py")]
    compact, expanded, snapshot = tmp_path / "c.ckpt", tmp_path / "e.ckpt", tmp_path / "snap.pt"
    for args in (
        ["compact", f"{out}.ckpt", compact],
        ["expand", compact, expanded],
        ["model", expanded, snapshot],
    ):
        subprocess.run([*script, *map(str, args)], check=True, capture_output=True, cwd=REPO)
    full = torch.load(f"{out}.ckpt", map_location="cpu", weights_only=True)
    small = torch.load(compact, map_location="cpu", weights_only=True)
    assert small["step"] == 3
    for name, value in small["ema"].items():  # stored like a model file's weights
        assert value.dtype == (torch.float32 if value.numel() <= FULL_PRECISION_UP_TO else torch.float16), (
            name
        )
    assert compact.stat().st_size < Path(f"{out}.ckpt").stat().st_size
    back = torch.load(expanded, map_location="cpu", weights_only=True)["optimizer"]["state"]
    for key, entry in full["optimizer"]["state"].items():  # Adam's second moment as 8-bit log codes
        packed = small["optimizer"]["state"][key]
        assert set(packed) == {"step", "exp_avg_sq_log8"}
        assert packed["exp_avg_sq_log8"]["codes"].dtype == torch.uint8
        v, restored = entry["exp_avg_sq"], back[key]["exp_avg_sq"]
        assert torch.equal(restored[v == 0], v[v == 0]) and torch.equal(back[key]["step"], entry["step"])
        logs = v[v > 0].log2() if (v > 0).any() else torch.zeros(1)
        # half a code of the tensor's log range, and a few float32 roundings of logs this large
        # (a moment near 2^-44 has a log2 good to about 4e-6: a narrow range's half code is not)
        slack = 4 * torch.finfo(torch.float32).eps * float(logs.abs().max())
        bound = float(torch.exp2((logs.max() - logs.min()) / 254 / 2 + slack)) - 1
        assert ((restored[v > 0] / v[v > 0]) - 1).abs().max() <= bound, key
        assert not back[key]["exp_avg"].any()  # the first moment restarts
    old_form = tmp_path / "old.ckpt"  # the earlier compact form (both moments in bfloat16) expands
    moments = {k: {n: t.to(torch.bfloat16) if n != "step" else t for n, t in e.items()}
               for k, e in full["optimizer"]["state"].items()}  # fmt: skip
    torch.save({**small, "optimizer": {**full["optimizer"], "state": moments}}, old_form)
    subprocess.run([*script, "expand", str(old_form), str(tmp_path / "o.ckpt")], check=True, cwd=REPO)
    again = torch.load(tmp_path / "o.ckpt", map_location="cpu", weights_only=True)["optimizer"]["state"]
    for key, entry in moments.items():
        assert torch.equal(again[key]["exp_avg"], entry["exp_avg"].float())
    model, _ = load_model(snapshot)
    for name, value in model.named_parameters():
        assert torch.equal(value.detach(), _as_stored(full["ema"][name])), name
    renamed = tmp_path / "release.pt"  # a release under a new name: the same weights and hash
    subprocess.run([*script, "model", str(expanded), str(renamed), "run-two"], check=True, cwd=REPO)
    assert read_info(renamed).name == "run-two" and read_info(snapshot).name != "run-two"
    assert read_info(renamed).weights_hash == read_info(snapshot).weights_hash
    shutil.copy(expanded, f"{out}.ckpt")  # a run resumes from the expanded form
    train(_config(data_dir, out, 5), resume=True)
    assert torch.load(f"{out}.ckpt", map_location="cpu", weights_only=True)["step"] == 5


def test_model_files_keep_small_tensors_in_float32_and_large_ones_in_float16(tmp_path: Path) -> None:
    from aecompress.modelfile import save_model
    from aecompress.nn import build

    model = build("factorized", {"channels": 192})  # 192 x 192 GDN matrices: past the float32 limit
    path = save_model(model, tmp_path / "m.pt", "m").path
    assert path is not None
    stored = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    sizes = {v.dtype: 0 for v in stored.values()}
    for value in stored.values():
        if value.is_floating_point():
            want = torch.float32 if value.numel() <= FULL_PRECISION_UP_TO else torch.float16
            assert value.dtype == want
            sizes[value.dtype] += value.numel()
    assert sizes[torch.float16] > 10 * sizes[torch.float32]  # the bulk still takes two bytes a weight


def test_ms_ssim_of_a_batch_matches_each_image_alone_and_trains_where_structure_inverts() -> None:
    rng = np.random.default_rng(3)
    a = np.stack([photo_like(64, 80, seed=s) for s in (1, 2)])
    b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    b[1] = 255 - a[1]  # inverted: negative structure terms
    x = torch.from_numpy(a).permute(0, 3, 1, 2).float()
    y = torch.from_numpy(b).permute(0, 3, 1, 2).float()
    batch = ms_ssim_batch(x, y)
    for i in range(2):
        assert float(batch[i]) == pytest.approx(ms_ssim(a[i], b[i]), abs=1e-6)
    assert 0.5 < float(batch[0]) < 1.0 and float(batch[1]) == 0.0
    y.requires_grad_(True)
    ms_ssim_batch(x, y, floor=1e-4).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()
    assert y.grad[0].abs().sum() > 0 and y.grad[1].abs().sum() == 0  # below the floor: no pull


def test_ms_ssim_blend_is_the_stated_mix_of_the_two_distortions(data_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, _ = load_model(train(_config(data_dir, tmp_path / "m.pt", 1)))
    model.train()
    batch = torch.from_numpy(photo_like(64, 64, seed=4)).permute(2, 0, 1)[None].float() / 255
    losses, parts = {}, {}
    for weight in (0.0, 0.5, 1.0):
        torch.manual_seed(1)  # the same noise draw for each
        losses[weight], parts[weight] = rd_loss(model, batch, 0.01, True, weight)
    bpp = float(parts[0.0]["bpp"])
    mse_term = 0.01 * 255**2 * float(parts[0.0]["mse"])
    ms_term = 0.01 * MS_SSIM_SCALE * (1 - float(parts[1.0]["ms_ssim"]))
    assert float(losses[0.0]) == pytest.approx(mse_term + bpp, rel=1e-5)
    assert float(losses[1.0]) == pytest.approx(ms_term + bpp, rel=1e-5)
    assert float(losses[0.5]) == pytest.approx(0.5 * (mse_term + ms_term) + bpp, rel=1e-5)
    assert mse_term != pytest.approx(ms_term, rel=1e-2)  # the two differ, so the mix is seen


def test_train_cli_ms_ssim_weight_reaches_the_card_and_can_change_at_resume(
    data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "blend.pt"
    args = ["train", str(data_dir), "-o", str(out), "--crop", "32", "--batch-size", "2", "--channels", "8",
            "--device", "cpu", "--seed", "5", "--log-every", "1"]  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--steps", "2", "--ms-ssim-weight", "0.3"])
    assert result.exit_code == 0, result.output
    assert "0.3 * 2000 * (1 - MS-SSIM)" in read_info(out).card["loss"]
    logged = [json.loads(line) for line in Path(f"{out}.log.jsonl").read_text().splitlines()]
    assert all(0 < r["ms_ssim"] < 1 for r in logged if "validation" not in r)
    assert runner.invoke(app, [*args, "--steps", "3", "--resume"]).exit_code == 0  # the saved blend
    assert torch.load(f"{out}.ckpt", weights_only=True)["config"]["ms_ssim_weight"] == 0.3
    assert runner.invoke(app, [*args, "--steps", "4", "--resume", "--ms-ssim-weight", "0"]).exit_code == 0
    assert torch.load(f"{out}.ckpt", weights_only=True)["config"]["ms_ssim_weight"] == 0.0
    assert read_info(out).card["loss"] == "lambda * 255^2 * MSE + bpp"
    bad = runner.invoke(app, [*args, "--steps", "1", "--ms-ssim-weight", "1.5"])
    assert bad.exit_code == 2 and "ms-ssim-weight" in bad.output


def test_the_command_lines_defaults_are_the_configs() -> None:
    """``aecompress train`` only maps flags onto TrainConfig: where both have a default, it is one
    (a left-out --arch means the --init model's architecture: ``make_config`` decides that)."""
    import dataclasses

    import typer

    from aecompress.cli import app
    from aecompress.train import TrainConfig

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    fields = dataclasses.fields(TrainConfig)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    shared = {p.name: p.default for p in command.params if p.name in defaults and p.name != "arch"}
    expected = {"steps", "batch_size", "lr", "lmbda", "seed", "checkpoint_every", "log_every", "val_every"}
    assert expected <= set(shared)
    for name, value in shared.items():
        assert value == defaults[name], (name, value, defaults[name])


def test_training_rules_refuse_what_does_not_apply(tmp_path: Path) -> None:
    from aecompress.train import make_config

    with pytest.raises(TrainingError, match="--output"):
        make_config(data=[str(tmp_path)], output="")
    with pytest.raises(TrainingError, match="--stride"):
        make_config(data=[str(tmp_path)], output="m.pt", arch="tutorial", stride=8)
    with pytest.raises(TrainingError, match="variable-rate"):
        make_config(data=[str(tmp_path)], output="m.pt", arch="factorized", lambdas=[0.01, 0.1])
    cfg = make_config(data=[str(tmp_path)], output="m.pt", arch="context", stride=8, lambdas=[0.01, 0.1])
    assert cfg.arch_config == {"channels": 128, "act": "gdn", "downsamples": 3, "lambdas": [0.01, 0.1]}


def test_a_copied_checkpoint_resumes_where_it_was_copied(data_dir: Path, tmp_path: Path) -> None:
    """-o names the run on a resume: the state is read from OUTPUT.ckpt, and the checkpoint, log
    and model are written there too, never back to the path the run started at."""
    first = tmp_path / "a" / "m.pt"
    first.parent.mkdir()
    train(_config(data_dir, first, 2))
    before = first.with_name("m.pt.ckpt").read_bytes()
    moved = tmp_path / "b" / "m.pt"
    moved.parent.mkdir()
    shutil.copy(first.with_name("m.pt.ckpt"), moved.with_name("m.pt.ckpt"))
    train(_config(data_dir, moved, 3), resume=True)
    assert torch.load(moved.with_name("m.pt.ckpt"), weights_only=True)["step"] == 3 and moved.is_file()
    assert first.with_name("m.pt.ckpt").read_bytes() == before


def test_bf16_training_on_a_cpu_without_native_bfloat16_warns(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """There it is emulated, about a hundred times slower (measured on an AVX2 EPYC): say so."""
    import aecompress.train as train_module

    monkeypatch.setattr(train_module, "native_bf16", lambda: False)  # as on an AVX2-only CPU
    with caplog.at_level("WARNING", logger="aecompress"):
        train(_config(data_dir, tmp_path / "m.pt", 1, precision="bf16"))
    assert any("no native bfloat16" in r.getMessage() for r in caplog.records)


def test_a_resume_keeps_the_saved_precision_unless_told(data_dir: Path, tmp_path: Path) -> None:
    """A state saved where bfloat16 is native must resume in float32 on a CPU that emulates it."""
    out = tmp_path / "m.pt"
    train(_config(data_dir, out, 1, precision="bf16"))
    train(_config(data_dir, out, 2), resume=True)
    assert torch.load(f"{out}.ckpt", weights_only=True)["config"]["precision"] == "bf16"
    train(_config(data_dir, out, 3, precision="fp32"), resume=True)
    saved = torch.load(f"{out}.ckpt", weights_only=True)
    assert saved["config"]["precision"] == "fp32" and saved["step"] == 3
    train(_config(data_dir, tmp_path / "fresh.pt", 1))
    assert torch.load(tmp_path / "fresh.pt.ckpt", weights_only=True)["config"]["precision"] == "fp32"


def test_train_rates_spend_the_steps_on_the_rates_asked_for_and_can_change_at_resume(
    data_dir: Path, tmp_path: Path
) -> None:
    """--train-rates narrows the rate positions a step samples: the same seed's first step weighs
    its distortion by the top lambdas, many times the bottom ones; the range is saved, kept at a
    resume unless given, and checked against the model's lambdas."""
    from aecompress.nn.registry import build

    model = build("hyperprior", {"channels": 8, "hyper_channels": 8, "hyper_latent_channels": 8})
    model.training_positions = (2.0, 3.5)
    drawn = model.sample_positions(4000, torch.device("cpu"))
    assert 2.0 <= float(drawn.min()) < 2.05 and 3.45 < float(drawn.max()) <= 3.5
    model.training_positions = None
    assert float(model.sample_positions(4000, torch.device("cpu")).max()) > model.levels - 1.05

    def first_weighted_distortion(rates: tuple[float, float], name: str) -> float:
        out = tmp_path / name
        cfg = _config(data_dir, out, 2, arch="hyperprior", train_rates=rates, log_every=1)
        cfg.arch_config = {"channels": 8, "hyper_channels": 8, "hyper_latent_channels": 8}
        train(cfg)
        logged = [json.loads(line) for line in Path(f"{out}.log.jsonl").read_text().splitlines()]
        return float(logged[0]["loss"]) - float(logged[0]["bpp"])  # lambda * D, the same D

    low = first_weighted_distortion((0.0, 0.5), "low.pt")
    high = first_weighted_distortion((4.5, 5.0), "high.pt")
    assert high > 20 * low > 0
    assert torch.load(tmp_path / "high.pt.ckpt", weights_only=True)["config"]["train_rates"] == (4.5, 5.0)
    args = ["train", str(data_dir), "-o", str(tmp_path / "high.pt"), "--resume", "--device", "cpu"]
    runner = CliRunner()
    assert runner.invoke(app, [*args, "--steps", "3"]).exit_code == 0
    assert torch.load(tmp_path / "high.pt.ckpt", weights_only=True)["config"]["train_rates"] == (4.5, 5.0)
    assert runner.invoke(app, [*args, "--steps", "4", "--train-rates", "1,2"]).exit_code == 0
    assert torch.load(tmp_path / "high.pt.ckpt", weights_only=True)["config"]["train_rates"] == (1.0, 2.0)
    for bad in ("3,9", "2,1", "1", "a,b"):
        result = runner.invoke(app, [*args, "--steps", "5", "--train-rates", bad])
        assert result.exit_code == 1 and "--train-rates" in result.output, (bad, result.output)
    factorized = ["train", str(data_dir), "-o", str(tmp_path / "f.pt"), "--channels", "8", "--crop", "32",
                  "--steps", "1", "--device", "cpu", "--train-rates", "0,1"]  # fmt: skip
    result = runner.invoke(app, factorized)
    assert result.exit_code == 1 and "variable-rate" in result.output


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_compiled_training_step_learns_what_the_eager_one_does_and_resumes_either_way(
    data_dir: Path, tmp_path: Path
) -> None:
    """--compile runs the step through torch.compile: the same losses as eager steps to float
    rounding, a checkpoint of the model's own weights (no wrapper's names), and a resume that
    may drop or take up compiling."""
    eager, compiled = tmp_path / "eager.pt", tmp_path / "compiled.pt"
    train(_config(data_dir, eager, 3, log_every=1))
    train(_config(data_dir, compiled, 3, log_every=1, compile=True))

    def losses(out: Path) -> list[float]:
        lines = Path(f"{out}.log.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines if "validation" not in line]

    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-3)
    saved = torch.load(f"{compiled}.ckpt", weights_only=True)
    assert saved["model"].keys() == _weights(Path(f"{eager}.ckpt")).keys() and saved["config"]["compile"]
    train(_config(data_dir, compiled, 4), resume=True)
    assert not torch.load(f"{compiled}.ckpt", weights_only=True)["config"]["compile"]
    train(_config(data_dir, compiled, 5, compile=True), resume=True)
    assert torch.load(f"{compiled}.ckpt", weights_only=True)["step"] == 5


def test_compiling_on_a_cpu_without_a_compiler_is_a_clear_error(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(TrainingError, match="C\\+\\+ compiler"):
        train(_config(data_dir, tmp_path / "m.pt", 1, compile=True))
