"""The coding layer: integers <-> context-classed zstd streams, exact on every machine.

Golden files of every format version live in tests/assets/golden/: their decoded integers are
compared with the integers they were made from (rebuilt from seeds) and with SHA-256 hashes pinned
in expected.json, and one file written by a small real hyperprior (committed beside it) pins the
classes its integer h_s computes. ``AECOMPRESS_REGEN_GOLDEN=1 pytest tests/test_coding.py`` writes
the synthetic ones and the residual files (versions 7 and 8) again (only ever needed when a new format
version is added).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aecompress import codec, coding
from aecompress import format as fmt
from aecompress.errors import FormatError
from aecompress.imageio import ImageData, read_image
from aecompress.latents import stored_integers
from tests.conftest import FACTORIZED, REPO

SAMPLE = REPO / "samples" / "parrots.png"

GOLDEN = Path(__file__).parent / "assets" / "golden"
REGEN = os.environ.get("AECOMPRESS_REGEN_GOLDEN") == "1"


def _latents(seed: int, shape: tuple[int, int, int], scale: float, dtype: str) -> np.ndarray:
    """Laplacian integers whose spread varies by channel and across the plane, like real latents."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    spread = scale * np.exp(rng.normal(0, 1, size=(c, 1, 1))) * (1 + np.hypot(*np.indices((h, w))) / 4)
    q = np.round(rng.laplace(0, 1, size=shape) * spread)
    info = np.iinfo(dtype)
    return q.clip(info.min, info.max).astype(dtype)


def _header(q: np.ndarray, stride: int = 16) -> fmt.AecHeader:
    c, h, w = q.shape
    return fmt.AecHeader(
        width=w * stride - 3, height=h * stride - 5, mode="RGB", source_mode="RGB", source_bits=8,
        quality=50, model_name="golden", model_hash=bytes(range(16)), stride=stride, channels=c,
        latent_height=h, latent_width=w, dtype=q.dtype, step=1.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("shape", "scale", "dtype"),
    [
        ((100, 7, 9), 0.3, "int8"),
        ((100, 7, 9), 3.0, "int8"),
        ((100, 5, 4), 40.0, "int8"),
        ((3, 2, 2), 1.0, "int8"),
        ((1, 1, 1), 5.0, "int8"),
        ((20, 6, 5), 2000.0, "<i2"),
    ],
)
def test_tensors_round_trip_exactly(shape: tuple[int, int, int], scale: float, dtype: str) -> None:
    q = _latents(1, shape, scale, dtype)
    for tensor in (coding.encode_streams(q), coding.encode_one_frame(q), coding.encode_tensor(q)):
        np.testing.assert_array_equal(coding.decode_tensor(tensor, q.dtype), q)


def test_extremes_and_escapes_round_trip() -> None:
    q = np.zeros((9, 3, 4), dtype="<i2")
    q[0, 0, :4] = [32767, -32768, 256, -257]  # magnitudes past one byte: the escape stream
    q[4, 1, 1], q[8, 2, 3] = 255, -2
    tensor = coding.encode_streams(q)
    assert tensor.raw_sizes[coding.ESC] == 2 * 3  # 32767, -32768 and -257 go past 256
    np.testing.assert_array_equal(coding.decode_tensor(tensor, q.dtype), q)
    zeros = np.zeros((100, 4, 4), np.int8)
    empty = coding.encode_streams(zeros)
    assert [i for i, f in enumerate(empty.frames) if f] == [0]  # all in class 0: one sig stream
    np.testing.assert_array_equal(coding.decode_tensor(empty, zeros.dtype), zeros)


def test_classes_come_only_from_channels_stored_before() -> None:
    q = _latents(3, (30, 6, 6), 2.0, "int8")
    classes = coding.context_classes(q)
    changed = q.copy()
    changed[12:] = 0  # what follows channel 11 cannot change the classes of channels 0..12
    np.testing.assert_array_equal(coding.context_classes(changed)[:13], classes[:13])
    assert not np.array_equal(coding.context_classes(changed)[13:21], classes[13:21])
    assert classes[0].max() == 0 and classes.max() <= coding.CLASSES - 1


def test_thresholds_match_the_documented_scale() -> None:
    """Class k starts where floor(1.5 * log2(sum + 1)) reaches k: checked against floats here,
    where the rounding of log2 cannot matter (the coder itself never uses floats)."""
    sums = np.arange(0, 10000)
    expected = np.minimum(np.floor(1.5 * np.log2(sums + 1) + 1e-9), coding.CLASSES - 1)
    np.testing.assert_array_equal(np.searchsorted(coding.THRESHOLDS, sums, side="right"), expected)


