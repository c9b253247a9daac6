"""Hostile .aec files: generators of malformed inputs and a loop that checks how each one fails.

The test suite runs a fixed, seeded set of cases (tests/test_hostile.py). To run longer by hand:

    python -m tests.fuzzing --cases 200000 --seed 7

Every case must end in one of aecompress's own errors (or decode, when a mutation happens to leave
a valid file), within a time limit and a memory bound; anything else is reported as a bug.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import random
import struct
import sys
import tempfile
import time
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import zstandard

from aecompress import codec, coding, pack, passes
from aecompress import format as aecformat
from aecompress.errors import AecError
from aecompress.imageio import ImageData
from aecompress.latents import stored_integers
from aecompress.modelfile import resolve

SIG = len(aecformat.SIGNATURE)
HEADER_START = SIG + 5  # signature, version (u8), body length (u32)
HANG_LIMIT_S = 60.0  # a case this slow is stuck, not slow (times are reported, never judged)
MEMORY_LIMIT_B = 64 << 20


@dataclass
class Report:
    """What a batch of cases did: outcome counts, the slowest case, the largest allocation, bugs."""

    outcomes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0
    peak_bytes: int = 0
    bugs: list[str] = field(default_factory=list)

    @property
    def cases(self) -> int:
        return sum(self.kinds.values())

    def merge(self, other: Report) -> None:
        self.outcomes.update(other.outcomes)
        self.kinds.update(other.kinds)
        self.slowest = max(self.slowest, other.slowest)
        self.peak_bytes = max(self.peak_bytes, other.peak_bytes)
        self.bugs += other.bugs

    def line(self) -> str:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return (
            f"{self.cases} cases ({outcomes}); slowest {self.slowest * 1000:.1f} ms, "
            f"largest allocation {self.peak_bytes / 1e6:.2f} MB, {len(self.bugs)} bugs"
        )


def decode_target(data: bytes) -> None:
    """What each case runs: parse, then the full decode (latents, alpha, network, image)."""
    codec.decode(data, device="cpu")


def check(kind: str, data: bytes, report: Report, target: Callable[[bytes], None] = decode_target) -> None:
    """Run one case; record its outcome, time and peak traced allocation; note anything unexpected."""
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    try:
        target(data)
        outcome = "decoded"
    except AecError as exc:
        outcome = type(exc).__name__
    except Exception as exc:  # a bug: the reader let a foreign exception out
        outcome = "BUG"
        report.bugs.append(f"{kind}: {type(exc).__name__}: {exc} (input {data[:64].hex()}...)")
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] - before
    report.kinds[kind] += 1
    report.outcomes[outcome] += 1
    report.slowest = max(report.slowest, elapsed)
    report.peak_bytes = max(report.peak_bytes, peak)
    if elapsed > HANG_LIMIT_S:
        report.bugs.append(f"{kind}: took {elapsed:.2f} s (hung?)")
    if peak > MEMORY_LIMIT_B:
        report.bugs.append(f"{kind}: allocated {peak / 1e6:.1f} MB")


def sample_files() -> list[bytes]:
    """Real .aec files from the current default model: RGB, RGBA with ICC and EXIF, greyscale;
    the same latents as version 4 streams; a hyperprior's (version 5, scheme 3 latents with
    hyper-latents); a context model's (version 6, latent slices); the hyperprior's with a pixel
    residual of each layout (version 7); and, last, the first file's latents as version 3."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (17, 3), dtype=np.uint8)
    images = [
        ImageData(rgb, None, "RGB"),
        ImageData(
            rng.integers(0, 256, (17, 3, 3), dtype=np.uint8), alpha, "RGBA", icc=b"icc" * 9, exif=b"Exif"
        ),
        ImageData(np.repeat(rgb[..., :1], 3, axis=2), None, "L"),
    ]
    files = [
        codec.encode(image, quality=q, device="cpu").data
        for image, q in zip(images, (75, 20, 95), strict=True)
    ]
    first = aecformat.unpack(files[0])
    q = stored_integers(first)
    stored = q if first.order is None else q[first.order]
    # the same latents as channel-context streams (small files pick the single frame) and as version 2-3
    streams = aecformat.pack(first.header, [coding.encode_streams(stored)], order=first.order)
    legacy = aecformat.pack_legacy(first.header, q, order=first.order)
    hyper = codec.encode(images[0], model="hyper", quality=40, device="cpu").data  # scheme 3, with z
    sliced = codec.encode(images[0], model="ctx", quality=60, device="cpu").data  # version 6: slices
    net, info = passes.model_on(resolve("hyper"), torch.device("cpu"))
    latents = passes.analyse(net, rgb, torch.device("cpu"))
    residuals = [  # one step (layout 1), and two steps by rows (layout 2)
        pack.pack_latents(net, info.name, info.weights_hash, images[0], latents, 40, None, step)[0]
        for step in (8.0, 5.0)
    ]
    return [streams, *files, hyper, sliced, *residuals, legacy]


