"""aecompress bench on a few small images: table, JSON, BD-rates and the plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from aecompress.bench import ms_ssim_db
from aecompress.cli import app
from aecompress.evaluate import bd_rate
from tests.conftest import photo_like


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for i in range(2):
        Image.fromarray(photo_like(48, 64, seed=i)).save(tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_bench_json_table_and_plot(folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["bench", str(folder), "--codecs", "aec,jpeg,webp", "-q", "20,50,75,95"]
    result = runner.invoke(app, [*args, "--json", "--plot", str(tmp_path / "rd.png")])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["images"] == 2
    assert [p["setting"] for p in data["points"]["aec"]] == [20, 50, 75, 95]
    bpps = [p["bpp"] for p in data["points"]["aec"]]
    assert bpps == sorted(bpps)
    assert data["bd_rate_vs_jpeg_psnr"]["jpeg"] == 0.0
    assert isinstance(data["bd_rate_vs_jpeg_psnr"]["webp"], float)
    assert Image.open(tmp_path / "rd.png").size == (900, 600)
    text = runner.invoke(app, args)
    assert text.exit_code == 0 and "BD-rate against JPEG" in text.stdout and "| webp" in text.stdout


def test_bench_rejects_unknown_codecs_and_empty_folders(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["bench", str(tmp_path), "--codecs", "gif"])
    assert bad.exit_code == 1 and "unknown codec" in bad.stderr
    empty = runner.invoke(app, ["bench", str(tmp_path), "--codecs", "jpeg"])
    assert empty.exit_code == 1 and "no images" in empty.stderr


def test_bd_rate_of_a_scaled_curve() -> None:
    ref = [(0.25, 27.0), (0.5, 29.5), (1.0, 32.0), (2.0, 34.0)]
    half = [(b / 2, q) for b, q in ref]
    assert bd_rate(ref, half) == pytest.approx(-50.0, abs=0.01)
    assert bd_rate(ref, ref) == pytest.approx(0.0, abs=1e-9)
    assert ms_ssim_db(0.99) == pytest.approx(20.0)