def _reference_classes(stored: np.ndarray) -> np.ndarray:
    """Classes as docs/format.md defines them, computed the slow, obvious way."""
    mags = np.abs(stored.astype(np.int64))
    out = np.zeros(stored.shape, np.uint8)
    for c in range(stored.shape[0]):
        window = np.pad(mags[max(0, c - coding.CONTEXT_CHANNELS) : c].sum(axis=0), 1)
        sums = sum(
            window[dy : dy + stored.shape[1], dx : dx + stored.shape[2]] for dy in range(3) for dx in range(3)
        )
        out[c] = np.searchsorted(coding.THRESHOLDS, sums, side="right")
    return out


def test_fast_classes_binarization_and_threaded_compression_match_the_plain_definitions() -> None:
    q = _latents(4, (48, 27, 33), 30.0, "<i2")  # window sums far past the last threshold, escapes
    classes = coding.context_classes(q)
    np.testing.assert_array_equal(classes, _reference_classes(q))
    mags = np.abs(q.astype(np.int64))
    raw = coding.binarize(q, classes)
    for k in range(coding.CLASSES):
        values = mags[classes == k]
        assert raw[k] == np.packbits(values > 0).tobytes()
        assert raw[coding.CLASSES + k] == np.packbits(values[values > 0] > 1).tobytes()
    given = (np.arange(q.size).reshape(q.shape) * 7 % 5).astype(np.uint8)
    classed = coding.binarize_classed(q, given, 5)
    for k in range(5):
        values = mags[given == k]
        assert classed[k] == np.packbits(values > 0).tobytes()
        assert classed[2 * 5 + k] == np.minimum(values[values > 1] - 2, 255).astype(np.uint8).tobytes()
    assert sum(map(len, raw)) >= coding.PARALLEL_FROM  # large enough to take the threaded path
    assert coding.compress_streams(raw, 1, workers=2) == coding.compress_streams(raw, 1)


@pytest.mark.parametrize("quality", [50, 75])
def test_bundled_latents_of_a_photo_cost_less_than_in_one_frame(quality: float) -> None:
    """The bundled model on the sample photo: the context streams take at least 8% fewer bytes
    than the single frame of version 3 (Kodak: 11-12%, benchmarks/entropy.py)."""
    image = read_image(SAMPLE)
    aec = fmt.unpack(codec.encode(image, FACTORIZED, quality, "cpu").data)
    q = stored_integers(aec)
    one_frame = len(coding.compress_payload(coding.plain_bytes(q[aec.order])))
    assert aec.tensors[0].scheme == coding.SCHEME_CHANNEL_CONTEXT
    assert aec.tensors[0].coded_bytes < 0.92 * one_frame


def test_streams_zstd_cannot_shrink_are_stored_as_they_are() -> None:
    q = _latents(6, (100, 3, 4), 1.0, "int8")  # tiny streams: a frame header outweighs them
    tensor = coding.encode_streams(q)
    raw = coding.binarize(q, coding.context_classes(q))
    stored = [
        i for i, (f, r) in enumerate(zip(tensor.frames, tensor.raw_sizes, strict=True)) if f and len(f) == r
    ]
    assert stored and all(tensor.frames[i] == raw[i] for i in stored)
    framed = [
        coding._compressor(coding.DEFAULT_DICTIONARIES, i).compress(r) if r else b""
        for i, r in enumerate(raw)
    ]
    assert tensor.coded_bytes < sum(map(len, framed))
    np.testing.assert_array_equal(coding.decode_tensor(tensor, q.dtype), q)


def test_nearly_empty_latents_fall_back_to_one_frame() -> None:
    """On a flat image nearly every latent is zero: the streams' framing would cost more than
    the contexts save, so the writer keeps the single frame (never larger than version 3)."""
    flat = ImageData(np.full((64, 96, 3), 128, np.uint8), None, "RGB")
    aec = fmt.unpack(codec.encode(flat, FACTORIZED, 30, "cpu").data)
    q = stored_integers(aec)
    tensor = aec.tensors[0]
    assert tensor.scheme == coding.SCHEME_ONE_FRAME
    assert tensor.frames[0] == coding.compress_payload(coding.plain_bytes(q[aec.order]))
    streams = coding.encode_streams(q[aec.order])  # what the writer compared it with
    assert streams.coded_bytes + streams.table_bytes >= tensor.coded_bytes + tensor.table_bytes


def test_streams_must_hold_exactly_the_symbols_of_the_grid() -> None:
    q = _latents(2, (12, 4, 5), 2.0, "int8")
    raw = coding.binarize(q, coding.context_classes(q))
    short = list(raw)
    short[coding.SIGN] = raw[coding.SIGN][:-1]
    with pytest.raises(FormatError, match="ends early"):
        coding.unbinarize(short, q.shape)
    long = list(raw)
    long[coding.REST] = raw[coding.REST] + b"\x00"
    with pytest.raises(FormatError, match="left over"):
        coding.unbinarize(long, q.shape)