def header_end(data: bytes) -> int:
    """Offset just after the header CRC (where the first chunk starts)."""
    (body_len,) = struct.unpack_from("<I", data, SIG + 1)
    return HEADER_START + body_len + 4


def with_header(data: bytes, edit: Callable[[bytearray], None]) -> bytes:
    """Apply an edit to the header body and recompute its CRC, so the lie reaches the checks behind it."""
    end = header_end(data) - 4
    head = bytearray(data[SIG:end])
    edit(head)
    return data[:SIG] + bytes(head) + struct.pack("<I", zlib.crc32(bytes(head))) + data[end + 4 :]


def chunks(data: bytes) -> Iterator[tuple[int, bytes, int]]:
    """(offset, kind, length) of every chunk."""
    pos = header_end(data)
    while pos + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, pos)
        yield pos, kind, length
        pos += 12 + length


def replace_chunk(data: bytes, kind: bytes, payload: bytes) -> bytes:
    """The file with one chunk's payload replaced (length and CRC made consistent)."""
    for pos, found, length in chunks(data):
        if found == kind:
            new = (
                struct.pack("<4sI", kind, len(payload))
                + payload
                + struct.pack("<I", zlib.crc32(kind + payload))
            )
            return data[:pos] + new + data[pos + 12 + length :]
    raise ValueError(f"no {kind!r} chunk")


_FIELD_CODES = [
    ("width", "I"), ("height", "I"), ("mode", "B"), ("bits", "B"), ("quality", "B"), ("stride", "H"),
    ("hash", "16s"), ("pad_right", "I"), ("pad_bottom", "I"), ("channels", "H"), ("latent_h", "I"),
    ("latent_w", "I"), ("dtype", "B"), ("step", "f"),
]  # fmt: skip
assert "<" + "".join(code for _, code in _FIELD_CODES) == aecformat._FIXED.format
# offsets within the CRC-covered header (version byte, body length, then the fixed fields)
_OFFSETS = {
    name: 5 + struct.calcsize("<" + "".join(c for _, c in _FIELD_CODES[:i]))
    for i, (name, _) in enumerate(_FIELD_CODES)
}
_FORMATS = {name: "<" + code for name, code in _FIELD_CODES}


def set_field(data: bytes, name: str, value: float) -> bytes:
    """The file with one fixed header field set to a value (CRC recomputed)."""

    def edit(head: bytearray) -> None:
        struct.pack_into(_FORMATS[name], head, _OFFSETS[name], value)

    return with_header(data, edit)


