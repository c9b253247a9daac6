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

import dataclasses
import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import zstandard

from aecompress.errors import ChecksumError, FormatError

SCHEME_ONE_FRAME = 0
SCHEME_CHANNEL_CONTEXT = 1
SCHEME_GIVEN_CLASSES = 2
SCHEME_GROUPED_CLASSES = 3
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
    return np.array(out, dtype=np.int32)


THRESHOLDS = _class_thresholds(CLASSES)
# the class of every window sum up to the last threshold (larger sums take the last class):
# a table lookup instead of a binary search per latent
_CLASS_OF_SUM = np.searchsorted(THRESHOLDS, np.arange(int(THRESHOLDS[-1]) + 1), side="right").astype(np.uint8)


def _box3(plane: np.ndarray) -> np.ndarray:
    """Sum over each 3x3 window (zeros outside) of the last two axes, in integers: rows of three,
    then columns of three."""
    h, w = plane.shape[-2:]
    p = np.zeros((*plane.shape[:-2], h + 2, w + 2), dtype=plane.dtype)
    p[..., 1:-1, 1:-1] = plane
    rows = p[..., :-2, :] + p[..., 1:-1, :] + p[..., 2:, :]
    return rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]


def context_classes(stored: np.ndarray) -> np.ndarray:
    """The class of every latent of a (C, H, W) integer tensor in stored channel order."""
    # int32 holds every sum: 8 channels x 9 positions of magnitudes below 2^17 (even a hostile
    # file's, whose rest and escape streams cap a magnitude at 65,792)
    mags = np.abs(stored.astype(np.int32))
    cum = np.zeros((mags.shape[0] + 1, *mags.shape[1:]), np.int32)
    np.cumsum(mags, axis=0, dtype=np.int32, out=cum[1:])
    window = cum[:-1].copy()  # channel c: the sum over channels c - 8 .. c - 1
    window[CONTEXT_CHANNELS:] -= cum[: -1 - CONTEXT_CHANNELS]
    return _CLASS_OF_SUM[np.minimum(_box3(window), len(_CLASS_OF_SUM) - 1)]


ORDER_CHUNK = 1 << 20  # latents sorted at a time into class order (bounds the sort's scratch)


