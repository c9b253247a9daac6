"""Generated training images (screens, slides, comics, patterns) and their share of the crops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from aecompress import synthetic
from aecompress.cli import app
from aecompress.data import CropDataset
from aecompress.errors import TrainingError
from aecompress.modelfile import read_info
from tests.conftest import REPO, photo_like


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_each_kind_is_a_pure_function_of_its_seed_and_size(kind: str) -> None:
    a = synthetic.render(kind, 7, 96, 64)
    assert a.shape == (64, 96, 3) and a.dtype == np.uint8
    assert np.array_equal(a, synthetic.render(kind, 7, 96, 64))
    assert not np.array_equal(a, synthetic.render(kind, 8, 96, 64))
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 1


@pytest.mark.parametrize("kind", ["screen", "comic"])
def test_screens_and_comics_are_flat_fills(kind: str) -> None:
    """A few colours cover most of the picture, as in the images photos do not teach."""
    for seed in range(5):
        _, counts = np.unique(synthetic.render(kind, seed, 96, 64).reshape(-1, 3), axis=0, return_counts=True)
        assert np.sort(counts)[::-1][:8].sum() > 0.6 * counts.sum()


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        synthetic.render("landscape", 0, 16, 16)


def test_render_any_covers_every_kind() -> None:
    by_kind = {
        kind: [
            s
            for s in range(40)
            if np.array_equal(synthetic.render_any(s, 32, 32), synthetic.render(kind, s, 32, 32))
        ]
        for kind in synthetic.KINDS
    }
    assert all(by_kind.values()) and sum(map(len, by_kind.values())) == 40


def _flat_images() -> list[torch.Tensor]:
    """One training image of a single grey: any crop that is not that grey was generated."""
    return [torch.full((3, 48, 48), 128, dtype=torch.uint8)]


def test_without_a_share_every_crop_comes_from_the_training_images() -> None:
    photos = [torch.from_numpy(photo_like(40, 40, seed=i)).permute(2, 0, 1).contiguous() for i in range(2)]
    plain, zero = CropDataset(photos, 16, seed=3), CropDataset(photos, 16, seed=3, synthetic=0.0)
    for i in range(30):
        assert torch.equal(plain[i], zero[i])
    flat = CropDataset(_flat_images(), 16, seed=3)
    assert all(bool((flat[i] == 128).all()) for i in range(30))


def test_a_share_mixes_generated_crops_in_deterministically() -> None:
    ds = CropDataset(_flat_images(), 24, seed=3, synthetic=0.5)
    generated = [i for i in range(200) if not bool((ds[i] == 128).all())]
    assert 70 < len(generated) < 130  # about half
    assert all(ds[i].shape == (3, 24, 24) and ds[i].dtype == torch.uint8 for i in generated[:5])
    assert torch.equal(ds[generated[0]], ds[generated[0]])
    assert torch.equal(ds[generated[0]], CropDataset(_flat_images(), 24, seed=3, synthetic=0.5)[generated[0]])
    with pytest.raises(TrainingError, match="--synthetic"):
        CropDataset(_flat_images(), 24, seed=3, synthetic=1.0)


def test_train_cli_takes_a_synthetic_share_and_records_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.fromarray(photo_like(40, 48, seed=i)).save(data / f"img{i}.png")
    out = tmp_path / "mixed.pt"
    args = ["train", str(data), "-o", str(out), "--crop", "32", "--batch-size", "4", "--channels", "8",
            "--device", "cpu", "--seed", "5", "--log-every", "1", "--steps", "2"]  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--synthetic", "0.5"])
    assert result.exit_code == 0, result.output
    card = read_info(out).card
    assert card["data"]["synthetic"] == 0.5
    assert json.loads(Path(f"{out}.log.jsonl").read_text().splitlines()[-1])["step"] == 2
    assert torch.load(f"{out}.ckpt", weights_only=True)["config"]["synthetic"] == 0.5
    bad = runner.invoke(app, [*args, "--synthetic", "0.95"])
    assert bad.exit_code == 2 and "synthetic" in bad.output


def test_the_held_out_set_script_writes_each_kind(tmp_path: Path) -> None:
    out = tmp_path / "set"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/synthetic_set.py"), str(out), "--per-kind", "2",
         "--size", "48x32", "--first-seed", "5"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "wrote 8 images" in proc.stdout
    for kind in synthetic.KINDS:
        for i in range(2):
            written = np.asarray(Image.open(out / f"{kind}{i}.png"))
            assert np.array_equal(written, synthetic.render(kind, 5 + i, 48, 32))