def lying_headers(sample: bytes) -> Iterator[tuple[str, bytes]]:
    """Headers whose CRC is right but whose contents are impossible or disagree with the payload."""
    big = 2**31
    for name, value in [
        ("width", big - 1), ("height", big - 1), ("width", 0), ("height", 0), ("width", 65535),
        ("mode", 0), ("mode", 9), ("stride", 0), ("stride", 1), ("stride", 65535), ("channels", 0),
        ("channels", 65535), ("channels", 99), ("latent_h", 0), ("latent_h", big), ("latent_w", 12345),
        ("dtype", 0), ("dtype", 7), ("step", float("nan")), ("step", float("inf")), ("step", 0.0),
        ("step", -1.0), ("step", 1e30), ("step", 1e-30),
    ]:  # fmt: skip
        yield f"header lies: {name}={value}", set_field(sample, name, value)
    yield "header lies: 2^31 x 2^31 pixels", set_field(set_field(sample, "width", big), "height", big)
    both = set_field(set_field(sample, "width", 65535), "height", 65535)
    yield (
        "header lies: 65535x65535 with its own latent grid",
        set_field(set_field(both, "latent_h", 4096), "latent_w", 4096),
    )
    for pos, kind, length in chunks(sample):
        yield (
            f"chunk length past the end ({kind!r})",
            sample[:pos] + struct.pack("<4sI", kind, length + 10**6) + sample[pos + 8 :],
        )
        yield (
            f"chunk length 2^32-1 ({kind!r})",
            sample[:pos] + struct.pack("<4sI", kind, 2**32 - 1) + sample[pos + 8 :],
        )


@lru_cache(maxsize=1)
def _zero_frames() -> tuple[bytes, bytes]:
    """64 MB of zeros as a zstd frame, with and without its content size."""
    raw = b"\0" * (64 << 20)
    return (
        zstandard.ZstdCompressor(level=3).compress(raw),
        zstandard.ZstdCompressor(level=3, write_content_size=False).compress(raw),
    )


def _declare_size(frame: bytes, size: int) -> bytes:
    """A zstd frame whose header claims ``size`` bytes of content, whatever its blocks hold."""
    descriptor = frame[4]
    fcs_flag, single_segment, dict_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    if fcs_flag not in (2, 3):
        raise ValueError("frame has no 4- or 8-byte content size field")
    at = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    width = 4 if fcs_flag == 2 else 8
    return frame[:at] + size.to_bytes(width, "little") + frame[at + width :]


@lru_cache(maxsize=1)
def _zero_stream_frame() -> bytes:
    """64 MB of zeros as a magicless zstd frame, the kind a version 4 stream holds."""
    params = zstandard.ZstdCompressionParameters.from_level(
        3, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=1
    )
    return zstandard.ZstdCompressor(compression_params=params).compress(b"\0" * (64 << 20))


def with_tensor(sample: bytes, **changes: object) -> bytes:
    """A version 4 file whose latent tensor entry has some fields replaced (table rebuilt)."""
    tensor = aecformat.unpack(sample).tensors[0]
    return replace_chunk(sample, b"TNSR", aecformat.tensor_table([dataclasses.replace(tensor, **changes)]))


def with_stream(sample: bytes, index: int, frame: bytes, raw_size: int | None = None) -> bytes:
    """A version 4 file with one stream's frame (and, optionally, its declared raw size) replaced."""
    tensor = aecformat.unpack(sample).tensors[0]
    frames = list(tensor.frames)
    frames[index] = frame
    sizes = list(tensor.raw_sizes)
    sizes[index] = sizes[index] if raw_size is None else raw_size
    return with_tensor(sample, frames=tuple(frames), raw_sizes=tuple(sizes))