def test_damaged_dictionary_set_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    coding.dictionaries.cache_clear()
    monkeypatch.setitem(coding.DICTIONARY_SHA256, 1, "0" * 64)
    try:
        with pytest.raises(Exception, match="damaged"):
            coding.dictionaries(1)
    finally:
        coding.dictionaries.cache_clear()
    with pytest.raises(FormatError, match="unknown stream dictionary set"):
        coding.dictionaries(77)


# --- given classes (the hyperprior's scale classes): scheme 2, and scheme 3's groups ---------

SCALE_K = 20


def _scale_classes(shape: tuple[int, int, int]) -> np.ndarray:
    """Fixed classes in 0..18 (class 19 stays empty), arithmetic so that any machine makes them."""
    c, h, w = np.indices(shape)
    return ((c * 7 + h * 3 + w * 5) % (SCALE_K - 1)).astype(np.int64)


def _sparse_by_class(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Latents as a hyperprior makes them at a low rate: spread rising with the class, most zero."""
    classes = _scale_classes(shape)
    rng = np.random.default_rng(seed)
    q = np.round(rng.laplace(0, 1, size=shape) * 2.0 ** (classes / 4 - 3.5)).astype(np.int8)
    return q, classes


@pytest.mark.parametrize(
    ("shape", "scale", "dtype"),
    [
        ((100, 9, 12), 0.3, "int8"),
        ((100, 9, 12), 8.0, "int8"),
        ((20, 6, 5), 2000.0, "<i2"),
        ((1, 1, 1), 5.0, "int8"),
    ],
)
def test_grouped_classes_round_trip_and_never_cost_more_than_a_stream_per_class(
    shape: tuple[int, int, int], scale: float, dtype: str
) -> None:
    q = _latents(7, shape, scale, dtype)
    classes = _scale_classes(shape)
    grouped = coding.encode_grouped(q, classes, SCALE_K, coding.SCALE_CLASS_DICTIONARIES)
    # the kinds' merge trials on two threads: the same groups, frames and sizes
    assert coding.encode_grouped(q, classes, SCALE_K, coding.SCALE_CLASS_DICTIONARIES, workers=2) == grouped
    alone = coding.encode_classed(q, classes, SCALE_K, coding.SCALE_CLASS_DICTIONARIES)
    for tensor in (grouped, alone):
        np.testing.assert_array_equal(coding.decode_classed(tensor, classes, SCALE_K), q)
        back = fmt._parse_tensors(fmt.tensor_table([tensor]))[0]  # through the file's table
        np.testing.assert_array_equal(coding.decode_classed(back, classes, SCALE_K), q)
    group_map = grouped.coded_bytes - sum(map(len, grouped.frames[1:])) + 2  # its bytes and sizes
    assert grouped.coded_bytes + grouped.table_bytes <= alone.coded_bytes + alone.table_bytes + group_map


def test_class_order_in_small_chunks_is_the_stable_sort_and_round_trips(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The parse's class order is numpy's stable sort by class, with each class's start; with
    chunks of 7 latents or 1 a tensor writes the same streams (the packed bits carried across
    chunks) and parses exactly."""
    q = _latents(11, (100, 6, 7), 2.0, "int8")
    classes = _scale_classes(q.shape)
    want = np.argsort(classes.ravel(), kind="stable")
    whole = coding.encode_grouped(q, classes, SCALE_K, coding.SCALE_CLASS_DICTIONARIES)
    wide = _latents(12, (100, 6, 7), 90.0, "int16")  # escapes, cut across chunks too
    wide_whole = coding.encode_classed(wide, classes, SCALE_K, coding.SCALE_CLASS_DICTIONARIES)
    order, edges = coding._sorted_by_class(classes.ravel(), SCALE_K)
    np.testing.assert_array_equal(order, want)
    np.testing.assert_array_equal(edges, np.searchsorted(classes.ravel()[want], np.arange(SCALE_K + 1)))
    np.testing.assert_array_equal(np.diff(edges), np.bincount(classes.ravel(), minlength=SCALE_K))
    for chunk in (7, 1):  # streams cut a few latents at a time are the whole tensor's, bit for bit
        monkeypatch.setattr(coding, "ORDER_CHUNK", chunk)
        tensor = coding.encode_grouped(q, classes, SCALE_K, coding.SCALE_CLASS_DICTIONARIES)
        assert tensor == whole
        np.testing.assert_array_equal(coding.decode_classed(tensor, classes, SCALE_K), q)
        assert coding.encode_classed(wide, classes, SCALE_K, coding.SCALE_CLASS_DICTIONARIES) == wide_whole


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_a_parse_in_chunks_of_any_size_gives_the_same_integers_in_the_header_dtype(
    monkeypatch: pytest.MonkeyPatch, dtype: str
) -> None:
    """The rebuild runs a chunk of latents at a time, each class's readers going on where the
    chunk before left them: chunks of 1, 7, 64 latents or the whole tensor give the same integers,
    for grouped (scheme 3) and one-class (scheme 2) streams, escapes included, already in the
    header's dtype; a value outside that dtype is refused."""
    q = _latents(12, (100, 9, 11), 40.0 if dtype == "int16" else 3.0, dtype)
    if dtype == "int16":
        q[3, 2, 4], q[50, 8, 10] = 700, -32768  # past the rest byte: the escape stream
    else:
        q[7, 1, 1] = -128  # the type's one magnitude that fits only when negative
    classes = _scale_classes(q.shape)
    tensors = [
        coding.encode_grouped(q, classes, SCALE_K, coding.SCALE_CLASS_DICTIONARIES),
        coding.encode_classed(q, classes, SCALE_K, coding.SCALE_CLASS_DICTIONARIES),
    ]
    for chunk in (1, 7, 64, 1 << 22):
        monkeypatch.setattr(coding, "REBUILD_CHUNK", chunk)
        for tensor in tensors:
            back = coding.decode_classed(tensor, classes, SCALE_K, np.dtype(dtype))
            assert back.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(back, q)
    if dtype == "int16":
        with pytest.raises(FormatError, match="outside the header's int8 range"):
            coding.decode_classed(tensors[0], classes, SCALE_K, np.dtype("int8"))
    else:
        flipped = -q.astype(np.int16)  # the -128s become 128: refused
        flipped = coding.encode_grouped(flipped, classes, SCALE_K, coding.SCALE_CLASS_DICTIONARIES)
        with pytest.raises(FormatError, match="outside the header's int8 range"):
            coding.decode_classed(flipped, classes, SCALE_K, np.dtype("int8"))


def test_class_streams_cut_short_or_left_long_are_refused_in_every_chunking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each class's reader starts where its class begins in its group's stream, counted from
    the kind before; a stream one byte short or one byte long is refused, whatever the chunk."""
    import dataclasses

    q, classes = _sparse_by_class((100, 6, 8), seed=13)
    q[0, 0, 0] = 90  # a magnitude above one in an early class: a rest stream to damage
    alone = coding.encode_classed(q, classes, SCALE_K, coding.SCALE_CLASS_DICTIONARIES)
    raw = coding.decompress_streams(alone.frames, alone.raw_sizes, alone.dictionaries)
    cases = []
    for i, stream in enumerate(raw[:-2]):
        if not stream:
            continue
        for damaged in (stream[:-1], stream + b"\0"):
            streams = [*raw[:i], damaged, *raw[i + 1 :]]
            frames = coding.compress_streams(streams, coding.SCALE_CLASS_DICTIONARIES)
            sizes = tuple(len(r) for r in streams)
            cases.append(dataclasses.replace(alone, frames=tuple(frames), raw_sizes=sizes))
    assert len(cases) > 20
    for chunk in (5, 1 << 22):
        monkeypatch.setattr(coding, "REBUILD_CHUNK", chunk)
        for tensor in cases:
            with pytest.raises(FormatError, match=r"ends early|left over"):
                coding.decode_classed(tensor, classes, SCALE_K)


def test_grouping_shrinks_sparse_latents_and_each_group_holds_its_classes_in_order() -> None:
    q, classes = _sparse_by_class((100, 12, 16), seed=8)
    grouped = coding.encode_grouped(q, classes, SCALE_K, coding.SCALE_CLASS_DICTIONARIES)
    alone = coding.encode_classed(q, classes, SCALE_K, coding.SCALE_CLASS_DICTIONARIES)
    assert grouped.coded_bytes + grouped.table_bytes < 0.9 * (alone.coded_bytes + alone.table_bytes)
    flags = np.unpackbits(np.frombuffer(grouped.frames[0], np.uint8))[: 3 * SCALE_K].reshape(3, SCALE_K)
    assert flags[:, 0].all() and flags.sum() < 3 * SCALE_K  # some classes share a stream
    raw = coding.decompress_streams(
        grouped.frames[1:-2], grouped.raw_sizes[1:-2], grouped.dictionaries,
        dictionary_of=[kind * SCALE_K + int(k) for kind in range(3) for k in np.flatnonzero(flags[kind])],
    )  # fmt: skip
    mags = np.abs(q.astype(np.int64))
    firsts = list(np.flatnonzero(flags[0]))
    for stream, first, end in zip(raw, firsts, [*firsts[1:], SCALE_K], strict=False):
        want = [mags[classes == k] > 0 for k in range(first, end)]  # class by class, flat order
        assert stream == np.packbits(np.concatenate(want)).tobytes()


def test_damaged_group_maps_and_streams_are_refused() -> None:
    import dataclasses

    q, classes = _sparse_by_class((100, 6, 8), seed=9)
    good = coding.encode_grouped(q, classes, SCALE_K, coding.SCALE_CLASS_DICTIONARIES)
    group_map = bytearray(good.frames[0])

    def with_map(data: bytes) -> coding.CodedTensor:
        return dataclasses.replace(
            good, frames=(data, *good.frames[1:]), raw_sizes=(len(data), *good.raw_sizes[1:])
        )

    no_first = bytearray(group_map)
    no_first[0] &= 0x7F  # sig's first group must start at class 0
    padded = bytearray(group_map)
    padded[-1] |= 0x01  # a bit past the 60 that mean something
    split = bytearray(group_map)
    split[0] |= 0x40  # one more group than there are streams
    for tensor, match in (
        (with_map(bytes(no_first)), "group map"),
        (with_map(bytes(padded)), "group map"),
        (with_map(bytes(split)), "groups"),
        (with_map(bytes(group_map[:-1])), "group map"),
        (dataclasses.replace(good, frames=good.frames[:-1], raw_sizes=good.raw_sizes[:-1]), "groups"),
        (dataclasses.replace(good, raw_sizes=(*good.raw_sizes[:1], 10**6, *good.raw_sizes[2:])), "more than"),
        (dataclasses.replace(good, frames=(*good.frames[:-2], good.frames[-2] + b"x", good.frames[-1])), "."),
    ):
        with pytest.raises(FormatError, match=match):
            coding.decode_classed(tensor, classes, SCALE_K)
    with pytest.raises(FormatError, match="class the latents have no streams for"):
        coding.decode_classed(good, np.full(q.shape, SCALE_K), SCALE_K)


def test_scheme_3_is_written_as_version_5_and_refused_in_an_older_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    q, classes = _sparse_by_class((100, 3, 4), seed=10)
    tensor = coding.encode_grouped(q, classes, SCALE_K, coding.SCALE_CLASS_DICTIONARIES)
    header = _header(q)
    assert fmt.unpack(fmt.pack(header, [tensor])).header.version == 5
    assert fmt.unpack(fmt.pack(header, [coding.encode_streams(q)])).header.version == 4
    monkeypatch.setattr(fmt, "GROUPED_VERSION", 4)  # a writer that labels scheme 3 as version 4
    mislabelled = fmt.pack(header, [tensor])
    monkeypatch.undo()
    with pytest.raises(FormatError, match="needs format version 5"):
        fmt.unpack(mislabelled)


# --- golden files of every version ------------------------------------------------------------


def _golden_sources() -> dict[str, list[np.ndarray]]:
    """The integers each golden file was made from, rebuilt from their seeds: what every decoder
    must give back (the latents, then the hyper-latents where the file has them)."""
    q8 = _latents(11, (100, 3, 4), 1.5, "int8")
    q16 = _latents(12, (100, 3, 4), 150.0, "<i2")
    sparse, _ = _sparse_by_class((100, 3, 4), seed=13)
    z = _latents(14, (8, 1, 1), 3.0, "<i2")
    return {"v1.aec": [q8], "v2.aec": [q8], "v3.aec": [q16], "v4.aec": [q8], "v5.aec": [sparse, z]}


def _golden_files() -> dict[str, bytes]:
    """One small file per format version, made from the fixed integers of ``_golden_sources``."""
    sources = _golden_sources()
    q8, q16 = sources["v1.aec"][0], sources["v3.aec"][0]
    sparse, z = sources["v5.aec"]
    order = np.argsort(q8.reshape(100, -1).std(axis=1), kind="stable")
    header = _header(q8)
    v4 = fmt.pack(header, [coding.encode_streams(q8[order])], order=order)
    classes = _scale_classes(sparse.shape)
    v5 = fmt.pack(
        _header(sparse),
        [
            coding.encode_tensor(z, role=coding.ROLE_HYPER_LATENTS),
            coding.encode_grouped(sparse, classes, SCALE_K, coding.SCALE_CLASS_DICTIONARIES),
        ],
    )
    return {
        "v1.aec": fmt.pack_legacy(header, q8, version=1),
        "v2.aec": fmt.pack_legacy(header, q8, order=order),
        "v3.aec": fmt.pack_legacy(_header(q16), q16, order=order),
        "v4.aec": v4,
        "v5.aec": v5,
    }


def _decoded_integers(data: bytes) -> list[np.ndarray]:
    """A golden file's integers as a decoder reads them; latents coded by scale classes are
    parsed with the fixed classes they were written with (a hyperprior's decoder computes them
    from z: ``test_golden_hyperprior_file_...`` covers that)."""
    aec = fmt.unpack(data)
    latents = next((t for t in aec.tensors if t.role == coding.ROLE_LATENTS), None)
    if latents is not None and latents.scheme == coding.SCHEME_GROUPED_CLASSES:
        q = coding.decode_classed(latents, _scale_classes(latents.shape), SCALE_K).astype(aec.header.dtype)
        z = coding.decode_tensor(
            next(t for t in aec.tensors if t.role == coding.ROLE_HYPER_LATENTS), np.dtype("<i2")
        )
        return [q, z]
    return [stored_integers(aec)]


def _latent_hash(data: bytes) -> str:
    """The decoded integers' SHA-256 (pinned in expected.json)."""
    parts = [q.astype("<i4") for q in _decoded_integers(data)]
    flat = np.concatenate([q.ravel() for q in parts]).reshape(1, 1, -1) if len(parts) > 1 else parts[0]
    return hashlib.sha256(flat.tobytes() + str(flat.shape).encode()).hexdigest()


def test_golden_files_of_every_version_decode_to_the_integers_they_were_made_from() -> None:
    """Against the source integers (rebuilt from their seeds) and against the hashes pinned when
    the files were written; the files themselves are never rewritten by the test run."""
    expected_path = GOLDEN / "expected.json"
    if REGEN:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        files = _golden_files()
        for name, data in files.items():
            (GOLDEN / name).write_bytes(data)
        pinned = json.loads(expected_path.read_text()) if expected_path.is_file() else {}
        pinned.update({name: {"version": fmt.unpack(d).header.version, "latents_sha256": _latent_hash(d)}
                       for name, d in files.items()})  # fmt: skip
        expected_path.write_text(json.dumps(pinned, indent=2) + "\n")
    pinned = json.loads(expected_path.read_text())
    assert sorted({v["version"] for v in pinned.values()}) == list(range(1, fmt.FORMAT_VERSION + 1))
    for name, source in _golden_sources().items():
        data = (GOLDEN / name).read_bytes()
        assert fmt.unpack(data).header.version == pinned[name]["version"]
        decoded = _decoded_integers(data)
        assert len(decoded) == len(source), name
        for got, want in zip(decoded, source, strict=True):
            np.testing.assert_array_equal(got.astype(np.int64), want.astype(np.int64), err_msg=name)
        assert _latent_hash(data) == pinned[name]["latents_sha256"], name


def test_golden_hyperprior_file_parses_with_its_models_integer_h_s_to_the_pinned_integers() -> None:
    """A file written by a real hyperprior (a small one, committed beside it): its classes come
    from the model's exact integer h_s, so a change to ``scale_classes`` or the integer network
    that would break old files fails here. Pixels may differ in the last bit between machines
    (the synthesis runs in floats), the integers never."""
    from aecompress.modelfile import load_model

    pinned = json.loads((GOLDEN / "expected.json").read_text())["v5-hyperprior.aec"]
    data = (GOLDEN / "v5-hyperprior.aec").read_bytes()
    aec = fmt.unpack(data)
    net, info = load_model(GOLDEN / "hyperprior-small.pt")
    assert aec.header.model_hash == info.weights_hash and aec.header.version == pinned["version"]
    z_tensor = next(t for t in aec.tensors if t.role == coding.ROLE_HYPER_LATENTS)
    z = coding.decode_tensor(z_tensor, np.dtype("<i2"))
    classes = net.scale_classes(z, (aec.header.latent_height, aec.header.latent_width))
    assert hashlib.sha256(classes.astype(np.uint8).tobytes()).hexdigest() == pinned["classes_sha256"]
    assert len(np.unique(classes)) >= 4  # classes that vary, as a trained h_s makes them
    y = coding.decode_classed(
        next(t for t in aec.tensors if t.role == coding.ROLE_LATENTS), classes, net.scale_class_count
    )
    assert hashlib.sha256(y.astype("<i4").tobytes()).hexdigest() == pinned["latents_sha256"]
    back = codec.decode(data, "cpu", GOLDEN / "hyperprior-small.pt").rgb
    reference = read_image(GOLDEN / "v5-hyperprior.png").rgb
    assert np.abs(back.astype(int) - reference.astype(int)).max() <= 1


def test_golden_v4_parses_identically_under_other_thread_settings() -> None:
    """The parse uses no threads and no floats; a fresh process with other settings agrees."""
    data = (GOLDEN / "v4.aec").read_bytes()
    here = _latent_hash(data)
    script = (
        "import sys; from tests.test_coding import _latent_hash; "
        "print(_latent_hash(open(sys.argv[1], 'rb').read()))"
    )
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        out = subprocess.run(
            [sys.executable, "-c", script, str(GOLDEN / "v4.aec")],
            capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent, check=True,
        )  # fmt: skip
        assert out.stdout.strip() == here


@pytest.mark.parametrize("chunk", [1 << 22, 37])
def test_classed_entropy_is_the_sum_of_each_class_order_0_entropy(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked against a plain count per class, counted in one piece or in chunks of 37, over
    int8's whole range; and the coded streams of the same integers are never smaller than it
    by more than their framing can explain (zstd cannot beat order-0 on independent symbols by
    much)."""
    import collections
    import math

    monkeypatch.setattr(coding, "ORDER_CHUNK", chunk)
    rng = np.random.default_rng(5)
    classes = rng.integers(0, 6, size=(4, 30, 40)).astype(np.uint8)
    values = np.round(rng.laplace(0, 0.3 + classes, size=classes.shape)).astype(np.int8)
    values[0, 0, :3] = [-128, 127, -127]
    expected = 0.0
    for k in range(6):
        counts = collections.Counter(values[classes == k].tolist())
        total = sum(counts.values())
        expected -= sum(n * math.log2(n / total) for n in counts.values())
    got = coding.classed_entropy_bytes(values, classes, 6)
    assert got == pytest.approx(expected / 8, rel=1e-9)
    coded = coding.encode_grouped(values, classes, 6).coded_bytes
    assert 0.9 * got < coded < 1.5 * got
    assert coding.classed_entropy_bytes(np.zeros((1, 0, 0), np.int8), np.zeros((1, 0, 0), np.uint8), 6) == 0.0


def test_golden_context_file_parses_slice_by_slice_to_the_pinned_integers() -> None:
    """Format version 6, written by a small context model (committed beside it): each slice's
    classes and means come from its exact integer networks and the slices before it; the
    pinned hashes hold both, so a change to either that would break old files fails here."""
    from aecompress.latents import MEAN_SHIFT, accumulator_classes
    from aecompress.modelfile import load_model

    pinned = json.loads((GOLDEN / "expected.json").read_text())["v6-context.aec"]
    data = (GOLDEN / "v6-context.aec").read_bytes()
    aec = fmt.unpack(data)
    net, info = load_model(GOLDEN / "context-small.pt")
    assert aec.header.model_hash == info.weights_hash and aec.header.version == pinned["version"] == 6
    hyper = next(t for t in aec.tensors if t.role == coding.ROLE_HYPER_LATENTS)
    z = coding.decode_tensor(hyper, np.dtype("<i2"))
    log2_acc, mean_acc = net.integer_hyper(z, (aec.header.latent_height, aec.header.latent_width))
    decoded: list[np.ndarray] = []
    classes = []
    for k in range(net.slices):
        part = slice(k * net.slice_width, (k + 1) * net.slice_width)
        log2, mean = net.integer_slice(k, log2_acc[part], mean_acc[part], decoded)
        classes.append(accumulator_classes(log2, net.scale_class_count))
        tensor = next(t for t in aec.tensors if t.role == coding.ROLE_SLICE + k)
        symbols = coding.decode_classed(tensor, classes[-1], net.scale_class_count).astype(np.int64)
        decoded.append(symbols * 256 + (mean >> MEAN_SHIFT))
    assert hashlib.sha256(np.concatenate(classes).tobytes()).hexdigest() == pinned["classes_sha256"]
    assert (
        hashlib.sha256(np.concatenate(decoded).astype("<i8").tobytes()).hexdigest()
        == pinned["latents_sha256"]
    )
    back = codec.decode(data, "cpu", GOLDEN / "context-small.pt").rgb
    reference = read_image(GOLDEN / "v6-context.png").rgb
    assert np.abs(back.astype(int) - reference.astype(int)).max() <= 1


def _write_residual_golden(name: str, classed: bool) -> None:
    """Version 7: a drawn image coded by the small hyperprior with a residual of step 8 in one
    zstd frame; version 8: a noisy photo-like one with a residual of step 4 coded by classes
    (run only under AECOMPRESS_REGEN_GOLDEN=1; the pixels it restores are pinned beside it)."""
    import torch

    from aecompress import pack, passes, residual, synthetic
    from aecompress.imageio import encode_image_bytes

    cpu = torch.device("cpu")
    model = GOLDEN / "hyperprior-small.pt"
    if classed:
        rng = np.random.default_rng(8)
        ramp = np.linspace(40, 200, 56)[None, :, None] + np.linspace(0, 30, 40)[:, None, None]
        rgb = np.clip(ramp + rng.normal(0, 12, (40, 56, 3)), 0, 255).astype(np.uint8)
    else:
        rgb = synthetic.render("comic", 7, 56, 40)
    image = ImageData(rgb, None, "RGB")
    net, info = passes.model_on(model, cpu)
    latents = passes.analyse(net, image.rgb, cpu)
    data, _ = pack.pack_latents(
        net, info.name, info.weights_hash, image, latents, 40.0, None, None if classed else 8.0, cpu
    )
    if classed:  # a residual this small would take the single frame: the classes asked for outright
        plain = fmt.unpack(data)
        chunk = residual.make(rgb, codec.decode(data, "cpu", model).rgb, 4.0, classed=True)
        data = fmt.pack(plain.header, list(plain.tensors), None, None, None, plain.order, chunk)
    (GOLDEN / f"{name}.aec").write_bytes(data)
    restored = codec.decode(data, "cpu", model)
    (GOLDEN / f"{name}.png").write_bytes(encode_image_bytes(restored, "PNG"))
    aec = fmt.unpack(data)
    values = aec.residual_array()
    assert values is not None and aec.residual is not None and aec.residual.classed == classed
    expected_path = GOLDEN / "expected.json"
    pinned = json.loads(expected_path.read_text())
    pinned[f"{name}.aec"] = {
        "version": aec.header.version,
        "residual_step": aec.residual.step,
        "residual_sha256": hashlib.sha256(values.tobytes()).hexdigest(),
    }
    expected_path.write_text(json.dumps(pinned, indent=2) + "\n")


@pytest.mark.parametrize(
    ("name", "version"),
    [("v7-residual", fmt.RESIDUAL_VERSION), ("v8-classed-residual", fmt.CLASSED_RESIDUAL_VERSION)],
)
def test_golden_residual_file_parses_its_residual_to_the_pinned_values(name: str, version: int) -> None:
    """Format version 7: a hyperprior file with a pixel residual (RESD) in one zstd frame;
    version 8: one coded by classes. The residual's int8 values and step are pinned; the
    restored pixels, which move with the synthesis's floats, may differ by one level from
    those written with it."""
    if REGEN:
        _write_residual_golden(name, version == fmt.CLASSED_RESIDUAL_VERSION)
    pinned = json.loads((GOLDEN / "expected.json").read_text())[f"{name}.aec"]
    data = (GOLDEN / f"{name}.aec").read_bytes()
    aec = fmt.unpack(data)
    assert aec.header.version == pinned["version"] == version
    assert aec.residual is not None and aec.residual.step == pinned["residual_step"]
    assert aec.residual.classed == (version == fmt.CLASSED_RESIDUAL_VERSION)
    values = aec.residual_array()
    assert values is not None and values.shape == (aec.header.height, aec.header.width, 3)
    assert np.count_nonzero(values) > 0  # a residual that changes pixels, not an empty chunk
    assert hashlib.sha256(values.tobytes()).hexdigest() == pinned["residual_sha256"]
    assert fmt.describe(aec)["residual_step"] == pinned["residual_step"]
    assert fmt.describe(aec)["residual_coding"] == (
        "classes in 1 band" if aec.residual.classed else "one zstd frame"
    )
    back = codec.decode(data, "cpu", GOLDEN / "hyperprior-small.pt").rgb
    reference = read_image(GOLDEN / f"{name}.png").rgb
    assert np.abs(back.astype(int) - reference.astype(int)).max() <= 1


def test_parts_compress_to_one_frame_of_their_whole_small_or_streamed():
    """``coding.compress_parts``: a small payload gets ``compress_payload``'s very frame; a large
    one (over 4 MiB) is streamed part by part into one frame that declares its whole size."""
    rng = np.random.default_rng(8)
    small = [rng.integers(-3, 4, 1000).astype(np.int8).tobytes() for _ in range(5)]
    assert coding.compress_parts(iter(small), 5000) == coding.compress_payload(b"".join(small))
    large = [rng.integers(-3, 4, 1 << 20).astype(np.int8).tobytes() for _ in range(5)]
    frame = coding.compress_parts(iter(large), 5 << 20)
    assert fmt.inflate(frame, 5 << 20, "parts") == b"".join(large)
    assert len(frame) < (5 << 20) // 2  # compressed, not stored


@pytest.mark.parametrize("shape", [(3, 1, 1), (3, 1, 5), (3, 2, 3), (3, 7, 9), (3, 64, 80)])
def test_a_residual_coded_by_classes_rebuilds_every_value(shape: tuple[int, int, int]) -> None:
    """Scheme 4: the four phases and three channels each take classes from what came before, the
    same way on both sides; values to ±127, grids of one row or column included."""
    rng = np.random.default_rng(sum(shape))
    scale = np.where(rng.random(shape[1:]) < 0.3, 40.0, 1.5)
    values = np.clip(np.rint(rng.laplace(0, 1, shape) * scale), -127, 127).astype(np.int8)
    values.flat[0], values.flat[-1] = 127, -127
    tensor = coding.encode_residual(values, role=3, workers=2)
    assert tensor.scheme == coding.SCHEME_RESIDUAL_PHASES and tensor.role == 3 and tensor.shape == shape
    assert coding.encode_residual(values, role=3).frames == tensor.frames  # the same bytes on one thread
    back = coding.decode_residual(tensor)
    assert back.dtype == np.int8 and np.array_equal(back, values)


def test_a_residual_stream_that_claims_too_much_or_too_little_is_refused() -> None:
    values = np.random.default_rng(4).integers(-3, 4, (3, 16, 16)).astype(np.int8)
    tensor = coding.encode_residual(values)
    for bad, message in (
        (dataclasses.replace(tensor, scheme=1), "not 4"),
        (dataclasses.replace(tensor, frames=tensor.frames[:-1], raw_sizes=tensor.raw_sizes[:-1]), "streams"),
        (dataclasses.replace(tensor, raw_sizes=(10_000, *tensor.raw_sizes[1:])), "more than"),
    ):
        with pytest.raises(FormatError, match=message):
            coding.decode_residual(bad)
    hostile = coding.encode_residual(np.full((3, 4, 4), 200, np.int16))  # past int8: refused when read
    with pytest.raises(FormatError, match="outside"):
        coding.decode_residual(hostile)