def _chunks_by_class(cls: np.ndarray, num_classes: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Each chunk of ``ORDER_CHUNK`` latents: its start, its positions stably sorted by class,
    and where each class begins and ends among them."""
    for start in range(0, cls.size, ORDER_CHUNK):
        part = cls[start : start + ORDER_CHUNK]
        local = np.argsort(part, kind="stable")
        yield start, local, np.searchsorted(part[local], np.arange(num_classes + 1))


def _class_counts(cls: np.ndarray, num_classes: int) -> np.ndarray:
    """Latents per class, a chunk at a time: ``np.bincount`` widens its input to int64, eight
    bytes a latent (300 MB for a 6000x4000 photo at stride 8) for a one-byte class."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for start in range(0, cls.size, ORDER_CHUNK):
        counts += np.bincount(cls[start : start + ORDER_CHUNK], minlength=num_classes)[:num_classes]
    return counts


def _split_by_class(values: np.ndarray, classes: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """The values of each class in their flat order, sorted a chunk at a time, so the scratch
    beside the result is one chunk's whatever the image's size."""
    pieces: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    for start, local, bounds in _chunks_by_class(classes, num_classes):
        chunk = values[start : start + ORDER_CHUNK][local]
        for k in np.flatnonzero(np.diff(bounds)):
            pieces[k].append(chunk[bounds[k] : bounds[k + 1]])
    empty = values[:0]
    return [np.concatenate(p) if len(p) > 1 else p[0] if p else empty for p in pieces]


def _magnitudes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flat integers and their magnitudes as unsigned integers of the same width (int8
    latents: uint8, as |-128| fits), so a large image's streams are cut without wide copies."""
    v = values.ravel()
    return v, np.abs(v).view(np.dtype(f"u{v.dtype.itemsize}"))


def binarize(stored: np.ndarray, classes: np.ndarray) -> list[bytes]:
    """The raw (uncompressed) streams of a tensor in stored order, given each latent's class."""
    v, mags = _magnitudes(stored)
    streams: list[bytes] = []
    gt1: list[bytes] = []
    for values in _split_by_class(mags, classes.ravel(), CLASSES):
        streams.append(np.packbits(values > 0).tobytes())
        gt1.append(np.packbits(values[values > 0] > 1).tobytes())
    streams.extend(gt1)
    streams.append(np.packbits(v[v != 0] < 0).tobytes())
    rest = mags[mags > 1] - 2
    streams.append(np.minimum(rest, 255).astype(np.uint8).tobytes())
    streams.append((rest[rest >= 255] - 255).astype("<u2").tobytes())
    return streams


class _Bits:
    """Sequential reader of a packed bit stream (MSB first), from bit ``start``; bits are
    unpacked as they are taken, so a reader holds its stream's bytes and no more."""

    def __init__(self, raw: bytes | np.ndarray, name: str, start: int = 0) -> None:
        self.raw = raw if isinstance(raw, np.ndarray) else np.frombuffer(raw, dtype=np.uint8)
        self.pos = start
        self.name = name
        self.raw_len = len(self.raw)

    def take(self, n: int) -> np.ndarray:
        end = self.pos + n
        if end > 8 * self.raw_len:
            raise FormatError(f"latent stream {self.name} ends early")
        first = self.pos // 8
        bits = np.unpackbits(self.raw[first : -(-end // 8)]).view(bool)
        out = bits[self.pos - 8 * first : end - 8 * first]
        self.pos = end
        return out

    def finish(self) -> None:
        if self.raw_len != -(-self.pos // 8):
            raise FormatError(f"latent stream {self.name} has bytes left over")


class _Values:
    """Sequential reader of a stream of fixed-width little-endian unsigned integers, from value
    ``start``; each take is a writable int64 copy of its part alone."""

    def __init__(self, raw: bytes | np.ndarray, dtype: str, name: str, start: int = 0) -> None:
        width = np.dtype(dtype).itemsize
        if len(raw) % width:
            raise FormatError(f"latent stream {name} has a partial value")
        self.values = np.frombuffer(raw, dtype=dtype)
        self.pos = start
        self.name = name

    def take(self, n: int) -> np.ndarray:
        if self.pos + n > len(self.values):
            raise FormatError(f"latent stream {self.name} ends early")
        out = self.values[self.pos : self.pos + n].astype(np.int64)
        self.pos += n
        return out

    def finish(self) -> None:
        if self.pos != len(self.values):
            raise FormatError(f"latent stream {self.name} has bytes left over")


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcounts(data: np.ndarray) -> np.ndarray:
    """Set bits per byte (numpy's own ufunc where it has one, 2.0 on)."""
    count = getattr(np, "bitwise_count", None)
    return count(data) if count is not None else _POPCOUNT[data]


def _ones(raw: np.ndarray, start: int, n: int) -> int:
    """Set bits among bits ``start`` .. ``start + n`` of a packed (MSB first) byte array that
    holds them all: a class's nonzeros from its ``sig`` bits without unpacking them."""
    if n <= 0:
        return 0
    end = start + n
    first, last = start // 8, -(-end // 8)
    count = int(_popcounts(raw[first:last]).sum(dtype=np.int64))
    head, tail = start - 8 * first, 8 * last - end
    if head:
        count -= int(_POPCOUNT[raw[first] >> (8 - head)])
    if tail:
        count -= int(_POPCOUNT[raw[last - 1] & ((1 << tail) - 1)])
    return count


class _StreamReaders:
    """Readers of the scheme 1 stream set (``sig`` and ``gt1`` per class, ``sign``, ``rest``,
    ``esc``), taken from a part at a time in coding order: a part's classes come from the
    parts read before it, so the decoder rebuilds as it goes."""

    def __init__(self, raw: Sequence[bytes]) -> None:
        self.sig = [_Bits(raw[k], f"sig{k}") for k in range(CLASSES)]
        self.gt1 = [_Bits(raw[CLASSES + k], f"gt1.{k}") for k in range(CLASSES)]
        self.signs = _Bits(raw[SIGN], "sign")
        self.rest = _Values(raw[REST], "<u1", "rest")
        self.esc = _Values(raw[ESC], "<u2", "esc")

    def take(self, classes: np.ndarray) -> np.ndarray:
        """The next ``classes.size`` integers (int64, flat order) given each one's class."""
        classes = classes.ravel()
        order = np.argsort(classes, kind="stable")
        bounds = np.searchsorted(classes[order], np.arange(CLASSES + 1))
        mag = np.zeros(classes.size, dtype=np.int64)
        for k in np.flatnonzero(np.diff(bounds)):
            where = order[bounds[k] : bounds[k + 1]]
            nonzero = where[self.sig[k].take(where.size)]
            mag[nonzero] = 1 + self.gt1[k].take(nonzero.size)
        big = np.flatnonzero(mag > 1)
        extra = self.rest.take(big.size)
        long = extra == 255
        extra[long] += self.esc.take(int(long.sum()))
        mag[big] += extra
        nonzero = np.flatnonzero(mag)
        mag[nonzero[self.signs.take(nonzero.size)]] *= -1
        return mag

    def finish(self) -> None:
        """Every stream must be used up exactly."""
        readers: list[_Bits | _Values] = [*self.sig, *self.gt1, self.signs, self.rest, self.esc]
        for reader in readers:
            reader.finish()


def unbinarize(raw: Sequence[bytes], shape: tuple[int, int, int]) -> np.ndarray:
    """Rebuild a (C, H, W) tensor in stored order from its raw streams, channel by channel:
    each channel's classes come from the channels already rebuilt."""
    c, h, w = shape
    readers = _StreamReaders(raw)
    out = np.zeros((c, h * w), dtype=np.int64)
    window = np.zeros((h, w), dtype=np.int32)
    for i in range(c):
        if i > CONTEXT_CHANNELS:
            window -= np.abs(out[i - CONTEXT_CHANNELS - 1]).reshape(h, w).astype(np.int32)
        classes = np.searchsorted(THRESHOLDS, _box3(window), side="right")
        out[i] = readers.take(classes)
        window += np.abs(out[i]).reshape(h, w).astype(np.int32)
    readers.finish()
    return out.reshape(c, h, w)


def raw_bounds(count: int) -> list[int]:
    """The largest raw size each stream of a tensor of ``count`` latents can have (checked
    before anything is inflated)."""
    bits = -(-count // 8)
    return [bits] * (2 * CLASSES + 1) + [count, 2 * count]


# --- one frame of plain bytes (format versions 1-3, and scheme 0 of version 4) --------------


def _small_payload_params(strategy: int, search_log: int) -> zstandard.ZstdCompressionParameters:
    return zstandard.ZstdCompressionParameters(
        window_log=20,
        chain_log=21,
        hash_log=20,
        search_log=search_log,
        min_match=3,
        target_length=256,
        strategy=strategy,
        write_checksum=1,
        write_content_size=1,
    )


# Quantized latents have few real repeats: zstd's deep match searches (level 19) find short
# matches whose priced trade-offs flip as -q moves, so file sizes wobbled by up to 9.5% between
# neighbouring -q. A shallow search with the btultra parser suits dense latents (high -q), a
# deeper one with btopt suits mostly-zero ones (low -q); the smaller frame of the two is kept.
# Over Kodak this is 1-4% smaller than level 19 and rises with -q (docs/format.md).
SMALL_PAYLOAD_PARAMS = (
    _small_payload_params(zstandard.STRATEGY_BTULTRA, search_log=1),
    _small_payload_params(zstandard.STRATEGY_BTOPT, search_log=8),
)
ZSTD_LEVEL_LARGE = 12
_LARGE_PAYLOAD = 4 << 20


def compress_parts(parts: Iterable[bytes], total: int, setting: int | None = None) -> bytes:
    """One zstd frame of the concatenated ``parts`` (``total`` bytes in all), the same frame
    ``compress_payload`` makes of a small payload; a large one is streamed part by part, so an
    encoder that makes it a band at a time never holds all of it (a 6000x4000 image's residual:
    72 MB, twice over as array and bytes)."""
    if total <= _LARGE_PAYLOAD:
        return compress_payload(b"".join(parts), setting)
    stream = zstandard.ZstdCompressor(
        level=ZSTD_LEVEL_LARGE, write_checksum=True, write_content_size=True
    ).compressobj(size=total)
    frame = [stream.compress(part) for part in parts]
    frame.append(stream.flush())
    return b"".join(frame)


def compress_payload(raw: bytes, setting: int | None = None) -> bytes:
    """One zstd frame (content size and checksum recorded) of plain bytes: the smaller of the
    ``SMALL_PAYLOAD_PARAMS`` settings' frames, or only ``setting``'s (an index into them), for a
    caller that has seen which one wins on data like it (``payload_frames``)."""
    if len(raw) > _LARGE_PAYLOAD:
        return zstandard.ZstdCompressor(
            level=ZSTD_LEVEL_LARGE, write_checksum=True, write_content_size=True
        ).compress(raw)
    if setting is not None:
        return zstandard.ZstdCompressor(compression_params=SMALL_PAYLOAD_PARAMS[setting]).compress(raw)
    return min(payload_frames(raw), key=len)


def payload_frames(raw: bytes) -> list[bytes]:
    """The frame of a small payload under each of the ``SMALL_PAYLOAD_PARAMS`` settings, in turn
    (compressed side by side)."""
    compressors = [zstandard.ZstdCompressor(compression_params=p) for p in SMALL_PAYLOAD_PARAMS]
    return list(_zstd_pool().map(lambda c: c.compress(raw), compressors))


def fast_frame_bytes(raw: bytes) -> int:
    """The size of zstd's fastest frame of ``raw``: a quick sign of whether its matches find
    repeats (``residual.few_repeats``), a millisecond for a residual's search sample."""
    return len(zstandard.ZstdCompressor(level=1).compress(raw))


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _zstd_pool(workers: int = len(SMALL_PAYLOAD_PARAMS)) -> ThreadPoolExecutor:
    """Threads for compressions that can run side by side (zstd releases the GIL): the two
    settings a plain payload is tried with (0.08 s instead of 0.14 s on a stride-8 Kodak payload
    with two cores), or the streams of a large tensor.

    One pool per process: a pool's threads do not survive a fork (batch's worker processes).
    """
    key = (os.getpid(), workers)
    if key not in _pools:
        _pools[key] = ThreadPoolExecutor(workers, thread_name_prefix="aec-zstd")
    return _pools[key]


def plain_bytes(stored: np.ndarray) -> bytes:
    """A tensor as plain bytes: int8 as is, int16 as zigzag byte planes (``to_planes``)."""
    return to_planes(stored) if stored.dtype == np.int16 else np.ascontiguousarray(stored).tobytes()


def to_planes(values: np.ndarray) -> bytes:
    """int16 values as zigzag codes (0, -1, 1, -2 ... -> 0, 1, 2, 3 ...) split into byte planes.

    Only a few latents need more than 8 bits, so the high-byte plane is almost all zeros and
    costs zstd next to nothing; plain little-endian int16 interleaves a sign byte with every
    value and made such files 20-25% larger than the same latents in int8.
    """
    v = values.astype(np.int32).ravel()
    zigzag = np.where(v >= 0, 2 * v, -2 * v - 1).astype(np.uint16)
    return (zigzag & 0xFF).astype(np.uint8).tobytes() + (zigzag >> 8).astype(np.uint8).tobytes()


def from_planes(raw: bytes) -> np.ndarray:
    """The inverse of ``to_planes``: a flat int16 array."""
    planes = np.frombuffer(raw, dtype=np.uint8)
    n = len(planes) // 2
    zigzag = planes[:n].astype(np.int32) | (planes[n:].astype(np.int32) << 8)
    return np.where(zigzag & 1, -((zigzag + 1) >> 1), zigzag >> 1).astype(np.int16)


# --- zstd frames and the dictionaries -------------------------------------------------------

DICTIONARY_FILES = {1: "set1.zdict", 2: "set2.zdict"}
DICTIONARY_SHA256 = {
    1: "7741f5e0ccce83eddc418aeb7ba507d395265e8f472f3582c7c436133b332af8",  # scheme 1, the family
    2: "3d1a507ef5d23662f25f3bcf414a87942f9a186dcee341e15d1a154654a4e966",  # scheme 2, scale classes
}
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
    blob = resources.files("aecompress").joinpath("dictionaries").joinpath(name).read_bytes()
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


def _dictionary(set_id: int, stream: int) -> zstandard.ZstdCompressionDict | None:
    """Stream ``stream``'s dictionary in a set (None past the streams the set has dictionaries
    for, and for a negative index)."""
    found = dictionaries(set_id)
    return found[stream] if 0 <= stream < len(found) else None


class _ThreadCoders(threading.local):
    """Each thread's own zstd objects: a compressor or decompressor (and the dictionary loaded
    into it) must not be used by two threads at once, and batches are parsed and packed on
    several threads."""

    def __init__(self) -> None:
        self.compressors: dict[tuple[int, int], zstandard.ZstdCompressor] = {}
        self.decompressors: dict[tuple[int, int, int], zstandard.ZstdDecompressor] = {}
        self.residual: zstandard.ZstdCompressor | None = None


_coders = _ThreadCoders()


def _own_dictionary(set_id: int, stream: int) -> zstandard.ZstdCompressionDict | None:
    shared = _dictionary(set_id, stream)
    if shared is None:
        return None
    return zstandard.ZstdCompressionDict(shared.as_bytes(), dict_type=zstandard.DICT_TYPE_FULLDICT)


def _compressor(set_id: int, stream: int) -> zstandard.ZstdCompressor:
    found = _coders.compressors.get((set_id, stream))
    if found is None:
        d = _own_dictionary(set_id, stream)
        found = _coders.compressors[set_id, stream] = zstandard.ZstdCompressor(
            compression_params=_params(), dict_data=d
        )
    return found


def _decompressor(set_id: int, stream: int, kind: int) -> zstandard.ZstdDecompressor:
    found = _coders.decompressors.get((set_id, stream, kind))
    if found is None:
        d = _own_dictionary(set_id, stream)
        found = _coders.decompressors[set_id, stream, kind] = zstandard.ZstdDecompressor(
            dict_data=d, format=kind
        )
    return found


PARALLEL_FROM = 1 << 12  # raw bytes from which the streams are compressed on several threads (a
# stride-16 Kodak image at -q 50 has about 50 KB of them: 19.4 -> 16.6 ms to code on 2 threads)


def _frame(set_id: int, dictionary: int, raw: bytes) -> bytes:
    """One stream's frame: empty for an empty stream, the raw bytes where zstd would not shrink
    them (tiny streams, where a frame's header outweighs what it saves)."""
    if not raw:
        return b""
    frame = _compressor(set_id, dictionary).compress(raw)
    return frame if len(frame) < len(raw) else raw


def compress_streams(
    raw: Sequence[bytes], set_id: int, workers: int = 1, dictionary_of: Sequence[int] | None = None
) -> list[bytes]:
    """One frame per non-empty stream (an empty stream stays empty: it costs nothing); a stream
    that zstd would not shrink is stored as it is, which its coded size equalling its raw size
    tells the reader. Stream i uses dictionary ``dictionary_of[i]`` of the set (default i).
    With ``workers`` > 1 large tensors are compressed on that many threads (zstd releases the
    GIL): the frames are the same bytes either way."""
    which = list(dictionary_of) if dictionary_of is not None else list(range(len(raw)))

    def one(index: int) -> bytes:
        return _frame(set_id, which[index], raw[index])

    if workers > 1 and sum(map(len, raw)) >= PARALLEL_FROM:
        return list(_zstd_pool(workers).map(one, range(len(raw))))
    return [one(i) for i in range(len(raw))]


def decompress_streams(
    frames: Sequence[bytes],
    sizes: Sequence[int],
    set_id: int,
    kind: int = zstandard.FORMAT_ZSTD1_MAGICLESS,
    dictionary_of: Sequence[int] | None = None,
) -> list[bytes]:
    """Inflate each frame to exactly its declared size (already checked against its bound).

    Reads are bounded by the declared size whatever a frame's own header claims, so a frame
    that would inflate to gigabytes stops one byte past it. In the streams of schemes 1-3
    (magicless frames) a frame as long as its declared size is the stream stored as it is.
    Stream i uses dictionary ``dictionary_of[i]`` of the set (default i)."""
    which = list(dictionary_of) if dictionary_of is not None else list(range(len(frames)))
    out = []
    for i, (frame, size) in enumerate(zip(frames, sizes, strict=True)):
        if not frame:
            if size:
                raise FormatError(f"latent stream {i} is empty but declares {size} bytes")
            out.append(b"")
            continue
        if kind == zstandard.FORMAT_ZSTD1_MAGICLESS and len(frame) == size:
            out.append(bytes(frame))
            continue
        try:
            with _decompressor(set_id, which[i], kind).stream_reader(
                frame, read_across_frames=False
            ) as reader:
                raw = reader.read(size + 1)
        except zstandard.ZstdError as exc:
            raise ChecksumError(f"latent stream {i}: zstd payload is corrupt ({exc})") from exc
        if len(raw) != size:
            raise FormatError(f"latent stream {i} does not inflate to its declared {size} bytes")
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

    @property
    def stored_streams(self) -> int:
        """Streams kept as they are rather than as zstd frames (schemes 1 and 2 only)."""
        if self.scheme == SCHEME_ONE_FRAME:
            return 0
        return sum(1 for f, n in zip(self.frames, self.raw_sizes, strict=True) if f and len(f) == n)

    @property
    def table_bytes(self) -> int:
        """What this tensor's entry in the file's tensor table costs."""
        sizes = (*self.raw_sizes, *(len(f) for f in self.frames))
        return TENSOR_ENTRY_BYTES + sum(len(varint(n)) for n in sizes)


ROLE_LATENTS = 1
ROLE_HYPER_LATENTS = 2
ROLE_SLICE = 16  # latent slice k of a model that codes its channels in slices: role 16 + k
MAX_SLICES = 16
DEFAULT_DICTIONARIES = 1
SCALE_CLASS_DICTIONARIES = 2  # the dictionary set of scheme 2 tensors with the hyperprior's 20 classes
TENSOR_ENTRY_BYTES = 10  # role, scheme, dictionary set, three u16 sides, stream count


def varint(n: int) -> bytes:
    """LEB128: 7 bits a byte, low bits first, the high bit set on every byte but the last."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """A varint at ``pos`` (at most 5 bytes, below 2^35) and the position after it."""
    value = 0
    for i in range(5):
        if pos + i >= len(data):
            raise FormatError("tensor table is cut short")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise FormatError("tensor table holds an overlong number")


# --- given classes: scheme 2 (a stream per class) and scheme 3 (neighbouring classes grouped) ---

KINDS = 3  # sig, gt1 and rest streams come per class (or group); sign and esc once
GROUP_MERGE_LIMIT = 4096  # raw bytes past which two groups are not tried merged


class _BitSink:
    """A packed bit stream (MSB first) appended to piece by piece: each piece is packed as it
    comes, the few bits past its last whole byte carried into the next, so the stream is held
    packed (a bit a symbol) and never as a byte a symbol."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.carry = np.zeros(0, dtype=bool)
        self.bits = 0

    def add(self, flags: np.ndarray) -> None:
        if self.carry.size:
            flags = np.concatenate([self.carry, flags])
        whole = flags.size - flags.size % 8
        self.chunks.append(np.packbits(flags[:whole]).tobytes())
        self.carry = flags[whole:].copy()
        self.bits = 8 * sum(map(len, self.chunks)) + self.carry.size

    def packed(self) -> _Symbols:
        return _Symbols(b"".join([*self.chunks, np.packbits(self.carry).tobytes()]), self.bits)


@dataclass(frozen=True)
class _Symbols:
    """One class's symbols of one kind as its stream holds them: packed bits (``sig``, ``gt1``)
    with their count, or bytes (``rest``)."""

    data: bytes
    count: int


def _class_parts(
    values: np.ndarray, classes: np.ndarray, num_classes: int
) -> tuple[list[list[_Symbols]], bytes, bytes]:
    """Each class's symbols of each kind (``sig`` bits, ``gt1`` bits, ``rest`` bytes), the
    class's latents in flat order; and the raw ``sign`` and ``esc`` streams (flat order).

    The latents are cut ``ORDER_CHUNK`` at a time, each chunk's symbols appended to its classes'
    streams already packed: beside the integers and classes, a large photo's split holds its
    streams and one chunk's scratch, not a byte a latent."""
    v = values.ravel()
    unsigned = np.dtype(f"u{v.dtype.itemsize}")  # |int8| fits a uint8 (128 included)
    sinks = [[_BitSink() for _ in range(num_classes)] for _ in range(2)]
    rest: list[list[bytes]] = [[] for _ in range(num_classes)]
    signs = _BitSink()
    escapes: list[bytes] = []
    for start, local, bounds in _chunks_by_class(classes.ravel(), num_classes):
        chunk = v[start : start + ORDER_CHUNK]
        mags = np.abs(chunk).view(unsigned)
        if v.dtype.itemsize > 1:  # int8 magnitudes (at most 128) never reach the escape
            escapes.append((mags[mags >= 257] - 257).astype("<u2").tobytes())
        by_class = mags[local]
        del mags
        for k in np.flatnonzero(np.diff(bounds)):
            m = by_class[bounds[k] : bounds[k + 1]]
            nz = m[m > 0]
            sinks[0][k].add(m > 0)
            sinks[1][k].add(nz > 1)
            rest[k].append(np.minimum(nz[nz > 1] - 2, 255).astype(np.uint8).tobytes())
        signs.add(chunk[chunk != 0] < 0)
    parts = [[sink.packed() for sink in kind] for kind in sinks]
    joined = [b"".join(r) for r in rest]
    parts.append([_Symbols(r, len(r)) for r in joined])
    return parts, signs.packed().data, b"".join(escapes)


def _pack(kind: int, symbols: Sequence[_Symbols]) -> bytes:
    """The raw stream of some classes' symbols of one kind, classes in order: bits packed MSB
    first (``sig``, ``gt1``), or bytes (``rest``)."""
    if len(symbols) == 1 or kind == 2:
        return b"".join(p.data for p in symbols)
    flags = [np.unpackbits(np.frombuffer(p.data, dtype=np.uint8), count=p.count) for p in symbols]
    return np.packbits(np.concatenate(flags)).tobytes() if flags else b""


def binarize_classed(values: np.ndarray, classes: np.ndarray, num_classes: int) -> list[bytes]:
    """The raw (uncompressed) streams of scheme 2, in stream order: a stream of each kind per
    class, then ``sign`` and ``esc``."""
    parts, sign, esc = _class_parts(values, classes, num_classes)
    return [_pack(kind, [p]) for kind in range(KINDS) for p in parts[kind]] + [sign, esc]


def encode_classed(
    values: np.ndarray,
    classes: np.ndarray,
    num_classes: int,
    set_id: int = 0,
    role: int = ROLE_LATENTS,
    workers: int = 1,
) -> CodedTensor:
    """Scheme 2: a tensor whose classes the decoder gets elsewhere (a hyperprior's scale classes).

    Per class k: ``sig[k]``, ``gt1[k]`` and ``rest[k]`` (streams k, K + k, 2K + k); then one
    ``sign`` stream and one ``esc`` stream over all classes. Each class stream runs over that
    class's latents in flat (channel, row, column) order; ``sign`` and ``esc`` over all latents
    in flat order. Files are written with scheme 3 now; this stays for reading and testing."""
    raw = binarize_classed(values, classes, num_classes)
    frames = compress_streams(raw, set_id, workers)
    shape = (int(values.shape[0]), int(values.shape[1]), int(values.shape[2]))
    return CodedTensor(role, SCHEME_GIVEN_CLASSES, set_id, shape, tuple(len(r) for r in raw), tuple(frames))


@dataclass
class _Group:
    first: int  # classes first..last share the stream
    last: int
    raw: bytes
    frame: bytes

    @property
    def cost(self) -> int:
        """What the group costs in the file: its frame and its two sizes in the tensor table."""
        return len(self.frame) + len(varint(len(self.raw))) + len(varint(len(self.frame)))


def _plan_groups(
    kind: int, symbols: list[_Symbols], set_id: int, raws: list[bytes], frames: list[bytes]
) -> list[_Group]:
    """Neighbouring classes of one kind merged greedily while a merge makes the file smaller.

    Every class starts alone (``raws``, ``frames``: its stream, and compressed on its own); the merge that
    saves most bytes is made until none saves any. A stream of a few bytes costs its frame's
    header and its table entry, and is often stored raw because zstd cannot shrink it: at low
    rates most classes hold a few dozen symbols, and merged they compress (the stage-12
    hyperprior on 10 BSDS500 images: files 15% smaller at -q 0, 3% at -q 100). Groups larger
    than ``GROUP_MERGE_LIMIT`` raw bytes are left alone: their framing is a small share, and
    compressing them again would cost encoding time. A group uses the dictionary of its first
    class."""
    count = len(symbols)
    groups = [_Group(k, k, raws[k], frames[k]) for k in range(count)]
    tried: dict[tuple[int, int], _Group] = {}

    def merged(a: _Group, b: _Group) -> _Group:
        if (a.first, b.last) not in tried:
            raw = a.raw + b.raw if kind == 2 else _pack(kind, symbols[a.first : b.last + 1])
            frame = _frame(set_id, kind * count + a.first, raw)
            tried[a.first, b.last] = _Group(a.first, b.last, raw, frame)
        return tried[a.first, b.last]

    while True:
        best, at = 0, -1
        for i in range(len(groups) - 1):
            a, b = groups[i], groups[i + 1]
            if len(a.raw) + len(b.raw) > GROUP_MERGE_LIMIT:
                continue
            saving = a.cost + b.cost - merged(a, b).cost
            if saving > best:
                best, at = saving, i
        if at < 0:
            return groups
        groups[at : at + 2] = [merged(groups[at], groups[at + 1])]


def classed_entropy_bytes(values: np.ndarray, classes: np.ndarray, num_classes: int) -> float:
    """The order-0 entropy of the integers in each class, summed, in bytes: what the streams of
    ``encode_grouped`` cost, give or take their framing and binarization, without coding them."""
    flat, cls = values.ravel(), classes.ravel()
    if not flat.size:
        return 0.0
    low = int(flat.min())
    span = int(flat.max()) - low + 1
    counts = np.zeros(num_classes * span, dtype=np.int64)
    for start in range(0, flat.size, ORDER_CHUNK):  # a chunk's int64 keys at a time
        keys = cls[start : start + ORDER_CHUNK].astype(np.int64) * span - low
        keys += flat[start : start + ORDER_CHUNK]
        counts += np.bincount(keys, minlength=num_classes * span)
    table = counts.reshape(-1, span).astype(np.float64)
    totals = table.sum(axis=1, keepdims=True)
    used = table > 0
    bits = -(table[used] * np.log2(table[used] / np.broadcast_to(totals, table.shape)[used])).sum()
    return float(bits) / 8


def _group_map(starts: Sequence[Sequence[int]], num_classes: int) -> bytes:
    """Scheme 3's stream 0: for each kind, a bit per class, 1 where a group starts."""
    bits = np.zeros(KINDS * num_classes, dtype=bool)
    for kind, firsts in enumerate(starts):
        bits[[kind * num_classes + k for k in firsts]] = True
    return np.packbits(bits).tobytes()


def encode_grouped(
    values: np.ndarray,
    classes: np.ndarray,
    num_classes: int,
    set_id: int = 0,
    role: int = ROLE_LATENTS,
    workers: int = 1,
) -> CodedTensor:
    """Scheme 3: scheme 2 with neighbouring classes sharing a stream where that is smaller.

    Streams: the group map (stored raw), then the ``sig`` groups, the ``gt1`` groups and the
    ``rest`` groups, each in class order, then ``sign`` and ``esc``. A group's stream holds its
    classes' symbols one class after another, each class's in flat order."""
    parts, sign, esc = _class_parts(values, classes, num_classes)
    singles = [_pack(kind, [p]) for kind in range(KINDS) for p in parts[kind]]
    alone = compress_streams(singles, set_id, workers)

    def plan(kind: int) -> list[_Group]:
        span = slice(kind * num_classes, (kind + 1) * num_classes)
        return _plan_groups(kind, parts[kind], set_id, singles[span], alone[span])

    # the kinds' merge trials are independent zstd work: side by side on several threads (the
    # same groups and frames; at -q 50 on a Kodak image they were a quarter of the encode)
    if workers > 1:
        groups = list(_zstd_pool(workers).map(plan, range(KINDS)))
    else:
        groups = [plan(kind) for kind in range(KINDS)]
    group_map = _group_map([[g.first for g in kind] for kind in groups], num_classes)
    tail = compress_streams([sign, esc], set_id, dictionary_of=[KINDS * num_classes, KINDS * num_classes + 1])
    raw = [group_map, *(g.raw for kind in groups for g in kind), sign, esc]
    frames = [group_map, *(g.frame for kind in groups for g in kind), *tail]
    shape = (int(values.shape[0]), int(values.shape[1]), int(values.shape[2]))
    return CodedTensor(role, SCHEME_GROUPED_CLASSES, set_id, shape, tuple(len(r) for r in raw), tuple(frames))


def _class_readers(
    kinds: Sequence[Sequence[tuple[int, int, bytes]]], counts: np.ndarray
) -> list[list[_Bits | _Values | None]]:
    """A reader per kind and class, each at its class's start in its group's stream: ``sig``
    from the classes' latent counts, ``gt1`` and ``rest`` from the set bits of the kind before,
    counted in place. Every stream is checked to hold exactly what its classes need."""
    readers: list[list[_Bits | _Values | None]] = [[None] * len(counts) for _ in range(KINDS)]
    needed = counts.astype(np.int64)
    for kind in range(KINDS):
        taken = np.zeros(len(counts), dtype=np.int64)  # per class: the set bits the next kind reads
        for first, last, raw in kinds[kind]:
            data = np.frombuffer(raw, dtype=np.uint8)
            name = f"{('sig', 'gt1.', 'rest')[kind]}{first}"
            offset = 0
            for k in range(first, last + 1):
                n = int(needed[k])
                if kind == 2:
                    readers[kind][k] = _Values(data, "<u1", name, offset)
                    if offset + n > data.size:
                        raise FormatError(f"latent stream {name} ends early")
                else:
                    readers[kind][k] = _Bits(data, name, offset)
                    if offset + n > 8 * data.size:
                        raise FormatError(f"latent stream {name} ends early")
                    taken[k] = _ones(data, offset, n)
                offset += n
            end = offset if kind == 2 else -(-offset // 8)
            if end != data.size:
                raise FormatError(f"latent stream {name} has bytes left over")
        needed = taken
    return readers


REBUILD_CHUNK = 1 << 20  # latents rebuilt at a time (bounds the parse's scratch, not the result)


def _rebuild(
    kinds: Sequence[Sequence[tuple[int, int, bytes]]],
    sign: bytes,
    esc: bytes,
    classes: np.ndarray,
    num_classes: int,
    dtype: np.dtype,
) -> np.ndarray:
    """The flat integers, as ``dtype``, from raw streams: ``kinds[kind]`` lists (first class,
    last class, stream) for the groups of that kind, covering the classes in order (scheme 2:
    one class a group). Every stream must be used up exactly, and every value fit ``dtype``.

    The latents are rebuilt ``REBUILD_CHUNK`` at a time in flat order, each class's readers
    picking up where the chunk before left them, so the scratch beside the result (positions,
    flags, magnitudes) is a chunk's whatever the image's size. Only the nonzero latents (a
    quarter or less) get a magnitude: they are put together in class order, where the streams
    hold them, and scattered to their places once."""
    cls = classes.ravel()
    if cls.size and int(cls.max()) >= num_classes:
        raise FormatError("the side information names a class the latents have no streams for")
    first = _sorted_by_class(cls[:REBUILD_CHUNK], num_classes)
    counts = np.diff(first[1]) if cls.size <= REBUILD_CHUNK else _class_counts(cls, num_classes)
    readers = _class_readers(kinds, counts)
    signs, escapes = _Bits(sign, "sign"), _Values(esc, "<u2", "esc")
    info = np.iinfo(dtype)
    out = np.zeros(cls.size, dtype=dtype)

    def read(kind: int, ends: np.ndarray, size: int) -> np.ndarray:
        part = np.empty(size, dtype=bool if kind < 2 else np.int64)
        for k in np.flatnonzero(np.diff(ends)):
            reader = readers[kind][k]
            assert reader is not None
            part[ends[k] : ends[k + 1]] = reader.take(int(ends[k + 1] - ends[k]))
        return part

    for start in range(0, cls.size, REBUILD_CHUNK):
        part = cls[start : start + REBUILD_CHUNK]
        order, edges = first if start == 0 else _sorted_by_class(part, num_classes)
        nonzero = np.flatnonzero(read(0, edges, part.size))  # in class order, as every stream
        big = np.flatnonzero(read(1, np.searchsorted(nonzero, edges), nonzero.size))  # of nonzero
        extra = read(2, np.searchsorted(nonzero[big], edges), big.size)
        at = order[nonzero]  # the nonzero latents' places in the chunk
        del order
        mags = np.ones(nonzero.size, dtype=np.int64)
        mags[big] = 2 + extra
        long = big[extra == 255]
        if long.size:
            long = long[np.argsort(at[long])]  # escapes come in flat order
            mags[long] += escapes.take(long.size)
        del nonzero, big, extra, long
        flat = np.zeros(part.size, dtype=bool)
        flat[at] = True
        negative = np.flatnonzero(flat)[signs.take(at.size)]  # signs come in flat order
        if (at.size and int(mags.max()) > info.max) or (info.min == 0 and negative.size):
            _check_range(at, mags, negative, part.size, info)
        chunk = out[start : start + part.size]
        chunk[at] = mags
        chunk[negative] *= -1
    signs.finish()
    escapes.finish()
    return out


def _check_range(at: np.ndarray, mags: np.ndarray, negative: np.ndarray, size: int, info: np.iinfo) -> None:
    """Whether a chunk's signed latents fit the header's type; only run where the largest
    magnitude alone does not settle it (a corrupt file, or a type's one extra negative value)."""
    values = np.zeros(size, dtype=np.int64)
    values[at] = mags
    values[negative] *= -1
    if int(values.min()) < info.min or int(values.max()) > info.max:
        raise FormatError(f"a latent in the streams is outside the header's {info.dtype.name} range")


def _sorted_by_class(cls: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The positions of a chunk's latents in class order (class by class, flat order within a
    class: numpy's stable sort, a counting sort for one-byte classes) and where each class
    starts among them; the starts come from the sorted classes, cheaper than a count."""
    order = np.argsort(cls, kind="stable")
    keys = np.arange(num_classes + 1, dtype=np.result_type(cls.dtype, np.min_scalar_type(num_classes)))
    return order, np.searchsorted(cls[order], keys)  # keys of the classes' type: no widened copy


def _check_raw_sizes(tensor: CodedTensor, bounds: Sequence[int]) -> None:
    for i, (size, bound) in enumerate(zip(tensor.raw_sizes, bounds, strict=True)):
        if size > bound:
            raise FormatError(f"latent stream {i} declares {size} bytes, more than {bound} possible")


def decode_classed(
    tensor: CodedTensor, classes: np.ndarray, num_classes: int, dtype: np.dtype | type = np.int32
) -> np.ndarray:
    """The (C, H, W) integers of a scheme 2 or 3 tensor as ``dtype`` (the header's: a value
    outside it is a FormatError), given every latent's class (of ``num_classes``, which the
    model says)."""
    if classes.shape != tensor.shape:
        raise FormatError("the latents' shape disagrees with their side information")
    count = classes.size
    bits = -(-count // 8)
    if tensor.scheme == SCHEME_GIVEN_CLASSES:
        if len(tensor.frames) != KINDS * num_classes + 2:
            raise FormatError(
                f"latents coded with scheme 2 and {len(tensor.frames)} streams, not {KINDS * num_classes + 2}"
            )
        _check_raw_sizes(tensor, [bits] * (2 * num_classes) + [count] * num_classes + [bits, 2 * count])
        raw = decompress_streams(tensor.frames, tensor.raw_sizes, tensor.dictionaries)
        alone = [[(k, k, raw[kind * num_classes + k]) for k in range(num_classes)] for kind in range(KINDS)]
        return _rebuild(alone, raw[-2], raw[-1], classes, num_classes, np.dtype(dtype)).reshape(tensor.shape)
    if tensor.scheme != SCHEME_GROUPED_CLASSES:
        raise FormatError(f"latents coded with scheme {tensor.scheme}, not by classes")
    map_size = -(-KINDS * num_classes // 8)
    if len(tensor.frames) < KINDS + 3 or tensor.raw_sizes[0] != map_size or len(tensor.frames[0]) != map_size:
        raise FormatError("latents coded with scheme 3 lack their group map (stored raw)")
    flags = np.unpackbits(np.frombuffer(tensor.frames[0], dtype=np.uint8))
    starts = flags[: KINDS * num_classes].reshape(KINDS, num_classes)
    if not starts[:, 0].all() or flags[KINDS * num_classes :].any():
        raise FormatError(
            "a scheme 3 group map must start each kind's first group at class 0, padded with zeros"
        )
    firsts = [np.flatnonzero(row) for row in starts]
    groups = [
        (kind, int(a), int(b) - 1)
        for kind, f in enumerate(firsts)
        for a, b in zip(f, [*f[1:], num_classes], strict=True)
    ]
    if len(tensor.frames) != 1 + len(groups) + 2:
        raise FormatError(
            f"the group map names {len(groups)} groups, the latents have {len(tensor.frames) - 3} streams"
        )
    _check_raw_sizes(
        tensor, [map_size] + [count if kind == 2 else bits for kind, _, _ in groups] + [bits, 2 * count]
    )
    dictionary_of = (
        [-1]
        + [kind * num_classes + first for kind, first, _ in groups]
        + [KINDS * num_classes + i for i in (0, 1)]
    )
    raw = decompress_streams(
        tensor.frames, tensor.raw_sizes, tensor.dictionaries, dictionary_of=dictionary_of
    )
    kinds: list[list[tuple[int, int, bytes]]] = [[], [], []]
    for (kind, first, last), stream in zip(groups, raw[1:-2], strict=True):
        kinds[kind].append((first, last, stream))
    return _rebuild(kinds, raw[-2], raw[-1], classes, num_classes, np.dtype(dtype)).reshape(tensor.shape)


def encode_streams(stored: np.ndarray, set_id: int = DEFAULT_DICTIONARIES, workers: int = 1) -> CodedTensor:
    """A (C, H, W) integer tensor (channels in stored order) as channel-context streams."""
    shape = (int(stored.shape[0]), int(stored.shape[1]), int(stored.shape[2]))
    raw = binarize(stored, context_classes(stored))
    frames = compress_streams(raw, set_id, workers)
    return CodedTensor(
        ROLE_LATENTS, SCHEME_CHANNEL_CONTEXT, set_id, shape, tuple(len(r) for r in raw), tuple(frames)
    )


def encode_one_frame(stored: np.ndarray) -> CodedTensor:
    """A (C, H, W) integer tensor as one zstd frame of plain bytes (the layout of version 3)."""
    shape = (int(stored.shape[0]), int(stored.shape[1]), int(stored.shape[2]))
    plain = plain_bytes(stored)
    return CodedTensor(ROLE_LATENTS, SCHEME_ONE_FRAME, 0, shape, (len(plain),), (compress_payload(plain),))


ONE_FRAME_BELOW = 4096  # coded bytes under which the single frame is tried too


def encode_tensor(
    stored: np.ndarray, set_id: int = DEFAULT_DICTIONARIES, role: int = ROLE_LATENTS, workers: int = 1
) -> CodedTensor:
    """Code a tensor the cheaper way: channel-context streams, or one frame of plain bytes where
    that is smaller (tiny, nearly all-zero tensors, where the streams' framing outweighs what
    the contexts save). Past a few KB the streams always win, and the frame is not tried."""
    best = encode_streams(stored, set_id, workers)
    if best.coded_bytes < ONE_FRAME_BELOW:
        one = encode_one_frame(stored)
        if one.table_bytes + one.coded_bytes < best.table_bytes + best.coded_bytes:
            best = one
    return dataclasses.replace(best, role=role)


def decode_tensor(tensor: CodedTensor, dtype: np.dtype) -> np.ndarray:
    """The (C, H, W) integers (stored order) of a coded tensor; every size is checked against
    what the shape allows before anything is inflated."""
    count = tensor.shape[0] * tensor.shape[1] * tensor.shape[2]
    if tensor.scheme == SCHEME_ONE_FRAME:
        bounds = [count * np.dtype(dtype).itemsize]
    elif tensor.scheme == SCHEME_CHANNEL_CONTEXT:
        bounds = raw_bounds(count)
    else:
        raise FormatError(f"unknown latent coding scheme {tensor.scheme}")
    if len(tensor.frames) != len(bounds):
        raise FormatError(
            f"coding scheme {tensor.scheme} has {len(bounds)} streams, the file {len(tensor.frames)}"
        )
    for i, (size, bound) in enumerate(zip(tensor.raw_sizes, bounds, strict=True)):
        if size > bound:
            raise FormatError(f"latent stream {i} declares {size} bytes, more than {bound} possible")
    if tensor.scheme == SCHEME_ONE_FRAME:
        if tensor.raw_sizes[0] != bounds[0]:
            raise FormatError("latent frame size disagrees with the tensor's shape")
        raw = decompress_streams(tensor.frames, tensor.raw_sizes, 0, zstandard.FORMAT_ZSTD1)[0]
        flat = from_planes(raw) if dtype == np.int16 else np.frombuffer(raw, dtype=dtype)
        return flat.reshape(tensor.shape)
    raw_streams = decompress_streams(tensor.frames, tensor.raw_sizes, tensor.dictionaries)
    return unbinarize(raw_streams, tensor.shape)


# --- scheme 4: a pixel residual, its own values as context, in four phases of a 2x2 grid ------

SCHEME_RESIDUAL_PHASES = 4
RESIDUAL_PHASES = ((0, 0), (1, 1), (0, 1), (1, 0))  # (row, column) in each 2x2 cell, coding order
SAME_PIXEL_WEIGHT = 2  # a magnitude of the pixel's earlier channels counts as two neighbours'
# The residual's streams are large and hold few repeats: a shallow search codes them in a fifth
# of level 19's time, 0.1% larger (24 BSDS500 residuals at -q 96 and 100).
RESIDUAL_STREAM_PARAMS = zstandard.ZstdCompressionParameters(
    window_log=20,
    chain_log=16,
    hash_log=16,
    search_log=1,
    min_match=3,
    target_length=64,
    strategy=zstandard.STRATEGY_BTULTRA,
    format=zstandard.FORMAT_ZSTD1_MAGICLESS,
    write_checksum=0,
    write_dict_id=0,
    write_content_size=1,
)


def _walk_phases(
    shape: tuple[int, int, int], visit: Callable[[int, int, int, np.ndarray], np.ndarray]
) -> None:
    """Go through a (C, H, W) residual in coding order: phase by phase of ``RESIDUAL_PHASES``,
    channel by channel, calling ``visit(channel, row, column, classes)`` for the phase's grid
    (rows ``row::2``, columns ``column::2``), which returns that grid's values. A value's class
    comes from the magnitudes already visited: its 3x3 neighbours' (summed over channels) and,
    weighted, its own pixel's earlier channels. Encoder and decoder walk the same way, so they
    agree on every class; the first phase has only the channels to go on."""
    channels, height, width = shape
    known = np.zeros((height + 2, width + 2), dtype=np.int32)  # magnitudes summed over channels, padded
    top = len(_CLASS_OF_SUM) - 1
    for row, col in RESIDUAL_PHASES:
        rows, cols = len(range(row, height, 2)), len(range(col, width, 2))
        if not rows or not cols:
            continue
        around = np.zeros((rows, cols), dtype=np.int32)
        for dy in range(3):
            for dx in range(3):
                around += known[row + dy : row + dy + 2 * rows : 2, col + dx : col + dx + 2 * cols : 2]
        same = np.zeros((rows, cols), dtype=np.int32)
        for channel in range(channels):
            classes = _CLASS_OF_SUM[np.minimum(around + SAME_PIXEL_WEIGHT * same, top)]
            same += np.abs(visit(channel, row, col, classes).astype(np.int32))
        known[1 + row : 1 + height : 2, 1 + col : 1 + width : 2] = same


def encode_residual(values: np.ndarray, role: int = 0, workers: int = 1) -> CodedTensor:
    """Scheme 4: a (C, H, W) int8 residual as the scheme 1 stream set, its values in coding
    order (``_walk_phases``) with the classes their neighbours give. A photo's residual is
    noise-like, so zstd's matches find little in it: these classes find more (11% smaller
    than the best single frame on BSDS500 residuals, in a fifth of its time), while drawn
    images' repeats stay with the single frame (``residual.Choice.classed``)."""
    parts: list[np.ndarray] = []
    classes: list[np.ndarray] = []

    def visit(channel: int, row: int, col: int, found: np.ndarray) -> np.ndarray:
        grid = values[channel, row::2, col::2]
        parts.append(grid.ravel())
        classes.append(found.ravel())
        return grid

    _walk_phases(values.shape, visit)
    flat, cls = np.concatenate(parts), np.concatenate(classes)
    raw = binarize(flat, cls)
    if workers > 1 and sum(map(len, raw)) >= PARALLEL_FROM:
        frames = list(_zstd_pool(workers).map(_residual_frame, raw))
    else:
        frames = [_residual_frame(r) for r in raw]
    shape = (int(values.shape[0]), int(values.shape[1]), int(values.shape[2]))
    return CodedTensor(role, SCHEME_RESIDUAL_PHASES, 0, shape, tuple(len(r) for r in raw), tuple(frames))


def _residual_frame(raw: bytes) -> bytes:
    if not raw:
        return b""
    if _coders.residual is None:
        _coders.residual = zstandard.ZstdCompressor(compression_params=RESIDUAL_STREAM_PARAMS)
    frame = _coders.residual.compress(raw)
    return frame if len(frame) < len(raw) else raw


def decode_residual(tensor: CodedTensor) -> np.ndarray:
    """The (C, H, W) int8 values of a scheme 4 tensor, every size checked before inflating."""
    if tensor.scheme != SCHEME_RESIDUAL_PHASES:
        raise FormatError(f"a residual coded with scheme {tensor.scheme}, not {SCHEME_RESIDUAL_PHASES}")
    count = tensor.shape[0] * tensor.shape[1] * tensor.shape[2]
    bounds = raw_bounds(count)
    if len(tensor.frames) != len(bounds):
        raise FormatError(f"a residual has {len(bounds)} streams, the file {len(tensor.frames)}")
    for i, (size, bound) in enumerate(zip(tensor.raw_sizes, bounds, strict=True)):
        if size > bound:
            raise FormatError(f"residual stream {i} declares {size} bytes, more than {bound} possible")
    readers = _StreamReaders(decompress_streams(tensor.frames, tensor.raw_sizes, 0))
    out = np.zeros(tensor.shape, dtype=np.int8)

    def visit(channel: int, row: int, col: int, found: np.ndarray) -> np.ndarray:
        grid = readers.take(found)
        if grid.size and (int(grid.max()) > 127 or int(grid.min()) < -127):
            raise FormatError("a residual value in the streams is outside -127..127")
        out[channel, row::2, col::2] = grid.reshape(found.shape)
        return out[channel, row::2, col::2]

    _walk_phases(tensor.shape, visit)
    readers.finish()
    return out
