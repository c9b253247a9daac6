"""The codec library: modes, sizes, formats, metadata, tiling, quality mapping, model checks."""

from __future__ import annotations

import contextlib
import io
import itertools
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aecompress import codec
from aecompress import format as aecformat
from aecompress.errors import ImageError, ModelError, ModelMismatchError
from aecompress.imageio import encode_image_bytes, from_pil, read_image
from aecompress.latents import stored_integers
from aecompress.metrics import psnr
from aecompress.modelfile import read_info, save_model
from aecompress.nn import build
from tests.conftest import FACTORIZED, make_model, photo_like


def _round_trip(img: Image.Image, **kwargs: object) -> tuple[bytes, Image.Image]:
    data = codec.encode(from_pil(img), device="cpu", **kwargs).data  # type: ignore[arg-type]
    back = codec.decode(data, device="cpu")
    restored = Image.open(io.BytesIO(encode_image_bytes(back, "PNG")))
    restored.load()
    return data, restored


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("RGB", "RGB"),
        ("L", "L"),
        ("RGBA", "RGBA"),
        ("LA", "LA"),
        ("P", "RGB"),
        ("CMYK", "RGB"),
        ("1", "L"),
        ("I;16", "L"),
        ("YCbCr", "RGB"),
    ],
)
def test_every_mode_round_trips_to_the_mode_a_user_expects(mode: str, expected: str) -> None:
    rgb = Image.fromarray(photo_like(37, 29))
    if mode in ("RGBA", "LA"):
        src = rgb.convert(mode)
        alpha = np.tile(np.arange(29, dtype=np.uint8) * 8, (37, 1))
        src.putalpha(Image.fromarray(alpha))
    elif mode == "I;16":
        wide = np.asarray(rgb.convert("L")).astype("<u2") * 257
        src = Image.frombytes("I;16", rgb.size, wide.tobytes())
    else:
        src = rgb.convert(mode)
    with pytest.warns(UserWarning, match="8 bits") if mode == "I;16" else _no_warning():
        data, out = _round_trip(src)
    assert out.mode == expected
    assert out.size == src.size
    info = aecformat.describe(aecformat.unpack(data))
    assert info["source_mode"] == mode
    if mode in ("RGBA", "LA"):
        np.testing.assert_array_equal(np.asarray(out.getchannel("A")), alpha)


@contextlib.contextmanager
def _no_warning() -> Iterator[None]:
    """Any warning inside is an error: the modes without a reduction must warn of nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_palette_with_transparency_keeps_alpha() -> None:
    img = Image.fromarray(photo_like(20, 20)).convert("P")
    img.info["transparency"] = 0
    _, out = _round_trip(img)
    assert out.mode == "RGBA"


@pytest.mark.parametrize("size", [(1, 1), (17, 3), (3, 17), (16, 16), (33, 65)])
def test_odd_sizes_round_trip(size: tuple[int, int]) -> None:
    w, h = size
    img = Image.fromarray(photo_like(h, w, seed=w))
    data, out = _round_trip(img)
    assert out.size == (w, h)
    header = aecformat.unpack(data).header
    assert header.latent_width == -(-w // 16) and header.latent_height == -(-h // 16)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif", ".bmp", ".ppm"])
def test_reads_and_writes_every_format(tmp_path: Path, ext: str) -> None:
    src = tmp_path / f"in{ext}"
    Image.fromarray(photo_like(24, 40)).save(src)
    image = read_image(src)
    back = codec.decode(codec.encode(image, device="cpu").data, device="cpu")
    fmt = {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".bmp": "BMP", ".ppm": "PPM"}[ext]
    out = Image.open(io.BytesIO(encode_image_bytes(back, fmt)))
    assert out.format == fmt and out.size == (40, 24)


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "CMYK", "I;16"])
def test_pixels_read_band_by_band_are_pillows_conversion(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Images are turned into arrays a few rows at a time (so a large one is never copied whole
    on the way); bands of 7 rows give exactly Pillow's whole-image conversion, for every mode."""
    import aecompress.imageio as imageio

    img = Image.fromarray(photo_like(30, 41, seed=9))
    img = img.convert("I;16") if mode == "I;16" else img.convert(mode)
    monkeypatch.setattr(imageio, "BAND_ROWS", 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        banded = from_pil(img).rgb
        monkeypatch.setattr(imageio, "BAND_ROWS", 1 << 20)
        whole = from_pil(img).rgb
    assert banded.shape == (30, 41, 3) and banded.flags.writeable
    np.testing.assert_array_equal(banded, whole)
    if mode in ("RGB", "P", "RGBA"):
        np.testing.assert_array_equal(banded, np.asarray(img.convert("RGB")))


def test_exif_orientation_is_applied_on_encode() -> None:
    img = Image.fromarray(photo_like(20, 50))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x010F] = "aecompress-test-camera"
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    image = read_image(buf.getvalue())
    assert (image.width, image.height) == (20, 50)
    back = codec.decode(codec.encode(image, device="cpu").data, device="cpu")
    assert back.exif is not None
    written = Image.open(io.BytesIO(encode_image_bytes(back, "JPEG"))).getexif()
    assert written.get(0x010F) == "aecompress-test-camera"
    assert written.get(0x0112, 1) == 1


