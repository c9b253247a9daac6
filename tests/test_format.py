"""The .aec container on its own: round trip, header fields, and each kind of damage."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest

from aecompress import coding
from aecompress import format as fmt
from aecompress.errors import ChecksumError, FormatError, TruncatedError, VersionError
from aecompress.latents import stored_integers


def _header(**changes: object) -> fmt.AecHeader:
    base = dict(
        width=40, height=20, mode="RGBA", source_mode="P", source_bits=8, quality=75,
        model_name="default", model_hash=bytes(range(16)), stride=16, channels=100,
        latent_height=2, latent_width=3, dtype=np.dtype(np.int8), step=1.0,
    )  # fmt: skip
    base.update(changes)
    return fmt.AecHeader(**base)  # type: ignore[arg-type]


def _pack(
    header: fmt.AecHeader,
    latents: np.ndarray,
    alpha: np.ndarray | None = None,
    icc: bytes | None = None,
    exif: bytes | None = None,
    order: np.ndarray | None = None,
) -> bytes:
    """A version 4 file: the latents coded in their stored order, as the codec writes them."""
    stored = latents if order is None else latents[order]
    return fmt.pack(header, [coding.encode_tensor(stored)], alpha, icc, exif, order)


def _sample() -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    latents = rng.integers(-5, 6, size=(100, 2, 3)).astype(np.int8)
    alpha = rng.integers(0, 256, size=(20, 40)).astype(np.uint8)
    data = _pack(_header(), latents, alpha, icc=b"icc-profile", exif=b"Exif\x00\x00MM")
    return data, latents, alpha


def test_round_trip_keeps_every_field_and_chunk() -> None:
    data, latents, alpha = _sample()
    aec = fmt.unpack(data)
    assert aec.header == dataclasses.replace(_header(), version=4)
    np.testing.assert_array_equal(stored_integers(aec), latents)
    np.testing.assert_array_equal(aec.alpha_array(), alpha)
    assert aec.icc == b"icc-profile"
    assert aec.exif == b"Exif\x00\x00MM"
    info = fmt.describe(aec)
    assert info["latent_shape"] == [100, 2, 3]
    assert info["bytes"] == len(data)
    assert info["padding"] == [8, 12]


def test_int16_latents_round_trip_as_zigzag_byte_planes_in_version_3() -> None:
    rng = np.random.default_rng(1)
    latents = rng.integers(-3, 4, size=(100, 2, 3)).astype("<i2")
    latents[0, 0, 0], latents[1, 1, 1], latents[2, 0, 2] = -30000, 32767, -32768
    data = fmt.pack_legacy(_header(mode="RGB", dtype=np.dtype("<i2")), latents)
    aec = fmt.unpack(data)
    assert aec.header.version == 3 and aec.header.planar
    np.testing.assert_array_equal(stored_integers(aec), latents)
    assert fmt.describe(aec)["latent_dtype"] == "int16 (zigzag byte planes)"


def test_mostly_small_int16_latents_cost_about_what_int8_would() -> None:
    rng = np.random.default_rng(2)
    small = np.round(rng.laplace(0, 2, size=(100, 32, 48))).clip(-127, 127).astype(np.int8)
    wide = small.astype("<i2")
    wide[5, 3, 7] = 400  # one latent that needs 16 bits
    header = _header(mode="RGB", latent_height=32, latent_width=48, width=760, height=500)
    as_int8 = fmt.pack_legacy(header, small)
    as_int16 = fmt.pack_legacy(dataclasses.replace(header, dtype=np.dtype("<i2")), wide)
    assert len(as_int16) < 1.02 * len(as_int8)


def test_version_2_plain_int16_files_still_decode() -> None:
    latents = np.arange(-300, 300, dtype="<i2").reshape(100, 2, 3)
    data = fmt.pack_legacy(_header(mode="RGB", dtype=np.dtype("<i2")), latents)
    dtype_at = struct.calcsize(fmt._FIXED.format[:-2])  # the dtype code comes just before the step
    legacy = _rewrite_header(data, version=2, body_patch=(dtype_at, bytes([fmt.LEGACY_INT16_CODE])))
    at = legacy.index(b"LATN")
    (length,) = struct.unpack_from("<I", legacy, at + 4)
    payload = coding.compress_payload(latents.tobytes())  # version 2 stored plain little-endian int16
    legacy = legacy[:at] + fmt._chunk(b"LATN", payload) + legacy[at + 12 + length :]
    aec = fmt.unpack(legacy)
    assert aec.header.version == 2 and not aec.header.planar
    np.testing.assert_array_equal(stored_integers(aec), latents)
    # the new code in a version-2 header is refused: version 2 never wrote it
    with pytest.raises(FormatError, match="dtype code 3"):
        fmt.unpack(_rewrite_header(data, version=2))


def test_every_truncation_is_reported() -> None:
    data, _, _ = _sample()
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            fmt.unpack(data[:cut])
    with pytest.raises(TruncatedError):
        fmt.unpack(data[: len(data) - 3])


def test_wrong_magic() -> None:
    data, _, _ = _sample()
    with pytest.raises(FormatError, match="magic"):
        fmt.unpack(b"\x89PNG\r\n\x1a\n" + data[8:])


def _rewrite_header(
    data: bytes, version: int | None = None, body_patch: tuple[int, bytes] | None = None
) -> bytes:
    pos = len(fmt.SIGNATURE)
    _, body_len = struct.unpack_from("<BI", data, pos)
    head = bytearray(data[pos : pos + 5 + body_len])
    if version is not None:
        head[0] = version
    if body_patch is not None:
        offset, raw = body_patch
        head[5 + offset : 5 + offset + len(raw)] = raw
    crc = struct.pack("<I", zlib.crc32(bytes(head)))
    return data[:pos] + bytes(head) + crc + data[pos + 5 + body_len + 4 :]


def test_newer_version_is_refused_with_its_own_error() -> None:
    data, _, _ = _sample()
    newer = fmt.FORMAT_VERSION + 1
    with pytest.raises(VersionError, match=f"version {newer}"):
        fmt.unpack(_rewrite_header(data, version=newer))


def test_checksum_mismatch_in_header_and_payload() -> None:
    data, _, _ = _sample()
    broken = bytearray(data)
    broken[len(fmt.SIGNATURE) + 8] ^= 0x01
    with pytest.raises(ChecksumError):
        fmt.unpack(bytes(broken))
    broken = bytearray(data)
    broken[len(data) - 40] ^= 0x10
    with pytest.raises(ChecksumError):
        fmt.unpack(bytes(broken))


def test_headers_that_lie_about_sizes_are_refused_before_allocating() -> None:
    data, _, _ = _sample()
    huge = struct.pack("<II", 65535, 65535)
    with pytest.raises(FormatError):
        fmt.unpack(_rewrite_header(data, body_patch=(0, huge)))
    bad_grid = struct.pack("<II", 1 << 31, 1 << 31)
    with pytest.raises(FormatError):
        fmt.unpack(_rewrite_header(data, body_patch=(0, bad_grid)))


def test_pack_refuses_latents_that_disagree_with_the_header() -> None:
    with pytest.raises(FormatError):
        _pack(_header(mode="RGB"), np.zeros((100, 3, 3), np.int8))
    with pytest.raises(FormatError):
        fmt.pack_legacy(_header(mode="RGB"), np.zeros((100, 3, 3), np.int8))


def test_channel_order_round_trips_and_is_validated() -> None:
    rng = np.random.default_rng(1)
    latents = rng.integers(-9, 10, size=(100, 2, 3)).astype(np.int8)
    order = rng.permutation(100)
    data = _pack(_header(mode="RGB"), latents, order=order)
    aec = fmt.unpack(data)
    np.testing.assert_array_equal(aec.order, order)
    np.testing.assert_array_equal(stored_integers(aec), latents)
    with pytest.raises(FormatError, match="permutation"):
        _pack(_header(mode="RGB"), latents, order=np.zeros(100, dtype=int))


def test_version_1_files_without_channel_order_still_decode() -> None:
    latents = np.arange(600, dtype=np.int64).reshape(100, 2, 3).astype(np.int8)
    data = fmt.pack_legacy(_header(mode="RGB"), latents, version=1)
    aec = fmt.unpack(data)
    assert aec.header.version == 1 and aec.order is None
    np.testing.assert_array_equal(stored_integers(aec), latents)
