"""A pixel residual over the decoded image (format versions 7 and 8): made, stored, parsed and added
back, alone and as the top of a family's range."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aecompress import calibration, codec, family, pack, passes, placement, residual, synthetic
from aecompress import format as aecformat
from aecompress.cli import app
from aecompress.coding import compress_payload
from aecompress.errors import FormatError, ModelError
from aecompress.imageio import ImageData
from aecompress.latents import coder_for
from aecompress.metrics import psnr
from aecompress.modelfile import save_model
from tests.conftest import DEFAULT_FAMILY, photo_like, tiny_hyperprior

runner = CliRunner()
CPU = torch.device("cpu")


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.pt"
    save_model(tiny_hyperprior(seed=4), path, "tiny", {"note": "test model"})
    return path


def _drawn(height: int = 40, width: int = 56) -> ImageData:
    return ImageData(synthetic.render("comic", 3, width, height), None, "RGB")


def _files(
    model: Path, image: ImageData, steps: list[float | residual.Span | None], quality: float = 30.0
) -> list[bytes]:
    net, info = passes.model_on(model, CPU)
    latents = passes.analyse(net, image.rgb, CPU)
    return [
        pack.pack_latents(net, info.name, info.weights_hash, image, latents, quality, None, s, CPU)[0]
        for s in steps
    ]


def test_the_residual_lifts_the_decoded_image_to_within_half_a_step(tiny: Path):
    image = _drawn()
    plain, coarse, fine = _files(tiny, image, [None, 64.0, 4.0])
    assert aecformat.unpack(plain).header.version < aecformat.RESIDUAL_VERSION
    base = codec.decode(plain, "cpu", tiny).rgb
    for data, step in ((coarse, 64.0), (fine, 4.0)):
        aec = aecformat.unpack(data)
        assert aec.header.version == aecformat.RESIDUAL_VERSION and aec.residual is not None
        assert aec.residual.step == step and aecformat.describe(aec)["residual_step"] == step
        assert aecformat.describe(aec)["residual_bytes"] == len(aec.residual.to_bytes())
        back = codec.decode(data, "cpu", tiny).rgb
        error = np.abs(back.astype(int) - image.rgb.astype(int))
        assert error.max() <= step / 2 + 0.5  # no difference here is past the int8 range
        assert np.array_equal(codec.decode_many([data], "cpu", tiny)[0].rgb, back)  # the batch path too
    assert psnr(image.rgb, base) < psnr(image.rgb, codec.decode(coarse, "cpu", tiny).rgb)
    assert len(plain) < len(coarse) < len(fine)
    assert psnr(image.rgb, codec.decode(fine, "cpu", tiny).rgb) > 45


def test_residual_values_round_and_clip_as_stored():
    original = np.array([[[0, 255, 100]], [[200, 10, 128]]], np.uint8)
    decoded = np.array([[[255, 0, 97]], [[190, 10, 140]]], np.uint8)
    chunk = residual.make(original, decoded, 2.0)
    header = aecformat.AecHeader(
        1, 2, "RGB", "RGB", 8, 50, "m", b"\0" * 16, 16, 100, 1, 1, np.dtype(np.int8), 1.0
    )
    aec = aecformat.AecFile(header, b"", residual=chunk)
    assert aec.residual_array().tolist() == [[[-127, 127, 2]], [[5, 0, -6]]]  # ±255 clipped to ±127
    assert residual.apply(decoded, aec).tolist() == [[[1, 254, 101]], [[200, 10, 128]]]
    assert residual.apply(decoded, aecformat.AecFile(header, b"")) is decoded
    for step in (1.0, 300.0, float("nan")):
        with pytest.raises(ValueError):
            residual.make(original, decoded, step)


def _photo_like_pair(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """An original and a decoded image that differ as a good photo member's do: small integers."""
    rng = np.random.default_rng(seed)
    original = rng.integers(20, 236, size=(96, 80, 3)).astype(np.uint8)
    noise = np.rint(rng.normal(0, 2.2, size=original.shape)).astype(int)
    return original, np.clip(original.astype(int) + noise, 0, 255).astype(np.uint8)


