"""The .aec container: reading and writing it, byte by byte as docs/format.md describes.

Only numpy, zlib and zstandard are needed here: ``aecompress info`` reads headers without torch.
Every size in a header is checked against the file and against fixed limits before anything
is allocated, and each kind of damage raises its own error type.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import zstandard

from aecompress.coding import (
    MAX_SLICES,
    MAX_STREAMS,
    ROLE_HYPER_LATENTS,
    ROLE_LATENTS,
    ROLE_SLICE,
    SCHEME_GROUPED_CLASSES,
    SCHEME_RESIDUAL_PHASES,
    TENSOR_ENTRY_BYTES,
    CodedTensor,
    compress_payload,
    decode_residual,
    plain_bytes,
    read_varint,
    varint,
)
from aecompress.errors import ChecksumError, FormatError, TruncatedError, VersionError

SIGNATURE = b"\x89AEC\r\n\x1a\n"
FORMAT_VERSION = 8  # the newest version read (files are written in the oldest that holds them)
PLANAR_VERSION = 3  # the version that introduced int16 latents as zigzag byte planes
TENSOR_VERSION = 4  # the version that codes integer tensors as context-classed streams (TNSR)
GROUPED_VERSION = 5  # the version that added scheme 3 (scale classes grouped into shared streams)
SLICED_VERSION = 6  # the version that added latents coded in channel slices (roles 16 + k)
RESIDUAL_VERSION = 7  # the version that added a pixel residual over the decoded image (RESD)
RESIDUAL_INT8 = 1  # RESD layout: the quantized residual as int8, pixel by pixel (R, G, B), one zstd frame
RESIDUAL_INT8_ROWS = 2  # as 1, with a finer step on a share of the rows (``residual_rows``)
CLASSED_RESIDUAL_VERSION = 8  # the version that added residuals coded as classed streams (layouts 3, 4)
RESIDUAL_CLASSED = 3  # as 1, the values coded by scheme 4 in bands of rows (a table of tensors)
RESIDUAL_CLASSED_ROWS = 4  # as 2, coded as 3
MAX_RESIDUAL_BANDS = 255
ROW_SHARE_ONE = 1 << 16  # a row share counts in 65536ths
_ROW_HASH = 40503  # 65536 / the golden ratio, odd: consecutive rows land far apart in 0..65535
MIN_RESIDUAL_STEP, MAX_RESIDUAL_STEP = 2.0, 255.0
MAX_TENSORS = 1 + MAX_SLICES  # the hyper-latents and up to MAX_SLICES latent slices
MAX_SIDE = 65535
MAX_PIXELS = 1 << 30
MAX_CHANNELS = 1024
MAX_NAME = 255
MIN_STEP, MAX_STEP = 2.0**-16, 2.0**16

MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
MODE_CODES = {name: code for code, name in MODES.items()}
DTYPES: dict[int, np.dtype] = {1: np.dtype(np.int8), 2: np.dtype("<i2"), 3: np.dtype("<i2")}
DTYPE_CODES = {np.dtype(np.int8): 1, np.dtype("<i2"): 3}
PLANAR_CODE = 3  # int16 stored as zigzag byte planes (all low bytes, then all high bytes)
LEGACY_INT16_CODE = 2  # int16 little-endian, as version 2 wrote it (still read)

_FIXED = struct.Struct("<IIBBBH16sIIHIIBf")
_CHUNK_HEAD = struct.Struct("<4sI")
_RESIDUAL_HEAD = struct.Struct("<fB")
_RESIDUAL_ROWS = struct.Struct("<fH")  # layout 2: the finer step, and the share of rows that take it
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class AecHeader:
    """Everything a decoder needs besides the model's weights."""

    width: int
    height: int
    mode: str
    source_mode: str
    source_bits: int
    quality: int
    model_name: str
    model_hash: bytes
    stride: int
    channels: int
    latent_height: int
    latent_width: int
    dtype: np.dtype
    step: float
    version: int = FORMAT_VERSION
    planar: bool = True  # int16 latents as zigzag byte planes (version 3); False: version 2's plain int16

    @property
    def pad_right(self) -> int:
        return self.latent_width * self.stride - self.width

    @property
    def pad_bottom(self) -> int:
        return self.latent_height * self.stride - self.height

    @property
    def latent_bytes(self) -> int:
        return self.channels * self.latent_height * self.latent_width * self.dtype.itemsize


