"""Integers <-> zstd streams: how quantized latents become the coded bytes of a file, and back.

zstd is the only entropy coder; what this module adds is the structure zstd cannot see. Every
latent gets a *class* from integers the decoder already has (its context), and each class has
its own streams, binarized so that zstd's Huffman tables fit them:

- ``sig[k]``: one bit per latent of class k (nonzero or not), packed 8 to a byte;
- ``gt1[k]``: one bit per nonzero latent of class k (magnitude above 1);
- ``sign``: one bit per nonzero latent, all classes;
- ``rest``: magnitude - 2 per latent above 1, one byte (255: the value continues in ``esc``);
- ``esc``: the rest of such magnitudes as little-endian uint16.

Each stream is one magicless zstd frame compressed with its own dictionary (a fixed, versioned
set shipped with the package: its entropy tables stand in for per-file tables, which would cost
more than the symbols of a small stream). Whatever decides the class of a latent is integer
arithmetic on already decoded integers, so a file parses identically on every machine.

The channel-context scheme (format version 4, factorized models): channels are stored sorted by
spread, and a latent's class is the 3x3 sum of the magnitudes in the 8 channels stored before
it, on a scale of 1.5 classes per octave, 12 classes. Decoding runs channel by channel, each
channel vectorized.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
import zstandard

from aecompress.errors import ChecksumError, FormatError

if TYPE_CHECKING:
    from aecompress.format import AecFile

SCHEME_CHANNEL_CONTEXT = 1
CLASSES = 12
CONTEXT_CHANNELS = 8
SIGN, REST, ESC = 2 * CLASSES, 2 * CLASSES + 1, 2 * CLASSES + 2
STREAMS = 2 * CLASSES + 3
MAX_STREAMS = 64


def _class_thresholds(classes: int) -> np.ndarray:
    """Smallest context sums of classes 1..classes-1: class k starts where (sum + 1)^3 >= 4^k,
    that is floor(1.5 * log2(sum + 1)) >= k, computed in integers."""
    out = []
    for k in range(1, classes):
        b = 0
        while (b + 1) ** 3 < 4**k:
            b += 1
        out.append(b)
    return np.array(out, dtype=np.int64)


THRESHOLDS = _class_thresholds(CLASSES)


def _box3(plane: np.ndarray) -> np.ndarray:
    """Sum over each 3x3 window (zeros outside) of the last two axes, in integers."""
    p = np.pad(plane, [(0, 0)] * (plane.ndim - 2) + [(1, 1), (1, 1)])
    h, w = plane.shape[-2:]
    out = np.zeros_like(plane)
    for dy in range(3):
        for dx in range(3):
            out += p[..., dy : dy + h, dx : dx + w]
    return out


def context_classes(stored: np.ndarray) -> np.ndarray:
    """The class of every latent of a (C, H, W) integer tensor in stored channel order."""
    mags = np.abs(stored.astype(np.int64))
    cum = np.concatenate([np.zeros((1, *mags.shape[1:]), np.int64), np.cumsum(mags, axis=0)])
    idx = np.arange(stored.shape[0])
    window = cum[idx] - cum[np.maximum(idx - CONTEXT_CHANNELS, 0)]
    return np.searchsorted(THRESHOLDS, _box3(window), side="right").astype(np.uint8)


def binarize(stored: np.ndarray, classes: np.ndarray) -> list[bytes]:
    """The raw (uncompressed) streams of a tensor in stored order, given each latent's class."""
    v = stored.astype(np.int64)
    mags = np.abs(v)
    streams: list[bytes] = []
    gt1: list[bytes] = []
    for k in range(CLASSES):
        values = mags[classes == k]
        streams.append(np.packbits(values > 0).tobytes())
        gt1.append(np.packbits(values[values > 0] > 1).tobytes())
    streams.extend(gt1)
    streams.append(np.packbits(v[v != 0] < 0).tobytes())
    rest = mags[mags > 1] - 2
    streams.append(np.minimum(rest, 255).astype(np.uint8).tobytes())
    streams.append((rest[rest >= 255] - 255).astype("<u2").tobytes())
    return streams