def test_steps_between_even_numbers_fill_in_the_jumps_with_a_share_of_finer_rows():
    """Integer differences make a single step's size jump where half the step crosses an integer
    (5.9 keeps the 3s that 6 drops); between two even steps a share of rows at the finer one
    makes size and error move a little with every change of step, and in order."""
    original, decoded = _photo_like_pair()
    steps = [6.0 * (4.0 / 6.0) ** (i / 12) for i in range(13)]  # 6 down to 4, evenly in log
    sizes, errors = [], []
    header = aecformat.AecHeader(
        80, 96, "RGB", "RGB", 8, 50, "m", b"\0" * 16, 16, 100, 6, 5, np.dtype(np.int8), 1.0
    )
    for step in steps:
        chunk = residual.make(original, decoded, step)
        rows_layout = step not in (6.0, 4.0)
        assert chunk.layout == (aecformat.RESIDUAL_INT8_ROWS if rows_layout else aecformat.RESIDUAL_INT8)
        parsed = aecformat._parse_residual(chunk.to_bytes())
        assert parsed == chunk and parsed.nominal_step == pytest.approx(step, rel=1e-3)
        aec = aecformat.AecFile(header, b"", residual=parsed)
        restored = residual.apply(decoded, aec)
        row_steps = parsed.row_steps(slice(None), 96)
        assert set(np.unique(row_steps).tolist()) <= {4.0, 6.0}
        assert (np.abs(restored.astype(int) - original.astype(int)).max(axis=(1, 2)) <= row_steps / 2).all()
        sizes.append(len(chunk.frame))
        errors.append(float(np.mean((restored.astype(float) - original) ** 2)))
    assert sizes == sorted(sizes) and errors == sorted(errors, reverse=True)
    growth = [b / a for a, b in itertools.pairwise(sizes)]
    assert sizes[-1] / sizes[0] > 1.3 and max(growth) < 1.12
    diff = original.astype(np.float32) - decoded.astype(np.float32)
    one_step = [len(compress_payload(np.clip(np.rint(diff / s), -127, 127).astype(np.int8).tobytes()))
                for s in (6.0, 5.99)]  # fmt: skip
    assert one_step[1] / one_step[0] > 1.12  # the jump a single step of 5.99 would make
    assert len(residual.make(original, decoded, 5.99).frame) / sizes[0] < 1.02
    rows = aecformat.residual_rows(1000, aecformat.ROW_SHARE_ONE // 4)
    assert 240 <= rows.sum() <= 260 and 240 <= rows[:500].sum() * 2 <= 260  # spread down the image


def test_damaged_or_misplaced_residual_chunks_are_refused(tiny: Path):
    plain, data = _files(tiny, _drawn(), [None, 16.0])
    aec = aecformat.unpack(data)
    assert aec.residual is not None
    good = aec.residual.to_bytes()
    start = data.index(b"RESD")  # a chunk: kind, length, data, CRC
    end = start + 8 + len(good) + 4
    for bad, message in (
        (good[:3], "cut short"),
        (good[:4] + b"\x09" + good[5:], "unknown layout"),
        (np.float32(1000.0).tobytes() + good[4:], "outside"),
    ):
        with pytest.raises(FormatError, match=message):
            aecformat.unpack(data[:start] + aecformat._chunk(b"RESD", bad) + data[end:])
    rows = residual.make(*_photo_like_pair(), 5.0).to_bytes()
    for bad in (rows[:7], rows[:5] + np.float32(6.0).tobytes() + rows[9:], rows[:9] + b"\0\0" + rows[11:]):
        with pytest.raises(FormatError, match="residual"):  # cut, a finer step not finer, no rows
            aecformat._parse_residual(bad)
    with pytest.raises(FormatError, match="residual"):  # the residual frame is cut
        aecformat.unpack(data[:start] + aecformat._chunk(b"RESD", good[:-9]) + data[end:]).residual_array()
    older = plain.index(b"AEND")  # a residual inside a file of an older version
    with pytest.raises(FormatError, match="needs format version 7"):
        aecformat.unpack(plain[:older] + aecformat._chunk(b"RESD", good) + plain[older:])
    assert aecformat.unpack(plain).residual is None and aecformat.unpack(plain).residual_array() is None


def _family(folder: Path, tail: object) -> Path:
    path = folder / f"tail{family.FAMILY_SUFFIX}"
    members = [
        {"model": "tiny", "quality": [0, 60], "local_quality": [0, 40]},
        {
            "model": "tiny",
            "quality": [60, 100],
            "local_quality": [40, 40],
            "fixed_start": True,
            "residual": tail,
        },
    ]
    path.write_text(json.dumps({"kind": family.FAMILY_KIND, "name": "tail", "members": members}))
    return path


def test_a_family_tail_adds_the_residual_from_where_its_member_stops(tiny: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AECOMPRESS_MODELS", str(tmp_path))
    path = _family(tmp_path, [128, 8])
    fam = family.load_family(path)
    family.save(fam, path)
    assert family.load_family(path).members == fam.members
    image = _drawn()
    listing = runner.invoke(app, ["models"]).stdout
    assert "tiny for -q 0-60, tiny + residual for -q 60-100" in listing, listing
    placer = placement.Placer("tail", image, CPU)
    assert placer.residual(59) is None
    assert placer.residual(80) == residual.Span(128, 8, 0.5, residual.TAIL_GROWTH**40)
    sizes, top = [], codec.encode(image, tiny, 40, "cpu").header.step
    for quality in (59, 60, 80, 100):
        result = codec.encode(image, "tail", quality, "cpu")
        aec = aecformat.unpack(result.data)
        assert (aec.residual is None) == (quality < 60)
        assert (aec.header.step == pytest.approx(top)) == (quality >= 60)  # the tail: the member's top
        sizes.append(len(result.data))
    assert sizes == sorted(sizes)
    middle = (sizes[1] * sizes[3]) ** 0.5  # half way: the file's size, not the step, in the middle
    assert 0.9 * middle < sizes[2] < 1.1 * middle
    assert json.loads(runner.invoke(app, ["info", "--json", str(_saved(tmp_path, "tail", 100))]).stdout)[0][
        "residual_step"
    ] == pytest.approx(8)
    for bad in ([1, 8], [8, 128], [300, 8], "x"):
        with pytest.raises(ModelError):
            family.load_family(_family(tmp_path, bad))


def _saved(folder: Path, model: str, quality: float) -> Path:
    out = folder / f"drawn-{quality:g}.aec"
    out.write_bytes(codec.encode(_drawn(), model, quality, "cpu").data)
    return out


def test_a_tail_of_several_steps_splits_into_even_pieces_that_meet():
    """``calibration.with_residual_tail``: three steps make two members of the same model, each
    a half of the tail, the step and the member's -q continuous where they meet; with
    ``only_last`` every member below the last keeps its range."""
    members = (
        family.Member("low", (0.0, 50.0), (0.0, 100.0)),
        family.Member("high", (50.0, 100.0), (40.0, 100.0), fixed_start=True),
    )
    tailed = calibration.with_residual_tail(members, 80.0, (60.0, 100.0), (24.0, 8.0, 4.0), only_last=True)
    assert tailed[0] == members[0]
    assert [(m.model, m.quality, m.local_quality, m.residual) for m in tailed[1:]] == [
        ("high", (50.0, 80.0), (40.0, 60.0), None),
        ("high", (80.0, 90.0), (60.0, 80.0), (24.0, 8.0)),
        ("high", (90.0, 100.0), (80.0, 100.0), (8.0, 4.0)),
    ]
    squeezed = calibration.with_residual_tail(members, 80.0, (60.0, 100.0), (24.0, 4.0))
    assert squeezed[0].quality == (0.0, 40.0) and squeezed[1].quality == (40.0, 80.0) and len(squeezed) == 3
    for bad in ((8.0, 24.0, 4.0), (4.0,), (24.0, 8.0, 1.0)):
        with pytest.raises(ModelError):
            calibration.with_residual_tail(members, 80.0, (60.0, 100.0), bad)
    with pytest.raises(ModelError):  # only the last makes room, but the tail starts below it
        calibration.with_residual_tail(members, 40.0, (60.0, 100.0), (24.0, 4.0), only_last=True)
    bent = calibration.with_residual_tail(members, 90.0, (100.0, 100.0), (24.0, 4.0), True, knee=70.0)
    assert [(m.quality, m.local_quality) for m in bent[1:3]] == [
        ((50.0, 70.0), (40.0, 64.0)),
        ((70.0, 90.0), (64.0, 100.0)),
    ]
    for knee in (50.0, 95.0):
        with pytest.raises(ModelError):
            calibration.with_residual_tail(members, 90.0, (100.0, 100.0), (24.0, 4.0), True, knee=knee)


def test_the_chosen_step_falls_with_t_and_the_sizes_it_gives_grow_evenly():
    original, decoded = _photo_like_pair(5)
    base = 4000  # bytes of latents beside the residual
    choices = [
        residual.choose_step(original, decoded, residual.Span(24.0, 4.0, t / 8), base) for t in range(9)
    ]
    assert choices[0] == residual.Choice(24.0, None, True) and all(c.classed for c in choices)  # noise
    steps = [c.step for c in choices]
    assert steps[0] == 24.0 and steps[-1] == 4.0 and steps == sorted(steps, reverse=True)
    sizes = [base + len(residual.make(original, decoded, step, classed=True).frame) for step in steps]
    growth = [b / a for a, b in itertools.pairwise(sizes)]
    even = (sizes[-1] / sizes[0]) ** (1 / 8)
    assert all(abs(g / even - 1) < 0.05 for g in growth), (growth, even)
    # a cap on the range's growth: the end stops where the file is that many times the start's
    ratio = sizes[-1] / sizes[0]
    capped = [
        residual.choose_step(original, decoded, residual.Span(24.0, 4.0, t, ratio**0.5), base).step
        for t in (0.5, 1.0)
    ]
    assert abs(capped[0] / steps[2] - 1) < 0.05 and abs(capped[1] / steps[4] - 1) < 0.05
    sizes = [base + len(residual.make(original, decoded, step, classed=True).frame) for step in capped]
    start = base + len(residual.make(original, decoded, 24.0, classed=True).frame)
    assert abs(sizes[1] / start / ratio**0.5 - 1) < 0.07  # sized by entropy: the streams' framing moves it
    rows = residual._sample(5000, 700)  # a large image: rows drawn all down it, about 2^16 pixels
    assert np.all(np.diff(rows) > 0) and rows[0] < 60 and rows[-1] > 4940
    assert abs(len(rows) * 700 - residual.SEARCH_PIXELS) < 700
    assert np.array_equal(rows, residual._sample(5000, 700))  # the same image, the same rows
    assert np.array_equal(residual._sample(100, 400), np.arange(100))  # a small one: every row


@pytest.mark.parametrize("model", ["default.pt", "hyper.pt", "ctx.pt"])
@pytest.mark.parametrize("quality", [61.3, 97.0])
def test_the_coder_restores_what_a_decoder_parses_so_the_encoder_need_not(
    models_dir: Path, model: str, quality: float
) -> None:
    """The latents an encoder synthesizes its residual's base from are the decoder's, bit for
    bit, for every kind of coder (the hyperprior's gains at the -q read back from the header)."""
    net, _ = passes.model_on(models_dir / model, CPU)
    image = ImageData(photo_like(40, 72, seed=8), None, "RGB")
    latents = passes.analyse(net, image.rgb, CPU) * 30  # a random tiny model's latents are small
    coded = coder_for(net).code(net, latents, quality, restored=True)
    assert coded.restored is not None and coder_for(net).code(net, latents, quality).restored is None
    header = aecformat.AecHeader(
        width=image.width, height=image.height, mode="RGB", source_mode="RGB", source_bits=8,
        quality=round(quality), model_name="m", model_hash=bytes(16), stride=net.stride,
        channels=latents.shape[0], latent_height=latents.shape[1], latent_width=latents.shape[2],
        dtype=coded.dtype, step=coded.step,
    )  # fmt: skip
    aec = aecformat.unpack(aecformat.pack(header, coded.tensors, None, None, None, coded.order))
    parsed = coder_for(net).restore_lazily(net, aec)
    mine = coded.restored
    assert type(mine) is type(parsed)
    torch.testing.assert_close(mine[:], parsed[:], rtol=0, atol=0)
    assert float(parsed[:].abs().sum()) > 0


def _textured_pair(seed: int = 1, height: int = 192, width: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """An original and a decoded image whose differences are noise-like but cluster, as a photo
    member's do: busy patches with large ones, calm patches with small ones."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    busy = np.sin(xx / 9.0 + 2 * np.cos(yy / 13.0)) * np.cos(yy / 11.0) > 0.3
    sigma = np.where(busy, 6.0, 1.0)[..., None]
    original = rng.integers(20, 236, size=(height, width, 3)).astype(np.uint8)
    noise = np.rint(rng.laplace(0, 1, original.shape) * sigma).astype(int)
    return original, np.clip(original.astype(int) + noise, 0, 255).astype(np.uint8)


def _header(height: int, width: int) -> aecformat.AecHeader:
    return aecformat.AecHeader(
        width, height, "RGB", "RGB", 8, 50, "m", b"\0" * 16, 16, 100, 1, 1, np.dtype(np.int8), 1.0
    )


@pytest.mark.parametrize("step", [4.0, 5.0])
def test_a_classed_residual_holds_the_values_of_the_frame_in_bands(monkeypatch, step: float):
    """Layouts 3 and 4 (one step, or a share of finer rows): the same values as the zstd frame's,
    in bands of rows (the last shorter, odd sizes), each coded by classes on its own."""
    original, decoded = (a[:95, :79] for a in _textured_pair(2, 96, 80))
    monkeypatch.setattr(residual, "CLASSED_BAND_PIXELS", 79 * 20)
    assert residual.classed_band_rows(95, 79) == 20
    frame = residual.make(original, decoded, step)
    classed = residual.make(original, decoded, step, classed=True, workers=2)
    assert classed.classed and not frame.classed and classed.has_rows == frame.has_rows == (step == 5.0)
    parsed = aecformat._parse_residual(classed.to_bytes())
    assert parsed == classed
    bands = aecformat.residual_bands(parsed, _header(95, 79))
    assert [b.shape for b in bands] == [(3, 20, 79)] * 4 + [(3, 15, 79)]
    values = aecformat.AecFile(_header(95, 79), b"", residual=parsed).residual_array()
    assert np.array_equal(values, aecformat.AecFile(_header(95, 79), b"", residual=frame).residual_array())
    assert np.count_nonzero(values) > values.size // 10  # values to code, not an empty residual
    for height in (100_000, 1_000_000):  # a tall, narrow image: never more bands than a table holds
        rows = residual.classed_band_rows(height, 3)
        assert rows % 2 == 0 and -(-height // rows) <= aecformat.MAX_RESIDUAL_BANDS


def test_the_coder_is_chosen_by_the_residual_and_codes_it_smaller():
    """A noise-like residual goes to classes, a drawn image's (repeats) to zstd's frame, each the
    smaller of the two; the choice is the range end's, the same at every -q of the range."""
    drawn = synthetic.render("comic", 3, 256, 192)
    blurred = drawn.astype(float)
    for axis in (0, 1):
        blurred = (np.roll(blurred, 1, axis) + blurred + np.roll(blurred, -1, axis)) / 3
    pairs = {"photo": _textured_pair(1), "drawn": (drawn, np.rint(blurred).astype(np.uint8))}
    for kind, (original, decoded) in pairs.items():
        choice = residual.fixed_step(original, decoded, 4.0)
        assert choice.classed == (kind == "photo"), kind
        sizes = [len(residual.make(original, decoded, 4.0, classed=c).frame) for c in (False, True)]
        assert sizes[choice.classed] < 0.97 * sizes[not choice.classed], (kind, sizes)
        span = [
            residual.choose_step(original, decoded, residual.Span(64.0, 4.0, t / 4), 3000) for t in range(5)
        ]
        assert {c.classed for c in span} == {choice.classed}  # from the range's start (t = 0) on
        for c in span[1:] if kind == "drawn" else ():  # the sample's zstd setting alone codes it as small
            alone = len(residual.make(original, decoded, c.step, c.setting).frame)
            assert alone <= 1.03 * len(residual.make(original, decoded, c.step).frame)


def test_a_photo_file_takes_a_classed_residual_and_decodes_within_half_a_step():
    """The bundled family's tail on a photo-like image: a version 8 file, its residual coded by
    classes, the decoded pixels within half the coarser step of the original."""
    image = ImageData(photo_like(128, 192, seed=5), None, "RGB")
    data = codec.encode(image, str(DEFAULT_FAMILY), 100, "cpu").data
    aec = aecformat.unpack(data)
    assert aec.header.version == aecformat.CLASSED_RESIDUAL_VERSION and aec.residual is not None
    assert aec.residual.classed and aecformat.describe(aec)["residual_coding"] == "classes in 1 band"
    back = codec.decode(data, "cpu").rgb
    assert np.abs(back.astype(int) - image.rgb.astype(int)).max() <= aec.residual.step / 2 + 0.5
    assert np.array_equal(codec.decode_many([data], "cpu")[0].rgb, back)


def test_damaged_classed_residuals_are_refused(tiny: Path):
    original, _ = _textured_pair(3, 64, 96)
    (data,) = _files(tiny, ImageData(original, None, "RGB"), [None])
    plain = aecformat.unpack(data)
    chunk = residual.make(original, original // 2, 4.0, classed=True)

    def packed(residual_chunk: aecformat.ResidualChunk) -> bytes:
        return aecformat.pack(
            plain.header, list(plain.tensors), None, None, None, plain.order, residual_chunk
        )

    good = packed(chunk)
    assert aecformat.unpack(good).residual_array() is not None
    (band,) = aecformat.residual_bands(chunk, plain.header)
    for bad, message in (
        (dataclasses.replace(band, shape=(3, 63, 96)), "cover other than"),
        (dataclasses.replace(band, shape=(2, 64, 96)), "residual band 0 has shape"),
        (dataclasses.replace(band, role=1), "in its place"),
    ):
        with pytest.raises(FormatError, match=message):
            packed(dataclasses.replace(chunk, frame=aecformat.tensor_table([bad], 255)))
    cut = dataclasses.replace(band, frames=(band.frames[0][:-1], *band.frames[1:]))
    with pytest.raises(FormatError, match="stream"):  # a stream cut by a byte: found when parsed
        aecformat.unpack(
            packed(dataclasses.replace(chunk, frame=aecformat.tensor_table([cut], 255)))
        ).residual_array()
    (older,) = _files(tiny, _drawn(64, 96), [16.0])  # version 7, a zstd frame
    frame = aecformat.unpack(older).residual
    assert frame is not None and not frame.classed
    start = older.index(b"RESD")
    end = start + 8 + len(frame.to_bytes()) + 4
    with pytest.raises(FormatError, match="needs format version 8"):
        aecformat.unpack(older[:start] + aecformat._chunk(b"RESD", chunk.to_bytes()) + older[end:])


def _tail_sizes(
    original: np.ndarray, bases: list[np.ndarray], latents: list[int], anchored: bool
) -> list[int]:
    """The file sizes along a residual range of 64..4 over these bases (one a -q) and the bytes
    of latents beside each, the step chosen per -q, aiming at the end's own file or not."""
    n, out = len(bases) - 1, []
    for i, base in enumerate(bases):
        span = residual.Span(64.0, 4.0, i / n)
        if anchored:
            span = dataclasses.replace(span, last=residual.end_size(original, bases[n], latents[n], span)[0])
        choice = residual.choose_step(original, base, span, latents[i])
        out.append(latents[i] + len(residual.make(original, base, *dataclasses.astuple(choice)).frame))
    return out


def test_a_drawn_image_aims_at_its_own_end_and_grows_where_its_base_wanders():
    """A drawn image whose base sits two levels off at every other -q: the range's end measured
    on each -q's own base jumps with it and shrinks a file from one -q to the next; measured
    once on the end's own base (``Span.last``), each -q's file grows."""
    falls = 0
    for kind, seed in (("slide", 1), ("comic", 3), ("screen", 4)):
        original = synthetic.render(kind, seed, 160, 120)
        rng = np.random.default_rng(seed)
        noise = [np.rint(rng.normal(0, 3, original.shape)) + 2 * (i % 2) for i in range(13)]  # levels
        bases = [np.clip(original + n, 0, 255).astype(np.uint8) for n in noise]
        latents = [3000 + 60 * i for i in range(13)]  # bytes beside the residual, growing
        plain, anchored = (_tail_sizes(original, bases, latents, a) for a in (False, True))
        assert plain[0] == anchored[0] and plain[-1] == anchored[-1]  # the ends are the ends
        falls += sum(b < a for a, b in itertools.pairwise(plain))
        assert all(b > a for a, b in itertools.pairwise(anchored)), anchored
    assert falls > 0  # the case the end's own size is for


def test_no_file_below_a_range_end_is_larger_than_the_file_at_the_end(tiny: Path):
    """A step between two even ones puts the finer on a share of the rows, which breaks a drawn
    image's vertical repeats: its frame can exceed the end step's. Given the end's file size
    (``Span.cap``), such a file is coded at the end's step instead."""
    image = ImageData(synthetic.render("pattern", 1, 384, 256), None, "RGB")  # sampled by rows
    span = residual.Span(6.0, 4.0, 0.95)
    end, plain = _files(tiny, image, [4.0, span], 40.0)
    assert len(plain) > len(end)  # the case the cap is for
    (capped,) = _files(tiny, image, [dataclasses.replace(span, cap=len(end))], 40.0)
    assert capped == end
    (loose,) = _files(tiny, image, [dataclasses.replace(span, cap=len(plain))], 40.0)
    assert loose == plain  # under the cap: the step the search chose