@dataclass(frozen=True)
class ResidualChunk:
    """A pixel residual over the decoded image (``aecompress.residual``): the difference from
    the original, quantized with ``step``, int8 per pixel and channel, in one zstd frame
    (``RESIDUAL_INT8``) or coded by scheme 4 in bands of rows (``RESIDUAL_CLASSED``: ``frame``
    holds their table). With ``RESIDUAL_INT8_ROWS`` or ``RESIDUAL_CLASSED_ROWS`` the rows that
    ``residual_rows`` picks for ``fine_share`` (in 65536ths) use ``fine_step`` instead: the
    differences are integers, so a single step's file size moves in jumps as the step crosses
    even numbers, and a share of rows at the next finer step fills in between them."""

    step: float
    frame: bytes
    layout: int = RESIDUAL_INT8
    fine_step: float | None = None
    fine_share: int = 0

    def to_bytes(self) -> bytes:
        head = _RESIDUAL_HEAD.pack(self.step, self.layout)
        if self.has_rows:
            head += _RESIDUAL_ROWS.pack(self.fine_step, self.fine_share)
        return head + self.frame

    def row_steps(self, rows: slice, height: int) -> np.ndarray:
        """The step of each of ``rows`` (of an image ``height`` rows tall), float32."""
        steps = np.full(len(range(*rows.indices(height))), np.float32(self.step), np.float32)
        if self.has_rows and self.fine_step is not None:
            fine = residual_rows(height, self.fine_share)[rows]
            steps[fine] = np.float32(self.fine_step)
        return steps

    @property
    def has_rows(self) -> bool:
        """Whether a share of the rows takes a finer step (layouts 2 and 4)."""
        return self.layout in (RESIDUAL_INT8_ROWS, RESIDUAL_CLASSED_ROWS)

    @property
    def classed(self) -> bool:
        """Whether the values are coded by scheme 4 in bands (layouts 3 and 4)."""
        return self.layout in (RESIDUAL_CLASSED, RESIDUAL_CLASSED_ROWS)

    def with_classed(self, classed: bool) -> ResidualChunk:
        """The same steps, with the layout for a zstd frame or for classed bands."""
        layouts = (
            (RESIDUAL_CLASSED, RESIDUAL_CLASSED_ROWS) if classed else (RESIDUAL_INT8, RESIDUAL_INT8_ROWS)
        )
        return dataclasses.replace(self, layout=layouts[self.has_rows])

    @property
    def nominal_step(self) -> float:
        """One step that stands for the chunk's: the geometric blend of its two steps by share."""
        if not self.has_rows or self.fine_step is None:
            return self.step
        share = self.fine_share / ROW_SHARE_ONE
        return float(self.step ** (1 - share) * self.fine_step**share)


def residual_rows(height: int, share: int) -> np.ndarray:
    """Which rows take a layout-2 residual's finer step: ``share`` of every 65536, spread evenly
    down the image (Fibonacci hashing of the row number; integer arithmetic, the same everywhere)."""
    return (np.arange(height, dtype=np.int64) * _ROW_HASH) % ROW_SHARE_ONE < share


