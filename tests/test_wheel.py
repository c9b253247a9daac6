"""What a user who installs the wheel gets: the bundled codecs inside it, and a default codec that
encodes and decodes from any folder, with nothing of the checkout on the path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aecompress.metrics import psnr
from tests.conftest import REPO, photo_like

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel a release would publish, built offline from this checkout."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("aecompress-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed into a folder of its own (its dependencies come from this Python)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [*PIP, "install", "--no-deps", "--no-index", "--no-compile", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    return target


def _run(args: list[str], cwd: Path, pythonpath: Path, user_models: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "AECOMPRESS_MODELS": str(user_models)}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_every_model_a_bundled_family_names_is_in_the_wheel(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    families = sorted(n for n in names if n.startswith("aecompress/models/") and n.endswith(".family.json"))
    assert "aecompress/models/default.family.json" in families
    with zipfile.ZipFile(wheel) as archive:
        for entry in families:
            family = json.loads(archive.read(entry))
            for member in family["members"]:
                assert f"aecompress/models/{member['model']}.pt" in names, (entry, member["model"])
    # every model file of the checkout's models/ folder, and no training state
    bundled = {f"aecompress/models/{p.name}" for p in (REPO / "models").glob("*.pt")}
    assert bundled <= names
    assert not [n for n in names if n.endswith(".ckpt") or "/next/" in n]


@pytest.mark.slow
def test_installed_wheel_encodes_and_decodes_from_another_folder(installed: Path, tmp_path: Path) -> None:
    work, empty = tmp_path / "elsewhere", tmp_path / "no-user-models"
    work.mkdir()
    empty.mkdir()
    where = _run(["-c", "import aecompress; print(aecompress.__file__)"], work, installed, empty)
    assert Path(where.strip()).is_relative_to(installed)  # the wheel's copy, not the checkout
    rgb = photo_like(96, 128, seed=4)
    Image.fromarray(rgb).save(work / "photo.png")
    _run(["-m", "aecompress", "encode", "photo.png", "-q", "60"], work, installed, empty)
    _run(["-m", "aecompress", "decode", "photo.png.aec", "-o", "back.png"], work, installed, empty)
    info = json.loads(_run(["-m", "aecompress", "info", "--json", "photo.png.aec"], work, installed, empty))
    assert info[0]["model"].startswith("hyperprior")  # a member of the bundled default family
    back = np.asarray(Image.open(work / "back.png").convert("RGB"))
    assert psnr(rgb, back) > 27.0  # 29.2 dB measured: a working codec, not a broken one (< 15)

    def listing(pythonpath: Path) -> list[list[str]]:
        out = _run(["-m", "aecompress", "models"], work, pythonpath, empty)
        return [line.split()[:2] for line in out.splitlines()]

    assert listing(installed) == listing(REPO)