def zstd_bombs(sample: bytes) -> Iterator[tuple[str, bytes]]:
    """Payloads that inflate to 64 MB: declared, undeclared, or hidden behind a small declared size."""
    aec = aecformat.unpack(sample)
    if aec.tensors:
        zeros = _zero_stream_frame()
        real = aec.tensors[0].raw_sizes[0]
        yield "stream bomb declaring 64 MB", with_stream(sample, 0, zeros, 64 << 20)
        yield "stream bomb declaring its stream's size", with_stream(sample, 0, zeros, real)
        yield "stream bomb declaring 4 GB", with_stream(sample, 0, zeros, (4 << 30) - 1)
    else:
        declared, undeclared = _zero_frames()
        latent_bytes = aec.header.latent_bytes
        yield "zstd bomb declaring 64 MB", replace_chunk(sample, b"LATN", declared)
        yield "zstd bomb without a content size", replace_chunk(sample, b"LATN", undeclared)
        yield (
            "zstd bomb declaring 4 GB",
            replace_chunk(sample, b"LATN", _declare_size(declared, (4 << 30) - 1)),
        )
        yield (
            "zstd bomb declaring the expected size",
            replace_chunk(sample, b"LATN", _declare_size(declared, latent_bytes)),
        )
    # a valid-looking header of 2^30 pixels (65535 x 16384) and its latent grid: a decode bomb
    if aec.tensors:
        sample = with_tensor(sample, shape=(aec.header.channels, 1024, 65535 // 16 + 1))
    huge = set_field(set_field(sample, "width", 65535), "height", 16384)
    huge = set_field(set_field(huge, "latent_w", 65535 // 16 + 1), "latent_h", 1024)
    huge = set_field(set_field(huge, "pad_right", (65535 // 16 + 1) * 16 - 65535), "pad_bottom", 0)
    yield "valid header of 2^30 pixels (a decode bomb)", huge


def tensor_table_lies(sample: bytes) -> Iterator[tuple[str, bytes]]:
    """Version 4 tensor tables that lie: counts, shapes, schemes, stream lengths and symbol counts."""
    aec = aecformat.unpack(sample)
    if not aec.tensors or aec.tensors[0].scheme != coding.SCHEME_CHANNEL_CONTEXT:
        return
    tensor = aec.tensors[0]
    raw_table = aecformat.tensor_table(list(aec.tensors))
    for count in (0, 2, 5, 255):
        yield f"tensor count {count}", replace_chunk(sample, b"TNSR", bytes([count]) + raw_table[1:])
    for streams in (0, 1, 26, 28, 64, 65, 255):  # the stream count byte, lengths left as they were
        yield (
            f"stream count {streams}",
            replace_chunk(sample, b"TNSR", raw_table[:10] + bytes([streams]) + raw_table[11:]),
        )
    c, h, w = tensor.shape
    for shape in ((c + 1, h, w), (c, h + 1, w), (c, h, w * 50), (1, 1, 1), (65535, 65535, 65535)):
        yield f"tensor shape {shape}", with_tensor(sample, shape=shape)
    yield (
        "tensor shape that agrees with a lying header",
        set_field(with_tensor(sample, shape=(c, h * 40, w * 40)), "latent_h", h * 40),
    )
    yield "unknown scheme", with_tensor(sample, scheme=9)
    yield "unknown dictionary set", with_tensor(sample, dictionaries=200)
    yield "another role", with_tensor(sample, role=2)
    for index in (0, coding.SIGN, coding.REST, coding.ESC):
        sizes = list(tensor.raw_sizes)
        for size in (0, sizes[index] + 1, max(sizes[index] - 1, 0), 2**32 - 1):
            lie = list(sizes)
            lie[index] = size
            yield f"raw size of stream {index} = {size}", with_tensor(sample, raw_sizes=tuple(lie))
    yield "coded lengths past the chunk", replace_chunk(sample, b"TNSR", raw_table[:-1])
    yield "coded lengths short of the chunk", replace_chunk(sample, b"TNSR", raw_table + b"\0")
    # more (or fewer) symbols than the grid holds, each stream well-formed zstd of the right size
    compressor = zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters.from_level(
            3, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=1
        )
    )
    for index, fill in ((0, b"\xff"), (0, b"\x00"), (coding.CLASSES, b"\xff"), (coding.REST, b"\xff")):
        size = tensor.raw_sizes[index] or 1
        for extra in (0, 1):
            body = fill * (size + extra)
            yield (
                f"stream {index} filled with {fill.hex()} (+{extra} bytes)",
                with_stream(sample, index, compressor.compress(body), len(body)),
            )
    yield "stream from another class", with_stream(sample, 1, tensor.frames[0], tensor.raw_sizes[0])
    yield "streams swapped", with_tensor(sample, frames=tensor.frames[::-1], raw_sizes=tensor.raw_sizes[::-1])


def truncations(sample: bytes) -> Iterator[tuple[str, bytes]]:
    for cut in range(len(sample)):
        yield "truncated", sample[:cut]


def header_bit_flips(sample: bytes) -> Iterator[tuple[str, bytes]]:
    for pos in range(header_end(sample)):
        for bit in range(8):
            flipped = bytearray(sample)
            flipped[pos] ^= 1 << bit
            yield "header bit flip", bytes(flipped)


def payload_bit_flips(sample: bytes, rng: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    start = header_end(sample)
    for _ in range(count):
        flipped = bytearray(sample)
        flipped[rng.randrange(start, len(sample))] ^= 1 << rng.randrange(8)
        yield "payload bit flip", bytes(flipped)


def random_inputs(rng: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    for i in range(count):
        body = rng.randbytes(rng.randrange(0, 2048))
        yield (
            ("random bytes after the signature", aecformat.SIGNATURE + body)
            if i % 2
            else ("random bytes", body)
        )


def mutations(sample: bytes, rng: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    """Seeded havoc: several random edits (flips, byte sets, cuts, splices), CRCs fixed half the time."""
    for _ in range(count):
        data = bytearray(sample)
        for _ in range(rng.randrange(1, 6)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data)) if data else 0
            if op == 0 and data:
                data[pos] ^= 1 << rng.randrange(8)
            elif op == 1 and data:
                data[pos] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
            elif op == 2:
                del data[pos : pos + rng.randrange(1, 16)]
            else:
                data[pos:pos] = rng.randbytes(rng.randrange(1, 16))
        out = bytes(data)
        if rng.random() < 0.5 and len(out) > HEADER_START + 4:
            with contextlib.suppress(struct.error):
                out = with_header(out, lambda head: None)
        yield "havoc", out


def standard_cases(seed: int, random_count: int, flips: int, havoc: int) -> Iterator[tuple[str, bytes]]:
    """The suite: every truncation and header bit of each sample, lying headers, bombs, random inputs."""
    rng = random.Random(seed)
    for sample in sample_files():
        yield from truncations(sample)
        yield from header_bit_flips(sample)
        yield from payload_bit_flips(sample, rng, flips)
        yield from lying_headers(sample)
        yield from zstd_bombs(sample)
        yield from tensor_table_lies(sample)
        yield from mutations(sample, rng, havoc)
    yield from random_inputs(rng, random_count)


def run(cases: Iterator[tuple[str, bytes]]) -> Report:
    report = Report()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        for kind, data in cases:
            check(kind, data, report)
    finally:
        if started:
            tracemalloc.stop()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=20000, help="havoc mutations per sample file")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if "AECOMPRESS_MODELS" not in os.environ:  # tiny models keep each decode cheap
            from aecompress.modelfile import save_model
            from tests.conftest import make_model, tiny_context, tiny_hyperprior

            make_model(Path(tmp) / "default.pt", "default")
            save_model(tiny_hyperprior(), Path(tmp) / "hyper.pt", "hyper", {"note": "fuzzing model"})
            save_model(tiny_context(), Path(tmp) / "ctx.pt", "ctx", {"note": "fuzzing model"})
            os.environ["AECOMPRESS_MODELS"] = tmp
        report = run(standard_cases(args.seed, args.cases // 10, args.cases // 10, args.cases))
    print(report.line())
    for kind, count in sorted(report.kinds.items()):
        print(f"  {kind}: {count}")
    for bug in report.bugs[:50]:
        print("BUG", bug)
    return 1 if report.bugs else 0


if __name__ == "__main__":
    sys.exit(main())