def test_icc_profile_is_carried_through() -> None:
    icc = b"\x00\x00\x02\x0cfake-icc-profile-bytes" * 4
    img = Image.fromarray(photo_like(30, 30))
    buf = io.BytesIO()
    img.save(buf, "PNG", icc_profile=icc)
    back = codec.decode(codec.encode(read_image(buf.getvalue()), device="cpu").data, device="cpu")
    assert back.icc == icc
    assert Image.open(io.BytesIO(encode_image_bytes(back, "PNG"))).info.get("icc_profile") == icc


def test_tiled_coding_matches_whole_image_coding() -> None:
    rgb = photo_like(200, 260, seed=4)
    image = from_pil(Image.fromarray(rgb))
    whole = codec.encode(image, device="cpu", tile=64).data
    tiled = codec.encode(image, device="cpu", tile=4).data
    a = codec.decode(whole, device="cpu", tile=64).rgb
    b = codec.decode(tiled, device="cpu", tile=3).rgb
    assert abs(psnr(rgb, a) - psnr(rgb, b)) < 0.05
    qa = stored_integers(aecformat.unpack(whole)).astype(int)
    qb = stored_integers(aecformat.unpack(tiled)).astype(int)
    assert np.mean(qa != qb) < 0.001


def test_each_analysis_tile_is_its_part_of_the_whole_edge_padded_image() -> None:
    """Tiles are padded on their own (the whole image never is): every region, inside, across
    or beyond the right and bottom edges, equals that region of ``np.pad(..., mode="edge")``."""
    from aecompress.passes import _edge_padded

    rgb = photo_like(37, 53, seed=2)
    whole = np.pad(rgb, ((0, 40 - 37), (0, 56 - 53), (0, 0)), mode="edge")
    regions = [(0, 40, 0, 56), (30, 40, 50, 56), (0, 16, 0, 16), (16, 40, 8, 56), (36, 40, 52, 56)]
    for y0, y1, x0, x1 in regions:
        np.testing.assert_array_equal(_edge_padded(rgb, y0, y1, x0, x1), whole[y0:y1, x0:x1])


def test_quality_maps_monotonically_to_step() -> None:
    steps = [codec.quality_to_step(q) for q in range(101)]
    assert all(a > b for a, b in itertools.pairwise(steps))
    assert codec.quality_to_step(75) == 1.0
    with pytest.raises(ValueError):
        codec.quality_to_step(101)


def test_higher_quality_never_gives_a_smaller_file() -> None:
    image = from_pil(Image.fromarray(photo_like(64, 96, seed=2)))
    sizes = [len(codec.encode(image, device="cpu", quality=q).data) for q in range(0, 101, 10)]
    assert sizes == sorted(sizes)


def test_decoding_with_another_model_is_refused_naming_the_needed_one(tmp_path: Path) -> None:
    data = codec.encode(from_pil(Image.fromarray(photo_like(16, 16))), device="cpu").data
    other = make_model(tmp_path / "impostor.pt", "default", seed=7)
    with pytest.raises(ModelMismatchError, match="needs model 'default'"):
        codec.decode(data, device="cpu", model=str(other))