class _Bits:
    """Sequential reader of a packed bit stream."""

    def __init__(self, raw: bytes, name: str) -> None:
        self.bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8)).astype(bool)
        self.pos = 0
        self.name = name
        self.raw_len = len(raw)

    def take(self, n: int) -> np.ndarray:
        if self.pos + n > len(self.bits):
            raise FormatError(f"latent stream {self.name} ends early")
        out = self.bits[self.pos : self.pos + n]
        self.pos += n
        return out

    def finish(self) -> None:
        if self.raw_len != -(-self.pos // 8):
            raise FormatError(f"latent stream {self.name} has bytes left over")


class _Values:
    """Sequential reader of a stream of fixed-width little-endian unsigned integers."""

    def __init__(self, raw: bytes, dtype: str, name: str) -> None:
        width = np.dtype(dtype).itemsize
        if len(raw) % width:
            raise FormatError(f"latent stream {name} has a partial value")
        self.values = np.frombuffer(raw, dtype=dtype).astype(np.int64)
        self.pos = 0
        self.name = name

    def take(self, n: int) -> np.ndarray:
        if self.pos + n > len(self.values):
            raise FormatError(f"latent stream {self.name} ends early")
        out = self.values[self.pos : self.pos + n]
        self.pos += n
        return out

    def finish(self) -> None:
        if self.pos != len(self.values):
            raise FormatError(f"latent stream {self.name} has bytes left over")


def unbinarize(raw: Sequence[bytes], shape: tuple[int, int, int]) -> np.ndarray:
    """Rebuild a (C, H, W) tensor in stored order from its raw streams, channel by channel:
    each channel's classes come from the channels already rebuilt."""
    c, h, w = shape
    sig = [_Bits(raw[k], f"sig{k}") for k in range(CLASSES)]
    gt1 = [_Bits(raw[CLASSES + k], f"gt1.{k}") for k in range(CLASSES)]
    signs = _Bits(raw[SIGN], "sign")
    rest = _Values(raw[REST], "<u1", "rest")
    esc = _Values(raw[ESC], "<u2", "esc")
    out = np.zeros((c, h * w), dtype=np.int64)
    mags = np.zeros((c, h * w), dtype=np.int64)
    window = np.zeros((h, w), dtype=np.int64)
    for i in range(c):
        if i > CONTEXT_CHANNELS:
            window -= mags[i - CONTEXT_CHANNELS - 1].reshape(h, w)
        classes = np.searchsorted(THRESHOLDS, _box3(window), side="right").ravel()
        order = np.argsort(classes, kind="stable")
        bounds = np.searchsorted(classes[order], np.arange(CLASSES + 1))
        mag = mags[i]
        for k in range(CLASSES):
            where = order[bounds[k] : bounds[k + 1]]
            if where.size == 0:
                continue
            nonzero = where[sig[k].take(where.size)]
            mag[nonzero] = 1 + gt1[k].take(nonzero.size)
        big = np.flatnonzero(mag > 1)
        extra = rest.take(big.size)
        long = extra == 255
        extra[long] += esc.take(int(long.sum()))
        mag[big] += extra
        nonzero = np.flatnonzero(mag)
        out[i] = mag
        out[i, nonzero[signs.take(nonzero.size)]] *= -1
        window += mag.reshape(h, w)
    for reader in (*sig, *gt1, signs, rest, esc):
        reader.finish()
    return out.reshape(c, h, w)


def raw_bounds(count: int) -> list[int]:
    """The largest raw size each stream of a tensor of ``count`` latents can have (checked
    before anything is inflated)."""
    bits = -(-count // 8)
    return [bits] * (2 * CLASSES + 1) + [count, 2 * count]


# --- zstd frames and the dictionaries -------------------------------------------------------

DICTIONARY_FILES = {1: "set1.zdict"}
DICTIONARY_SHA256 = {1: "7741f5e0ccce83eddc418aeb7ba507d395265e8f472f3582c7c436133b332af8"}
DICT_MAGIC = b"AECD"
ZSTD_LEVEL = 19


@cache
def dictionaries(set_id: int) -> tuple[zstandard.ZstdCompressionDict | None, ...]:
    """Dictionary set ``set_id`` (one dictionary or None per stream), verified by its hash."""
    if set_id == 0:
        return (None,) * STREAMS
    name = DICTIONARY_FILES.get(set_id)
    if name is None:
        raise FormatError(f"unknown stream dictionary set {set_id} (upgrade aecompress)")
    blob = resources.files("aecompress").joinpath("dictionaries", name).read_bytes()
    if hashlib.sha256(blob).hexdigest() != DICTIONARY_SHA256[set_id]:
        raise ChecksumError(f"stream dictionary set {set_id} is damaged (reinstall aecompress)")
    return parse_dictionaries(blob)


def parse_dictionaries(blob: bytes) -> tuple[zstandard.ZstdCompressionDict | None, ...]:
    """A dictionary set file: magic, stream count, then per stream a uint32 length and bytes."""
    if blob[:4] != DICT_MAGIC:
        raise FormatError("not a stream dictionary set")
    count = blob[4]
    pos = 5
    out: list[zstandard.ZstdCompressionDict | None] = []
    for _ in range(count):
        n = int.from_bytes(blob[pos : pos + 4], "little")
        data = blob[pos + 4 : pos + 4 + n]
        pos += 4 + n
        out.append(zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_FULLDICT) if n else None)
    return tuple(out)


def dictionary_blob(dicts: Sequence[bytes | None]) -> bytes:
    """Serialize a dictionary set (the inverse of ``parse_dictionaries``)."""
    parts = [DICT_MAGIC, bytes([len(dicts)])]
    for d in dicts:
        parts += [len(d or b"").to_bytes(4, "little"), d or b""]
    return b"".join(parts)


def _params() -> zstandard.ZstdCompressionParameters:
    return zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL,
        format=zstandard.FORMAT_ZSTD1_MAGICLESS,
        write_checksum=0,
        write_dict_id=0,
        write_content_size=1,
    )


