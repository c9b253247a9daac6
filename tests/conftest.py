"""Shared fixtures: small real models (random weights, saved as real model files) and images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aecompress.modelfile import save_model
from aecompress.nn import build

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
FACTORIZED = REPO / "models" / "factorized.pt"  # the first bundled codec (a factorized prior)
DEFAULT_FAMILY = REPO / "models" / "default.family.json"  # the default codec
FUZZ_REPORTS: list[str] = []  # filled by tests/test_hostile.py, printed in the session summary


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in FUZZ_REPORTS:
        terminalreporter.write_line(f"fuzz: {line}")


def make_model(path: Path, name: str, channels: int = 8, seed: int = 0) -> Path:
    """A tiny factorized codec with seeded random weights, written as a real model file."""
    torch.manual_seed(seed)
    model = build("factorized", {"channels": channels, "latent_channels": 100})
    save_model(model, path, name, {"note": "test model"})
    return path


def tiny_hyperprior(seed: int = 0) -> torch.nn.Module:
    """A tiny hyperprior with seeded random weights, pushed so its scale classes spread out."""
    torch.manual_seed(seed)
    model = build("hyperprior", {"channels": 8, "hyper_channels": 8, "hyper_latent_channels": 8})
    with torch.no_grad():  # a trained h_s spreads the scales; random weights need a push to
        for p in model.h_s.parameters():
            p.mul_(6.0)
        steps = torch.linspace(0.0, 4.0, model.levels)[:, None]  # gains rise with the rate
        model.log_gain.copy_(steps.expand_as(model.log_gain))
        model.log_igain.copy_(-model.log_gain)
    return model.eval()


def tiny_context(seed: int = 0) -> torch.nn.Module:
    """A tiny context model warm-started from ``tiny_hyperprior``, with its means and slice
    contexts pushed away from zero so that all of them matter."""
    config = {"channels": 8, "hyper_channels": 8, "hyper_latent_channels": 8, "context_channels": 8}
    model = build("context", config)
    model.adopt(tiny_hyperprior(), None)
    torch.manual_seed(seed)
    with torch.no_grad():
        model.h_s[4].weight[100:].normal_(0, 0.05)  # means from the hyper-latents
        for net in model.context:
            net[-1].weight.normal_(0, 0.02)  # corrections from the slices before
    return model.eval()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    make_model(folder / "default.pt", "default")
    make_model(folder / "other.pt", "other", seed=1)
    save_model(tiny_hyperprior(), folder / "hyper.pt", "hyper", {"note": "test model"})
    save_model(tiny_context(), folder / "ctx.pt", "ctx", {"note": "test model"})
    return folder


@pytest.fixture(autouse=True)
def _user_models(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the user models folder at the tiny test models (so 'default' is the tiny one)."""
    monkeypatch.setenv("AECOMPRESS_MODELS", str(models_dir))


def photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth synthetic RGB image with edges: gradients plus a few shapes and mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack(
        [
            128 + 100 * np.sin(xx / max(width, 1) * 3 + seed),
            128 + 100 * np.cos(yy / max(height, 1) * 2),
            (xx + yy) / max(height + width, 1) * 255,
        ],
        axis=-1,
    )
    cy, cx = height / 2, width / 2
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 < (min(height, width) / 4) ** 2
    img[disk] = [230, 40, 60]
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)