def _parse_residual(data: bytes) -> ResidualChunk:
    if len(data) < _RESIDUAL_HEAD.size:
        raise FormatError("residual chunk is cut short")
    step, layout = _RESIDUAL_HEAD.unpack_from(data)
    if layout not in (RESIDUAL_INT8, RESIDUAL_INT8_ROWS, RESIDUAL_CLASSED, RESIDUAL_CLASSED_ROWS):
        raise FormatError(f"residual chunk uses an unknown layout {layout}")
    if not (np.isfinite(step) and MIN_RESIDUAL_STEP <= step <= MAX_RESIDUAL_STEP):
        raise FormatError(f"residual step {step} is outside {MIN_RESIDUAL_STEP:g}..{MAX_RESIDUAL_STEP:g}")
    if layout in (RESIDUAL_INT8, RESIDUAL_CLASSED):
        return ResidualChunk(float(step), data[_RESIDUAL_HEAD.size :], layout)
    if len(data) < _RESIDUAL_HEAD.size + _RESIDUAL_ROWS.size:
        raise FormatError("residual chunk is cut short")
    fine, share = _RESIDUAL_ROWS.unpack_from(data, _RESIDUAL_HEAD.size)
    if not (np.isfinite(fine) and MIN_RESIDUAL_STEP <= fine < step) or share == 0:
        raise FormatError(f"residual rows: a finer step {fine} than {step} on {share}/65536 of the rows")
    start = _RESIDUAL_HEAD.size + _RESIDUAL_ROWS.size
    return ResidualChunk(float(step), data[start:], layout, float(fine), int(share))


@dataclass
class AecFile:
    """A parsed .aec file: header, quantized latents and the optional chunks."""

    header: AecHeader
    latents: bytes  # versions 1-3: the LATN zstd frame (read by ``aecompress.latents``); 4-5: ``tensors``
    order: np.ndarray | None = None
    tensors: tuple[CodedTensor, ...] = ()
    alpha: bytes | None = None
    icc: bytes | None = None
    exif: bytes | None = None
    chunk_sizes: dict[str, int] = field(default_factory=dict)
    file_size: int = 0
    residual: ResidualChunk | None = None

    def residual_array(self) -> np.ndarray | None:
        """The quantized residual as an (H, W, 3) int8 array (times each row's step,
        ``residual.row_steps``: pixel values), or None."""
        if self.residual is None:
            return None
        h = self.header
        if self.residual.classed:
            out = np.empty((h.height, h.width, 3), dtype=np.int8)
            top = 0
            for band in residual_bands(self.residual, h):
                out[top : top + band.shape[1]] = decode_residual(band).transpose(1, 2, 0)
                top += band.shape[1]
            return out
        raw = inflate(self.residual.frame, h.width * h.height * 3, "residual")
        return np.frombuffer(raw, dtype=np.int8).reshape(h.height, h.width, 3)

    def alpha_array(self) -> np.ndarray | None:
        """The lossless alpha plane as an (H, W) uint8 array, or None."""
        if self.alpha is None:
            return None
        h = self.header
        if len(self.alpha) < 1 or self.alpha[0] != 1:
            raise FormatError("alpha chunk uses an unknown filter")
        raw = inflate(self.alpha[1:], h.width * h.height, "alpha plane")
        diff = np.frombuffer(raw, dtype=np.uint8).reshape(h.height, h.width)
        return np.cumsum(diff, axis=1, dtype=np.uint8)


def residual_bands(chunk: ResidualChunk, header: AecHeader) -> tuple[CodedTensor, ...]:
    """A classed residual's bands (none for a zstd frame), checked against the image: scheme 4,
    three channels, the image's width, equal heights but the last, down the whole image."""
    if not chunk.classed:
        return ()
    bands = _parse_tensors(chunk.frame, MAX_RESIDUAL_BANDS)
    rows = bands[0].shape[1]
    for index, band in enumerate(bands):
        last = index == len(bands) - 1
        if band.role != index or band.scheme != SCHEME_RESIDUAL_PHASES or band.dictionaries:
            raise FormatError(
                f"residual band {index} is not a scheme {SCHEME_RESIDUAL_PHASES} band in its place"
            )
        if band.shape[0] != 3 or band.shape[2] != header.width or (band.shape[1] != rows and not last):
            raise FormatError(
                f"residual band {index} has shape {band.shape}, not 3 x {rows} x {header.width}"
            )
        if last and (len(bands) - 1) * rows + band.shape[1] != header.height:
            raise FormatError(f"the residual's bands cover other than the image's {header.height} rows")
    return bands


