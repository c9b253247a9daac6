"""The library as a user meets it: ``import aecompress`` from another folder, real Pillow."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import aecompress
from aecompress import placement
from aecompress.metrics import psnr
from aecompress.modelfile import read_info
from tests.conftest import REPO, photo_like


@pytest.fixture
def photo() -> Image.Image:
    return Image.fromarray(photo_like(48, 64, seed=2))


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P"])
def test_round_trip_of_every_mode(photo: Image.Image, mode: str) -> None:
    source = photo.convert(mode)
    if mode in ("RGBA", "LA"):
        alpha = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1)))
        source.putalpha(alpha)
    back = aecompress.decompress(aecompress.compress(source, quality=90))
    expected = {"P": "RGB"}.get(mode, mode)
    assert back.mode == expected and back.size == source.size
    if mode in ("RGBA", "LA"):
        assert np.array_equal(np.asarray(back.getchannel("A")), np.asarray(source.getchannel("A")))


def test_arrays_paths_and_errors(photo: Image.Image, tmp_path: Path) -> None:
    array = np.asarray(photo)
    from_array = aecompress.compress(array, quality=60)
    path = tmp_path / "photo.png"
    photo.save(path)
    assert aecompress.compress(path, quality=60) == from_array  # same pixels, same file
    grey = aecompress.decompress(aecompress.compress(array[..., 0]))
    assert grey.mode == "L"
    with pytest.raises(aecompress.ImageError, match="uint8"):
        aecompress.compress(array.astype(np.float32))
    with pytest.raises(aecompress.ImageError):
        aecompress.compress(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(aecompress.FormatError, match="magic"):
        aecompress.decompress(b"not an aec file at all")
    info = aecompress.info(from_array)
    assert info["width"] == 64 and info["height"] == 48 and info["format_version"] == 4


def test_batched_compression_matches_one_at_a_time(photo: Image.Image) -> None:
    images = [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), np.asarray(photo)]
    many = aecompress.compress_many(images, quality=60, device="cpu")
    assert many[0] == many[2]  # the same pixels, given as an image and as an array
    for data, image in zip(many, images, strict=True):
        back = np.asarray(aecompress.decompress(data))
        single = np.asarray(aecompress.decompress(aecompress.compress(image, quality=60, device="cpu")))
        assert psnr(back, single) > 40  # batched and single encoder passes agree to rounding


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L"])
def test_pillow_keeps_modes(photo: Image.Image, mode: str, tmp_path: Path) -> None:
    source = photo.convert(mode)
    source.save(tmp_path / "m.aec", quality=80)
    with Image.open(tmp_path / "m.aec") as reopened:
        assert reopened.mode == mode
        reopened.load()
        assert reopened.mode == mode and reopened.size == photo.size


def test_target_bpp_and_tensor_results(photo: Image.Image) -> None:
    data = aecompress.compress(photo, target_bpp=1.0)
    assert 8 * len(data) / (64 * 48) <= 1.0
    tensor = aecompress.decompress_tensor(data, device="cpu")
    assert tuple(tensor.shape) == (3, 48, 64) and str(tensor.dtype) == "torch.uint8"
    many = aecompress.decompress_many([data, data], device="cpu")
    assert all(bool((t == tensor).all()) for t in many)


def test_pillow_opens_lazily_saves_with_options_and_keeps_metadata(
    photo: Image.Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AECOMPRESS_MODELS", str(tmp_path / "no-user-models"))  # the bundled default
    assert Image.registered_extensions()[".aec"] == "AEC"
    target = tmp_path / "x.aec"
    photo.save(target, quality=40, model="default")
    low = target.stat().st_size
    photo.save(target, quality=90, model="default")
    assert target.stat().st_size > low
    with target.open("rb") as handle:
        im = Image.open(handle)  # a file object
        assert (im.format, im.size, im.mode) == ("AEC", (64, 48), "RGB")
        im.load()
        assert psnr(np.asarray(photo), np.asarray(im)) > 20
    buf = io.BytesIO()
    photo.save(buf, format="AEC", quality=40, model="default")
    assert len(buf.getvalue()) == low
    tagged = photo.copy()
    tagged.info["icc_profile"] = b"an icc profile"
    tagged.save(target, quality=40, model="default")
    reopened = Image.open(target)
    assert reopened.info["icc_profile"] == b"an icc profile"
    member, _ = placement.pick_model("default", 40)  # the family member that codes -q 40
    assert reopened.info["aec"]["model"] == read_info(member).name


def test_pillow_save_honours_icc_profile_and_exif_as_png_and_jpeg_do(
    photo: Image.Image, tmp_path: Path
) -> None:
    """Given, they replace the image's own; empty, they drop it; left out, the image's travel."""
    own = Image.Exif()
    own[0x010F] = "own maker"
    source = photo.copy()
    source.info["icc_profile"] = b"own profile"
    source.info["exif"] = own.tobytes()
    given = Image.Exif()
    given[0x010F] = "given maker"

    def saved(**options: object) -> Image.Image:
        target = tmp_path / "m.aec"
        source.save(target, quality=30, **options)
        return Image.open(target)

    kept = saved()
    assert kept.info["icc_profile"] == b"own profile" and kept.getexif()[0x010F] == "own maker"
    replaced = saved(icc_profile=b"given profile", exif=given)
    assert replaced.info["icc_profile"] == b"given profile" and replaced.getexif()[0x010F] == "given maker"
    as_bytes = saved(exif=given.tobytes())
    assert as_bytes.getexif()[0x010F] == "given maker" and as_bytes.info["icc_profile"] == b"own profile"
    dropped = saved(icc_profile=b"", exif=b"")
    assert "icc_profile" not in dropped.info and 0x010F not in dropped.getexif()
    assert source.info["icc_profile"] == b"own profile"  # the caller's image is left as it was


def test_hostile_files_through_pillow_end_in_one_clear_error(tmp_path: Path, photo: Image.Image) -> None:
    data = aecompress.compress(photo)
    cases = {
        "truncated": data[: len(data) // 2],
        "flipped": data[:20] + bytes([data[20] ^ 0xFF]) + data[21:],
        "payload": data[:-40] + bytes([data[-40] ^ 0x10]) + data[-39:],
    }
    for name, bad in cases.items():
        with pytest.raises(aecompress.AecError):
            Image.open(io.BytesIO(bad)).load()
        (tmp_path / f"{name}.aec").write_bytes(bad)


def test_import_is_lazy_and_works_from_another_folder(tmp_path: Path, photo: Image.Image) -> None:
    """In a fresh process outside the repository: importing registers .aec without torch, and
    opening a file reads its size without torch; only load() brings the network in."""
    photo.save(tmp_path / "x.aec", quality=50)
    script = """
import sys
import aecompress
from PIL import Image
im = Image.open("x.aec")
print(im.size, "torch" in sys.modules)
im.load()
print(im.size, "torch" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split("\n")[:2] == ["(64, 48) False", "(64, 48) True"], out.stdout + out.stderr
