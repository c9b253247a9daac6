"""Encoder-side refinement (--effort): better pixels at about the same size; any decoder restores it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from aecompress import codec
from aecompress import format as aecformat
from aecompress.cli import app
from aecompress.imageio import from_pil, read_image
from aecompress.metrics import psnr
from aecompress.modelfile import load_model
from aecompress.refine import refine
from tests.conftest import FACTORIZED, REPO, photo_like

needs_model = pytest.mark.skipif(not FACTORIZED.is_file(), reason="bundled model missing")


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    return read_image(REPO / "samples" / "parrots.png").rgb[160:352, 256:512].copy()


@needs_model
def test_refinement_gains_psnr_at_about_the_same_size(crop: np.ndarray) -> None:
    torch.manual_seed(0)
    image = from_pil(Image.fromarray(crop))
    plain = codec.encode(image, FACTORIZED, 90, "cpu")
    better = codec.encode(image, FACTORIZED, 90, "cpu", effort=20)
    gain = psnr(crop, codec.decode(better.data, "cpu", FACTORIZED).rgb) - psnr(
        crop, codec.decode(plain.data, "cpu", FACTORIZED).rgb
    )
    assert gain > 0.15
    assert len(better.data) < 1.04 * len(plain.data)
    assert better.header.step == plain.header.step and better.header.model_hash == plain.header.model_hash


@needs_model
def test_tiled_refinement_moves_only_latents_and_never_loses(crop: np.ndarray) -> None:
    net, _ = load_model(FACTORIZED)
    device = torch.device("cpu")
    latents = codec.analyse(net, crop, device)
    step = codec.quality_to_step(60)

    def error(y: torch.Tensor) -> float:
        decoded = codec.synthesize(net, torch.round(y / step) * step, crop.shape[:2], device)
        return float(np.mean((decoded.astype(float) - crop) ** 2))

    whole = refine(net, latents, crop, step, 4, device)
    tiled = refine(net, latents, crop, step, 4, device, tile=5)
    assert whole.shape == tiled.shape == latents.shape
    assert error(whole) < error(latents) and error(tiled) < error(latents)
    assert refine(net, latents, crop, step, 0, device) is latents


@needs_model
def test_target_bpp_with_effort_stays_under_the_target(crop: np.ndarray) -> None:
    image = from_pil(Image.fromarray(crop))
    result = codec.encode_to_size(image, 0.5, FACTORIZED, "cpu", effort=3)
    assert 0.45 <= 8 * len(result.data) / (image.width * image.height) <= 0.5


def test_cli_effort_writes_a_file_any_decoder_restores(tmp_path: Path) -> None:
    src = tmp_path / "img.png"
    Image.fromarray(photo_like(40, 72, seed=2)).save(src)
    runner = CliRunner()
    result = runner.invoke(app, ["encode", str(src), "-o", str(tmp_path / "a.aec"), "-e", "3"])
    assert result.exit_code == 0, result.output
    header = aecformat.unpack((tmp_path / "a.aec").read_bytes()).header
    assert (header.width, header.height) == (72, 40)
    back = runner.invoke(app, ["decode", str(tmp_path / "a.aec"), "-o", str(tmp_path / "a.png")])
    assert back.exit_code == 0, back.output
    assert Image.open(tmp_path / "a.png").size == (72, 40)
    bad = runner.invoke(app, ["encode", str(src), "-o", str(tmp_path / "b.aec"), "--effort", "-1"])
    assert bad.exit_code == 2 and not (tmp_path / "b.aec").exists()
