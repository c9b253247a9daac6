"""Training: a few real steps on generated images, resume equivalence, a usable model file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from aecompress import codec
from aecompress.imageio import from_pil
from aecompress.modelfile import read_info
from aecompress.train import TrainConfig, train
from tests.conftest import photo_like


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "nested"
    folder.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(photo_like(40 + 8 * i, 48, seed=i)).save(folder / f"img{i}.png")
    Image.fromarray(photo_like(20, 24, seed=9)).save(folder / "small.jpg")  # smaller than the crop
    (folder / "broken.png").write_bytes(b"not a png")
    return tmp_path / "data"


def _config(data: Path, out: Path, steps: int) -> TrainConfig:
    return TrainConfig(
        data=[str(data)], output=str(out), arch_config={"channels": 8}, steps=steps, batch_size=2,
        crop=32, warmup=2, checkpoint_every=100, log_every=2, device="cpu", seed=5,
    )  # fmt: skip


def test_resumed_training_equals_straight_training(data_dir: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    straight = train(_config(data_dir, tmp_path / "straight.pt", 8))
    half = _config(data_dir, tmp_path / "halves.pt", 8)
    train(half, stop=lambda step: step >= 4)
    halves = train(half, resume=True)
    a = torch.load(straight.with_name("straight.pt.ckpt"), weights_only=True)
    b = torch.load(halves.with_name("halves.pt.ckpt"), weights_only=True)
    assert a["step"] == b["step"] == 8
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert read_info(straight).weights_hash == read_info(halves).weights_hash


def test_trained_model_is_ready_to_encode(data_dir: Path, tmp_path: Path) -> None:
    out = train(_config(data_dir, tmp_path / "mine.pt", 3))
    info = read_info(out)
    assert info.name == "mine" and info.card["steps"] == 3 and info.card["train_images"] == 5
    image = from_pil(Image.fromarray(photo_like(20, 20)))
    data = codec.encode(image, model=str(out), device="cpu").data
    assert codec.decode(data, device="cpu", model=str(out)).rgb.shape == (20, 20, 3)
    log_lines = (tmp_path / "mine.pt.log.jsonl").read_text().splitlines()
    assert len(log_lines) == 1 and "bpp" in log_lines[0]