def test_file_names_a_model_that_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = make_model(tmp_path / "mine.pt", "mine", seed=9)
    data = codec.encode(from_pil(Image.fromarray(photo_like(16, 16))), model=str(own), device="cpu").data
    own.unlink()
    with pytest.raises(ModelMismatchError, match="needs model 'mine'"):
        codec.decode(data, device="cpu")


def test_files_of_the_renamed_first_codec_decode_by_its_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first bundled codec was called 'default' until the family took that name; it is
    'factorized' now, and files that name 'default' find it by their weights hash."""
    old_name = tmp_path / "old" / "default.pt"
    old_name.parent.mkdir()
    payload = torch.load(FACTORIZED, map_location="cpu", weights_only=True)
    torch.save({**payload, "name": "default"}, old_name)  # the file as it was bundled
    assert read_info(old_name).weights_hash == read_info(FACTORIZED).weights_hash
    image = from_pil(Image.fromarray(photo_like(40, 56, seed=2)))
    data = codec.encode(image, model=str(old_name), quality=60, device="cpu").data
    assert aecformat.unpack(data).header.model_name == "default"
    old_name.unlink()
    monkeypatch.setenv("AECOMPRESS_MODELS", str(tmp_path / "old"))  # no user models at all
    back = codec.decode(data, device="cpu")
    expected = codec.decode(codec.encode(image, model=str(FACTORIZED), quality=60, device="cpu").data, "cpu")
    np.testing.assert_array_equal(back.rgb, expected.rgb)


def test_unknown_model_and_bad_input() -> None:
    with pytest.raises(ModelError, match="unknown model"):
        codec.encode(from_pil(Image.new("RGB", (4, 4))), model="no-such-model", device="cpu")
    with pytest.raises(ImageError, match="not an image"):
        read_image(b"this is text, not pixels")
    with pytest.raises(ImageError, match="empty"):
        read_image(b"")


def test_encoding_is_deterministic() -> None:
    image = from_pil(Image.fromarray(photo_like(48, 48, seed=5)))
    assert codec.encode(image, device="cpu").data == codec.encode(image, device="cpu").data


def test_sixteen_bit_rgb_png_is_reduced_with_a_warning(tmp_path: Path) -> None:
    import struct
    import zlib

    h, w = 6, 7
    rows = b"".join(b"\x00" + np.full((w, 3), 40000, ">u2").tobytes() for _ in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path = tmp_path / "wide.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    with pytest.warns(UserWarning, match="16-bit RGB"):
        image = read_image(path)
    assert image.source_bits == 16 and image.mode == "RGB"
    header = aecformat.unpack(codec.encode(image, device="cpu").data).header
    assert header.source_bits == 16


def test_stride_eight_model_codes_any_size_and_tiles_seamlessly(tmp_path: Path) -> None:
    torch.manual_seed(3)
    net = build("factorized", {"channels": 8, "latent_channels": 100}).restrided(3)
    path = tmp_path / "fine.pt"
    save_model(net, path, "fine", {"note": "test model"})
    rgb = photo_like(75, 130, seed=6)
    image = from_pil(Image.fromarray(rgb))
    whole = codec.encode(image, str(path), 75, device="cpu", tile=64).data
    tiled = codec.encode(image, str(path), 75, device="cpu", tile=3).data
    header = aecformat.unpack(whole).header
    assert (header.stride, header.latent_height, header.latent_width) == (8, 10, 17)
    qa = stored_integers(aecformat.unpack(whole)).astype(int)
    qb = stored_integers(aecformat.unpack(tiled)).astype(int)
    assert np.mean(qa != qb) < 0.001
    a = codec.decode(whole, device="cpu", model=str(path), tile=64).rgb
    b = codec.decode(whole, device="cpu", model=str(path), tile=2).rgb
    assert a.shape == rgb.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_restriding_keeps_weights_and_rescales_only_the_changed_decoder_layer() -> None:
    torch.manual_seed(4)
    coarse = build("factorized", {"channels": 8, "latent_channels": 100})
    fine = coarse.restrided(3)
    assert fine.stride == 8 and coarse.stride == 16 and fine.config["downsamples"] == 3
    before, after = coarse.state_dict(), fine.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == ["g_s.0.weight"]
    assert torch.allclose(after["g_s.0.weight"], before["g_s.0.weight"] / 4)
    back = fine.restrided(4).state_dict()
    assert all(torch.allclose(back[k], before[k]) for k in before)
    x = torch.rand(1, 3, 64, 48)
    assert fine.encode(x).shape == (1, 100, 8, 6) and fine.decode(fine.encode(x)).shape == x.shape


@pytest.mark.parametrize("band_elements", [1 << 20, 2 * 16 * 11 * 2])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_gdn_inference_path_computes_exactly_what_training_computes(
    band_elements: int,
    layout: torch.memory_format,
    inplace: bool,
    threads: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The inference form of GDN (channels-last input in bands of rows: here one band, or bands
    of 2 rows and a last one of 1; over its input when ``inplace``) must not change a single bit,
    in float32 or bfloat16, on 1 or 2 threads."""
    from aecompress.nn import layers

    monkeypatch.setattr(layers, "BAND_ELEMENTS", band_elements)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _check_gdn_inference(layout, inplace)
    finally:
        torch.set_num_threads(before)