@cache
def _compressor(set_id: int, stream: int) -> zstandard.ZstdCompressor:
    d = dictionaries(set_id)[stream]
    return zstandard.ZstdCompressor(compression_params=_params(), dict_data=d)


@cache
def _decompressor(set_id: int, stream: int) -> zstandard.ZstdDecompressor:
    d = dictionaries(set_id)[stream]
    return zstandard.ZstdDecompressor(dict_data=d, format=zstandard.FORMAT_ZSTD1_MAGICLESS)


def compress_streams(raw: Sequence[bytes], set_id: int) -> list[bytes]:
    """One frame per non-empty stream (an empty stream stays empty: it costs nothing)."""
    return [_compressor(set_id, i).compress(r) if r else b"" for i, r in enumerate(raw)]


def decompress_streams(frames: Sequence[bytes], sizes: Sequence[int], set_id: int) -> list[bytes]:
    """Inflate each frame to exactly its declared size (already checked against its bound)."""
    out = []
    for i, (frame, size) in enumerate(zip(frames, sizes, strict=True)):
        if not frame:
            if size:
                raise FormatError(f"latent stream {i} is empty but declares {size} bytes")
            out.append(b"")
            continue
        try:
            raw = _decompressor(set_id, i).decompress(frame, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise ChecksumError(f"latent stream {i}: zstd payload is corrupt ({exc})") from exc
        if len(raw) != size:
            raise FormatError(f"latent stream {i} inflates to {len(raw)} bytes, declares {size}")
        out.append(raw)
    return out


@dataclass(frozen=True)
class CodedTensor:
    """One coded integer tensor of a file: how it was coded, its shape and its streams."""

    role: int  # 1: the latents
    scheme: int
    dictionaries: int
    shape: tuple[int, int, int]
    raw_sizes: tuple[int, ...]
    frames: tuple[bytes, ...]

    @property
    def coded_bytes(self) -> int:
        return sum(len(f) for f in self.frames)


ROLE_LATENTS = 1
DEFAULT_DICTIONARIES = 1


def encode_tensor(stored: np.ndarray, set_id: int = DEFAULT_DICTIONARIES) -> CodedTensor:
    """Code a (C, H, W) integer tensor (channels in stored order) with the channel-context scheme."""
    raw = binarize(stored, context_classes(stored))
    frames = compress_streams(raw, set_id)
    shape = (int(stored.shape[0]), int(stored.shape[1]), int(stored.shape[2]))
    return CodedTensor(
        ROLE_LATENTS, SCHEME_CHANNEL_CONTEXT, set_id, shape, tuple(len(r) for r in raw), tuple(frames)
    )


def decode_tensor(tensor: CodedTensor) -> np.ndarray:
    """The (C, H, W) integers (stored order) of a coded tensor; every size is checked first."""
    if tensor.scheme != SCHEME_CHANNEL_CONTEXT:
        raise FormatError(f"unknown latent coding scheme {tensor.scheme}")
    if len(tensor.frames) != STREAMS:
        raise FormatError(f"coding scheme {tensor.scheme} has {STREAMS} streams, the file {len(tensor.frames)}")
    count = tensor.shape[0] * tensor.shape[1] * tensor.shape[2]
    for i, (size, bound) in enumerate(zip(tensor.raw_sizes, raw_bounds(count), strict=True)):
        if size > bound:
            raise FormatError(f"latent stream {i} declares {size} bytes, more than {bound} possible")
    raw = decompress_streams(tensor.frames, tensor.raw_sizes, tensor.dictionaries)
    return unbinarize(raw, tensor.shape)


def latents_of(aec: AecFile) -> np.ndarray:
    """The quantized latents of a parsed file, (C, H, W) in natural channel order, whatever
    its format version; values outside the header's dtype are an error."""
    if not aec.tensors:
        return aec.latent_array()
    h = aec.header
    stored = decode_tensor(next(t for t in aec.tensors if t.role == ROLE_LATENTS))
    info = np.iinfo(h.dtype)
    if stored.size and (stored.min() < info.min or stored.max() > info.max):
        raise FormatError(f"a latent in the streams is outside the header's {h.dtype.name} range")
    stored = stored.astype(h.dtype)
    if aec.order is None:
        return stored
    latents = np.empty_like(stored)
    latents[aec.order] = stored
    return latents