def _check_geometry(h: AecHeader) -> None:
    if not (1 <= h.width <= MAX_SIDE and 1 <= h.height <= MAX_SIDE):
        raise FormatError(f"image size {h.width}x{h.height} is outside 1..{MAX_SIDE}")
    if h.width * h.height > MAX_PIXELS:
        raise FormatError(f"image of {h.width * h.height} pixels exceeds the limit of {MAX_PIXELS}")
    if h.stride < 1 or h.stride > 256:
        raise FormatError(f"latent stride {h.stride} is not supported")
    if not 1 <= h.channels <= MAX_CHANNELS:
        raise FormatError(f"latent channel count {h.channels} is outside 1..{MAX_CHANNELS}")
    expect_h = -(-h.height // h.stride)
    expect_w = -(-h.width // h.stride)
    if (h.latent_height, h.latent_width) != (expect_h, expect_w):
        raise FormatError(
            f"latent grid {h.latent_height}x{h.latent_width} does not match a "
            f"{h.width}x{h.height} image at stride {h.stride}"
        )
    if not (np.isfinite(h.step) and MIN_STEP <= h.step <= MAX_STEP):
        raise FormatError(f"quantization step {h.step} is outside {MIN_STEP:g}..{MAX_STEP:g}")


def _name_bytes(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > MAX_NAME:
        raise FormatError(f"name too long for the header: {text[:40]}...")
    return bytes([len(raw)]) + raw


def inflate(frame: bytes, expected: int, what: str) -> bytes:
    """One zstd frame of a known size, checked before and after (a lying frame is refused)."""
    try:
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise FormatError(f"{what}: not a zstd frame ({exc})") from exc
    if size != expected:
        raise FormatError(f"{what}: compressed frame declares {size} bytes, header needs {expected}")
    try:
        raw = zstandard.ZstdDecompressor().decompress(frame, max_output_size=expected)
    except zstandard.ZstdError as exc:
        raise ChecksumError(f"{what}: zstd payload is corrupt ({exc})") from exc
    if len(raw) != expected:
        raise FormatError(f"{what}: decompressed to {len(raw)} bytes, expected {expected}")
    return raw


def _order_bytes(order: np.ndarray, channels: int) -> bytes:
    dtype = np.uint8 if channels <= 256 else np.dtype("<u2")
    return np.asarray(order).astype(dtype).tobytes()


def _parse_order(raw: bytes, channels: int) -> np.ndarray:
    dtype = np.dtype(np.uint8) if channels <= 256 else np.dtype("<u2")
    if len(raw) != channels * dtype.itemsize:
        raise FormatError("channel order chunk has the wrong length")
    order = np.frombuffer(raw, dtype=dtype).astype(np.int64)
    if not np.array_equal(np.sort(order), np.arange(channels)):
        raise FormatError("channel order chunk is not a permutation of the channels")
    return order


def _chunk(kind: bytes, data: bytes) -> bytes:
    return _CHUNK_HEAD.pack(kind, len(data)) + data + _CRC.pack(zlib.crc32(kind + data))


def _head(header: AecHeader, version: int) -> list[bytes]:
    """Signature, header and header CRC, after checking the header describes a storable image."""
    _check_geometry(header)
    if header.mode not in MODE_CODES:
        raise FormatError(f"colour mode {header.mode!r} cannot be stored")
    body = _FIXED.pack(
        header.width,
        header.height,
        MODE_CODES[header.mode],
        header.source_bits,
        header.quality,
        header.stride,
        header.model_hash,
        header.pad_right,
        header.pad_bottom,
        header.channels,
        header.latent_height,
        header.latent_width,
        DTYPE_CODES[header.dtype],
        header.step,
    )
    body += _name_bytes(header.model_name) + _name_bytes(header.source_mode)
    head = struct.pack("<BI", version, len(body)) + body
    return [SIGNATURE, head, _CRC.pack(zlib.crc32(head))]


def _order_chunk(header: AecHeader, order: np.ndarray | None) -> list[bytes]:
    if order is None:
        return []
    raw_order = _order_bytes(order, header.channels)
    _parse_order(raw_order, header.channels)  # refuse anything but a permutation
    return [_chunk(b"CORD", raw_order)]


def _tail(header: AecHeader, alpha: np.ndarray | None, icc: bytes | None, exif: bytes | None) -> list[bytes]:
    """The optional chunks and the end marker."""
    out = []
    if alpha is not None:
        if alpha.shape != (header.height, header.width):
            raise FormatError("alpha plane does not match the image size")
        diff = np.diff(alpha.astype(np.uint8), axis=1, prepend=np.uint8(0)).astype(np.uint8)
        out.append(_chunk(b"ALPH", b"\x01" + compress_payload(diff.tobytes())))
    if icc:
        out.append(_chunk(b"ICCP", bytes(icc)))
    if exif:
        out.append(_chunk(b"EXIF", bytes(exif)))
    out.append(_chunk(b"AEND", b""))
    return out


_TENSOR_HEAD = struct.Struct("<BBBHHHB")
assert _TENSOR_HEAD.size == TENSOR_ENTRY_BYTES


def tensor_table(tensors: Sequence[CodedTensor], most: int = MAX_TENSORS) -> bytes:
    """The ``TNSR`` chunk's data: a table of the coded tensors, then all their frames (also a
    classed residual's bands, up to ``MAX_RESIDUAL_BANDS``)."""
    if not 1 <= len(tensors) <= most:
        raise FormatError(f"a table holds 1..{most} coded tensors, not {len(tensors)}")
    table = [bytes([len(tensors)])]
    for t in tensors:
        table.append(_TENSOR_HEAD.pack(t.role, t.scheme, t.dictionaries, *t.shape, len(t.frames)))
        table += [varint(n) for n in t.raw_sizes] + [varint(len(f)) for f in t.frames]
    return b"".join(table + [f for t in tensors for f in t.frames])


def _parse_tensors(data: bytes, most: int = MAX_TENSORS) -> tuple[CodedTensor, ...]:
    """Read a ``TNSR`` table, checking every count and length against the chunk's own size."""
    if not data or not 1 <= data[0] <= most:
        raise FormatError("tensor table: bad tensor count")
    pos, heads = 1, []
    for _ in range(data[0]):
        if len(data) < pos + _TENSOR_HEAD.size:
            raise FormatError("tensor table is cut short")
        role, scheme, dicts, c, h, w, streams = _TENSOR_HEAD.unpack_from(data, pos)
        pos += _TENSOR_HEAD.size
        if not 1 <= streams <= MAX_STREAMS or not (c and h and w):
            raise FormatError("tensor table: impossible tensor shape or stream count")
        sizes = []
        for _ in range(2 * streams):
            n, pos = read_varint(data, pos)
            sizes.append(n)
        heads.append((role, scheme, dicts, (c, h, w), sizes[:streams], sizes[streams:]))
    if sum(sum(head[5]) for head in heads) != len(data) - pos:
        raise FormatError("tensor table: stream lengths disagree with the chunk size")
    out = []
    for role, scheme, dicts, shape, raw, coded in heads:
        frames = []
        for n in coded:
            frames.append(data[pos : pos + n])
            pos += n
        out.append(CodedTensor(role, scheme, dicts, shape, tuple(raw), tuple(frames)))
    if len({t.role for t in out}) != len(out):
        raise FormatError("tensor table: a tensor role appears twice")
    return tuple(out)


def pack(
    header: AecHeader,
    tensors: list[CodedTensor],
    alpha: np.ndarray | None = None,
    icc: bytes | None = None,
    exif: bytes | None = None,
    order: np.ndarray | None = None,
    residual: ResidualChunk | None = None,
) -> bytes:
    """Serialize a header, coded integer tensors (``aecompress.coding``) and the optional chunks
    into .aec bytes: version 8 with a classed residual, 7 with another, 6 with latent slices,
    5 when a tensor uses scheme 3, else 4, so a file stays readable by the releases that can
    read what it holds.
    ``order`` is the latent channels' stored order."""
    _check_latent_tensors(header, tensors)
    sliced = any(t.role >= ROLE_SLICE for t in tensors)
    grouped = any(t.scheme == SCHEME_GROUPED_CLASSES for t in tensors)
    version = SLICED_VERSION if sliced else GROUPED_VERSION if grouped else TENSOR_VERSION
    if residual is not None:
        version = CLASSED_RESIDUAL_VERSION if residual.classed else RESIDUAL_VERSION
    out = _head(header, version) + _order_chunk(header, order)
    out.append(_chunk(b"TNSR", tensor_table(tensors)))
    if residual is not None:
        residual_bands(_parse_residual(residual.to_bytes()), header)  # refuse what no reader would take
        out.append(_chunk(b"RESD", residual.to_bytes()))
    return b"".join(out + _tail(header, alpha, icc, exif))


def pack_legacy(
    header: AecHeader,
    latents: np.ndarray,
    alpha: np.ndarray | None = None,
    icc: bytes | None = None,
    exif: bytes | None = None,
    order: np.ndarray | None = None,
    version: int | None = None,
) -> bytes:
    """Serialize in the single-frame layout of versions 1-3 (the golden test files are made
    with it; aecompress writes version 4). Version 1 has no channel order."""
    expected = (header.channels, header.latent_height, header.latent_width)
    if latents.shape != expected:
        raise FormatError(f"latents of shape {latents.shape} do not match the header {expected}")
    version = version or (PLANAR_VERSION if header.dtype == np.int16 else PLANAR_VERSION - 1)
    out = _head(header, version) + (_order_chunk(header, order) if version > 1 else [])
    stored = latents if order is None or version == 1 else latents[np.asarray(order)]
    raw = plain_bytes(stored.astype(header.dtype, copy=False))
    out.append(_chunk(b"LATN", compress_payload(raw)))
    return b"".join(out + _tail(header, alpha, icc, exif))


def _read_name(body: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(body):
        raise FormatError("header ends inside a name field")
    n = body[pos]
    raw = body[pos + 1 : pos + 1 + n]
    if len(raw) != n:
        raise FormatError("header ends inside a name field")
    try:
        return raw.decode("utf-8"), pos + 1 + n
    except UnicodeDecodeError as exc:
        raise FormatError("header holds a name that is not UTF-8") from exc


def _parse_header(data: bytes) -> tuple[AecHeader, int]:
    if len(data) < len(SIGNATURE):
        if SIGNATURE.startswith(bytes(data)) and data:
            raise TruncatedError("file is truncated inside the signature")
        raise FormatError("not an .aec file (wrong magic bytes)")
    if not data.startswith(SIGNATURE):
        raise FormatError("not an .aec file (wrong magic bytes)")
    pos = len(SIGNATURE)
    if len(data) < pos + 5:
        raise TruncatedError("file is truncated inside the header")
    version, body_len = struct.unpack_from("<BI", data, pos)
    if version > FORMAT_VERSION:
        raise VersionError(
            f"file uses .aec format version {version}; this aecompress reads up to "
            f"version {FORMAT_VERSION} (upgrade aecompress)"
        )
    if version < 1:
        raise FormatError(f"invalid format version {version}")
    if body_len < _FIXED.size + 2 or body_len > _FIXED.size + 2 * (MAX_NAME + 1):
        raise FormatError(f"header length {body_len} is impossible")
    end = pos + 5 + body_len
    if len(data) < end + 4:
        raise TruncatedError("file is truncated inside the header")
    (crc,) = _CRC.unpack_from(data, end)
    if zlib.crc32(data[pos:end]) != crc:
        raise ChecksumError("header checksum mismatch (the file is corrupt)")
    body = data[pos + 5 : end]
    fields = _FIXED.unpack_from(body, 0)
    (width, height, mode, bits, quality, stride, mhash, pad_r, pad_b, c, lh, lw, dt, step) = fields
    name, npos = _read_name(body, _FIXED.size)
    source_mode, npos = _read_name(body, npos)
    if npos != len(body):
        raise FormatError("header has trailing bytes")
    if mode not in MODES:
        raise FormatError(f"unknown colour mode code {mode}")
    if dt not in DTYPES or (dt == PLANAR_CODE and version < PLANAR_VERSION):
        raise FormatError(f"unknown latent dtype code {dt}")
    header = AecHeader(
        width=width,
        height=height,
        mode=MODES[mode],
        source_mode=source_mode,
        source_bits=bits,
        quality=quality,
        model_name=name,
        model_hash=mhash,
        stride=stride,
        channels=c,
        latent_height=lh,
        latent_width=lw,
        dtype=DTYPES[dt],
        step=step,
        version=version,
        planar=dt != LEGACY_INT16_CODE,
    )
    _check_geometry(header)
    if (pad_r, pad_b) != (header.pad_right, header.pad_bottom):
        raise FormatError("padding in the header disagrees with the image and latent sizes")
    return header, end + 4


def unpack(data: bytes) -> AecFile:
    """Parse .aec bytes, checking structure and checksums (payloads stay compressed)."""
    data = memoryview(data).tobytes() if not isinstance(data, bytes) else data
    header, pos = _parse_header(data)
    found: dict[bytes, bytes] = {}
    sizes: dict[str, int] = {}
    while True:
        if len(data) < pos + _CHUNK_HEAD.size:
            raise TruncatedError("file is truncated (a chunk or the end marker is missing)")
        kind, length = _CHUNK_HEAD.unpack_from(data, pos)
        start = pos + _CHUNK_HEAD.size
        if length > len(data) - start - _CRC.size:
            raise TruncatedError(f"file is truncated inside chunk {kind!r}")
        payload = data[start : start + length]
        (crc,) = _CRC.unpack_from(data, start + length)
        if zlib.crc32(kind + payload) != crc:
            raise ChecksumError(f"checksum mismatch in chunk {kind.decode('latin-1')!r} (corrupt file)")
        pos = start + length + _CRC.size
        if kind == b"AEND":
            break
        if kind in found:
            raise FormatError(f"chunk {kind!r} appears twice")
        if kind in (b"LATN", b"TNSR", b"CORD", b"ALPH", b"ICCP", b"EXIF", b"RESD"):
            found[kind] = payload
            sizes[kind.decode("ascii")] = length
        elif kind[:1].isupper():
            raise FormatError(f"unknown critical chunk {kind!r}")
    if pos != len(data):
        raise FormatError("unexpected bytes after the end marker")
    latent_chunk = b"TNSR" if header.version >= TENSOR_VERSION else b"LATN"
    if latent_chunk not in found or (b"TNSR" if latent_chunk == b"LATN" else b"LATN") in found:
        raise FormatError(f"a version {header.version} file needs one {latent_chunk.decode()} latent chunk")
    tensors = _parse_tensors(found[b"TNSR"]) if latent_chunk == b"TNSR" else ()
    if tensors:
        _check_latent_tensors(header, tensors)
    if header.version < SLICED_VERSION and any(t.role >= ROLE_SLICE for t in tensors):
        raise FormatError(
            f"latent slices need format version {SLICED_VERSION}, the file is version {header.version}"
        )
    if header.version < GROUPED_VERSION and any(t.scheme == SCHEME_GROUPED_CLASSES for t in tensors):
        raise FormatError(
            f"coding scheme 3 needs format version {GROUPED_VERSION}, the file is version {header.version}"
        )
    if b"RESD" in found and header.version < RESIDUAL_VERSION:
        raise FormatError(
            f"a residual needs format version {RESIDUAL_VERSION}, the file is version {header.version}"
        )
    residual = _parse_residual(found[b"RESD"]) if b"RESD" in found else None
    if residual is not None and residual.classed and header.version < CLASSED_RESIDUAL_VERSION:
        raise FormatError(
            f"a classed residual needs format version {CLASSED_RESIDUAL_VERSION}, "
            f"the file is version {header.version}"
        )
    if residual is not None:
        residual_bands(residual, header)
    has_alpha = header.mode in ("LA", "RGBA")
    if has_alpha != (b"ALPH" in found):
        raise FormatError("alpha chunk presence disagrees with the colour mode")
    order = _parse_order(found[b"CORD"], header.channels) if b"CORD" in found else None
    return AecFile(
        header=header,
        latents=found.get(b"LATN", b""),
        order=order,
        tensors=tensors,
        alpha=found.get(b"ALPH"),
        icc=found.get(b"ICCP"),
        exif=found.get(b"EXIF"),
        chunk_sizes=sizes,
        file_size=len(data),
        residual=residual,
    )


def _check_latent_tensors(header: AecHeader, tensors: Sequence[CodedTensor]) -> None:
    """The latents are one tensor of the header's shape, or slices 0..n-1 of its channels in order
    (roles ROLE_SLICE + k) whose channel counts add up to the header's."""
    whole = [t for t in tensors if t.role == ROLE_LATENTS]
    slices = sorted((t for t in tensors if t.role >= ROLE_SLICE), key=lambda t: t.role)
    plane = (header.latent_height, header.latent_width)
    if whole and not slices:
        if len(whole) == 1 and whole[0].shape == (header.channels, *plane):
            return
    elif slices and not whole:
        roles = [t.role - ROLE_SLICE for t in slices]
        if (
            roles == list(range(len(slices)))
            and len(slices) <= MAX_SLICES
            and all(t.shape[1:] == plane for t in slices)
            and sum(t.shape[0] for t in slices) == header.channels
        ):
            return
    raise FormatError("tensor table: the latents' shape disagrees with the header")


def _role_name(role: int) -> str:
    if role >= ROLE_SLICE:
        return f"latent slice {role - ROLE_SLICE}"
    return {ROLE_LATENTS: "latents", ROLE_HYPER_LATENTS: "hyper-latents"}.get(role, f"role {role}")


def _coding_text(aec: AecFile) -> str:
    if not aec.tensors:
        return "one zstd frame"
    parts = []
    for t in aec.tensors:
        stored = t.stored_streams
        framed = sum(1 for f in t.frames if f) - stored
        parts.append(f"{_role_name(t.role)} {t.shape}: scheme {t.scheme}, "
                     f"{framed} zstd streams + {stored} stored, dictionary set {t.dictionaries}")  # fmt: skip
    return "; ".join(parts)


def describe(aec: AecFile) -> dict[str, object]:
    """The header as plain values, for ``aecompress info``."""
    h = aec.header
    layout = " (zigzag byte planes)" if h.dtype == np.int16 and h.planar else ""
    return {
        "format_version": h.version,
        "width": h.width,
        "height": h.height,
        "mode": h.mode,
        "source_mode": h.source_mode,
        "source_bits": h.source_bits,
        "model": h.model_name,
        "model_hash": h.model_hash.hex(),
        "quality": h.quality,
        "step": round(h.step, 6),
        "latent_shape": [h.channels, h.latent_height, h.latent_width],
        "latent_dtype": str(h.dtype.name) + layout,
        "stride": h.stride,
        "padding": [h.pad_right, h.pad_bottom],
        "bytes": aec.file_size,
        "latent_bytes": aec.chunk_sizes.get("LATN", aec.chunk_sizes.get("TNSR", 0)),
        "latent_coding": _coding_text(aec),
        "channel_order": "sorted by spread" if aec.order is not None else "natural",
        "residual_bytes": aec.chunk_sizes.get("RESD", 0),
        "alpha_bytes": aec.chunk_sizes.get("ALPH", 0),
        "icc_bytes": aec.chunk_sizes.get("ICCP", 0),
        "exif_bytes": aec.chunk_sizes.get("EXIF", 0),
        "bpp": round(8 * aec.file_size / (h.width * h.height), 4),
    } | (_residual_text(aec.residual) if aec.residual is not None else {})


def _residual_text(chunk: ResidualChunk) -> dict[str, object]:
    bands = len(_parse_tensors(chunk.frame, MAX_RESIDUAL_BANDS)) if chunk.classed else 0
    coding = f"classes in {bands} band{'s' * (bands != 1)}" if chunk.classed else "one zstd frame"
    return {"residual_step": round(chunk.nominal_step, 4), "residual_coding": coding}