def _check_gdn_inference(layout: torch.memory_format, inplace: bool) -> None:
    from aecompress.nn.layers import GDN

    torch.manual_seed(0)
    x = torch.randn(2, 16, 9, 11).contiguous(memory_format=layout)
    for inverse in (False, True):
        layer = GDN(16, inverse=inverse, inplace=inplace)
        with torch.no_grad():
            layer.gamma_root.add_(torch.rand(16, 16) * 0.1)
        # float32; bfloat16 autocast with the bfloat16 input a convolution hands it; and with a
        # float32 input, whose result type promotion makes float32
        for autocast, dtype in ((False, torch.float32), (True, torch.bfloat16), (True, torch.float32)):
            inputs = x.to(dtype).clone()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                with torch.enable_grad():
                    trained = layer(inputs.clone().requires_grad_(True)).detach()
                with torch.inference_mode():
                    inferred = layer(inputs)
            assert trained.dtype == inferred.dtype and torch.equal(trained, inferred), (inverse, dtype)
            assert inferred.is_contiguous(memory_format=layout)
            assert (inferred.data_ptr() == inputs.data_ptr()) == inplace


def test_networks_with_in_place_gdn_leave_their_input_alone() -> None:
    """The codec's GDN layers write over their input at inference; the networks' own inputs (a
    convolution reads them first) stay as they were, and a second pass gives the same output."""
    from aecompress.nn import build

    torch.manual_seed(1)
    net = build("factorized", {"channels": 16, "latent_channels": 8}).eval()
    assert all(m.inplace for m in net.modules() if type(m).__name__ == "GDN")
    x = torch.rand(1, 3, 32, 48)
    kept = x.clone()
    with torch.inference_mode():
        y = net.encode(x)
        latents = y.clone()
        first, second = net.decode(y), net.decode(y)
    assert torch.equal(x, kept) and torch.equal(y, latents) and torch.equal(first, second)


@pytest.mark.parametrize("setting", ["bf16", "fp32"])
def test_compact_latents_hold_the_float_latents_values(setting: str) -> None:
    """An encode keeps the analysis's latents in bfloat16 where the network ran in it (half the
    memory); upcast they are the float32 latents exactly, so files do not change; in float32 the
    compact form is float32."""
    from aecompress import passes, precision
    from aecompress.latents import quantize
    from tests.conftest import tiny_hyperprior

    net = tiny_hyperprior(3)
    rgb = photo_like(48, 72, seed=3)
    before = precision.current()
    precision.set(setting)
    try:
        whole = passes.analyse(net, rgb, torch.device("cpu"))
        compact = passes.analyse(net, rgb, torch.device("cpu"), tile=2, compact=True)
        tiled = passes.analyse(net, rgb, torch.device("cpu"), tile=2)
    finally:
        precision.set(before)
    assert whole.dtype == torch.float32
    assert compact.dtype == (torch.bfloat16 if setting == "bf16" else torch.float32)
    assert torch.equal(compact.float(), tiled)
    np.testing.assert_array_equal(quantize(compact, 0.37), quantize(tiled, 0.37))
