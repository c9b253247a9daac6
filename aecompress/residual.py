"""A pixel residual over the decoded image: the fidelity the transforms cannot reach.

A member's transforms are undercomplete (100 latent channels for 192 or 768 pixel values), so on
drawn graphics, with one-pixel edges, halftone dots and fine stripes, their PSNR levels off at
28-36 dB however many bits the latents get. Past that point the difference between the
original and the decoded image, quantized with a step and stored beside the latents, buys far
more (docs/results.md, *A residual for the top end*).

The residual is int8 per pixel and channel (the format's ``RESD`` chunk), coded one of two
ways, whichever suits the image: one zstd frame, whose matches find the repeats of drawn
images, or classed streams (``coding.encode_residual``), whose classes from neighbouring
values find what a photo's noise-like residual holds (11% smaller, five times faster). Parsing
needs nothing the networks compute, so a file parses the same everywhere; the image it
restores moves with the decoder's floats, as the base image does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from aecompress.coding import (
    classed_entropy_bytes,
    compress_parts,
    encode_residual,
    fast_frame_bytes,
    payload_frames,
)
from aecompress.format import (
    MAX_RESIDUAL_BANDS,
    MAX_RESIDUAL_STEP,
    MIN_RESIDUAL_STEP,
    RESIDUAL_INT8_ROWS,
    ROW_SHARE_ONE,
    AecFile,
    ResidualChunk,
    tensor_table,
)


def make(
    original: np.ndarray,
    decoded: np.ndarray,
    step: float,
    setting: int | None = None,
    classed: bool = False,
    workers: int = 1,
) -> ResidualChunk:
    """The residual of ``decoded`` against ``original`` (both (H, W, 3) uint8), quantized with
    ``step`` (MIN_RESIDUAL_STEP..MAX_RESIDUAL_STEP pixel levels) and compressed with zstd's
    ``setting`` (``Choice.setting``; None: the smaller frame of every setting), or, ``classed``,
    coded by classes in bands of rows on ``workers`` threads (``Choice.classed``).

    The differences are integers, so what a step keeps changes only where half of it crosses an
    integer: a step between two even numbers is coded as the coarser one, with the finer one on a
    share of the rows that grows (in log step) as the step nears it, and the file's size follows
    the step smoothly instead of in jumps of 20% and more (docs/results.md)."""
    if not MIN_RESIDUAL_STEP <= step <= MAX_RESIDUAL_STEP:
        raise ValueError(f"residual step {step} is outside {MIN_RESIDUAL_STEP:g}..{MAX_RESIDUAL_STEP:g}")
    chunk = _layout(step)
    height = original.shape[0]

    def values(bands: list[slice]) -> Iterator[np.ndarray]:
        for rows in bands:
            diff = original[rows].astype(np.float32) - decoded[rows].astype(np.float32)
            yield _quantized(diff, chunk.row_steps(rows, height)[:, None, None])

    if classed:
        body = code_bands(values(classed_bands(height, original.shape[1])), workers)
        return dataclasses.replace(chunk.with_classed(True), frame=body)
    frame = compress_parts((v.tobytes() for v in values(_bands(height))), original.size, setting)
    return dataclasses.replace(chunk, frame=frame)


def apply(decoded: np.ndarray, aec: AecFile) -> np.ndarray:
    """The decoded image with the file's residual added (the image itself when it has none)."""
    values = aec.residual_array()
    if values is None or aec.residual is None:
        return decoded
    out = np.empty(decoded.shape, np.uint8)
    height = decoded.shape[0]
    for rows in _bands(height):
        steps = aec.residual.row_steps(rows, height)[:, None, None]
        restored = decoded[rows].astype(np.float32) + values[rows].astype(np.float32) * steps
        out[rows] = np.clip(np.rint(restored), 0, 255)
    return out


def _quantized(diff: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Differences (float32) divided by their rows' steps, rounded and clipped to int8: the
    stored values, for the file and for the step search alike."""
    return np.clip(np.rint(diff / steps), -127, 127).astype(np.int8)


def _layout(step: float) -> ResidualChunk:
    """The chunk (without its values) for ``step``: the even numbers of levels either side of it,
    the finer one on a share of the rows; one step where it is even, rounds to one side, or is
    so coarse (254 and up) that no difference reaches half of it."""
    fine = 2.0 * math.floor(step / 2)
    if step == fine or fine >= MAX_RESIDUAL_STEP - 1:
        return ResidualChunk(float(np.float32(step)), b"")
    coarse = fine + 2.0
    share = round(ROW_SHARE_ONE * math.log(coarse / step) / math.log(coarse / fine))
    if share <= 0:
        return ResidualChunk(coarse, b"")
    if share >= ROW_SHARE_ONE:
        return ResidualChunk(fine, b"")
    return ResidualChunk(coarse, b"", RESIDUAL_INT8_ROWS, fine, share)


@dataclass(frozen=True)
class Span:
    """A file's place in a family member's residual range: the steps at the range's ends and
    the fraction ``t`` of the way from the first. How fast a residual grows as its step falls
    depends on the image (noisy ones grow sooner), so a fixed step for each -q lets some images
    jump; ``choose_step`` instead picks, per image, the step whose file size sits at ``t``
    between the two ends' file sizes, geometrically: every image then grows evenly with -q."""

    start: float
    end: float
    t: float
    # the largest ratio of the file at the range's end to the file at its start: an image whose
    # residual would grow more (a drawn one in a photo tail) stops short of the end step
    most: float = math.inf
    # the log size of this image's file at the range's end, measured on its own base image
    # (``end_size``); None: measured on the base at hand
    last: float | None = None
    # that file's real size in bytes: a file below the end that comes out larger is coded at the
    # end's step instead (``pack.pack_latents``); None: no such check
    cap: int | None = None


@dataclass(frozen=True)
class Choice:
    """A file's residual step; the zstd setting (an index into ``coding.SMALL_PAYLOAD_PARAMS``)
    whose frame was the smaller on the search's sample at that step (None where nothing was
    measured): the file compresses with it alone, once, not with every setting; and whether
    classed streams code it instead (``few_repeats``)."""

    step: float
    setting: int | None = None
    classed: bool = False


TAIL_GROWTH = 1.09  # the most a file grows per -q inside a family's residual range (12% allowed)


SEARCH_PIXELS = 1 << 16  # pixels of the image the step search measures (rows drawn all down it)
SEARCH_ROUNDS = 8  # at most this many sizings between the ends (3-4 reach the tolerance)
SEARCH_TOLERANCE = 0.003  # in log file size: 0.3%, against 7-8% of growth per -q
# zstd's fastest frame of a photo's residual sample is 1.30-1.74 times the values' order-0
# entropy (it finds no repeats; classes code such a residual 7-18% smaller than zstd's best
# frame); a drawn image's 0.39-0.92 (repeats: the frame beats classes by up to a factor of 3),
# but for one pattern at 1.62, where the two codings are within 4% (12 BSDS500 and 16
# generated residuals at -q 96 and 100)
FEW_REPEATS = 1.1
CLASSED_FROM = 2048  # bytes of residual below which classes' framing (60-100 bytes) outweighs them


def few_repeats(sample: np.ndarray, entropy: float) -> bool:
    """Whether a residual is better coded by classes than by zstd's matches, from a sample of
    its values and their order-0 ``entropy`` in bytes: true where zstd's fastest frame of them
    comes to at least ``FEW_REPEATS`` of it, as a photo's does (a millisecond, where the best
    frame takes 40)."""
    return fast_frame_bytes(sample.tobytes()) >= FEW_REPEATS * entropy


def _order0_bytes(values: np.ndarray) -> float:
    flat = values.reshape(1, 1, -1)
    return classed_entropy_bytes(flat, np.zeros(flat.shape, np.uint8), 1)


class _Sizes:
    """Log file sizes of one base image with its residual at any step, measured on the search's
    sample of rows and scaled to the image. The sample at ``end`` (the range's finest step)
    decides between zstd's frame and classes (``few_repeats``), the same at every step, so no
    -q step switches coders. A frame is sized as the file codes it (a faster zstd setting
    drifts from the final sizes at the fine steps); classes by the sample's order-0 entropy,
    which they beat by a share that holds from step to step on an image (within 4%, where the
    frame's share moves by 10%), so the ratios the search aims at hold."""

    def __init__(self, original: np.ndarray, decoded: np.ndarray, base_bytes: int, end: float) -> None:
        rows = _sample(original.shape[0], original.shape[1])
        self.diff = original[rows].astype(np.float32) - decoded[rows].astype(np.float32)
        self.rows = len(rows)
        self.scale = original.shape[0] / len(rows)
        self.base_bytes = base_bytes
        self.setting = 0  # the zstd setting whose frame won at the step sized last
        at_end = self._quantized(end)
        entropy = _order0_bytes(at_end)
        self.classed = self.scale * entropy >= CLASSED_FROM and few_repeats(at_end, entropy)
        self.last = self._log(self.scale * entropy) if self.classed else self._framed(at_end)

    def size(self, step: float) -> float:
        values = self._quantized(step)
        return self._log(self.scale * _order0_bytes(values)) if self.classed else self._framed(values)

    def _log(self, residual_bytes: float) -> float:
        return math.log(self.base_bytes + residual_bytes)

    def _quantized(self, step: float) -> np.ndarray:
        # the finer step on the same share of the sample's rows as of the image's (their own
        # rows would take it on a share that wanders from step to step, and so would the sizes)
        steps = _layout(step).row_steps(slice(None), self.rows)[:, None, None]
        return _quantized(self.diff, steps)

    def _framed(self, values: np.ndarray) -> float:
        lengths = [len(f) for f in payload_frames(values.tobytes())]
        self.setting = lengths.index(min(lengths))
        return self._log(self.scale * min(lengths))


def end_size(
    original: np.ndarray, end_decoded: np.ndarray, end_bytes: int, span: Span
) -> tuple[float, Choice]:
    """The log size of an image's file at the end of ``span`` (``Span.last``), from the file
    without residual there (``end_bytes``, decoding to ``end_decoded``), measured as
    ``choose_step`` measures sizes; and how that file's residual is coded.

    Without it the search aims between the range's start and end both measured on the base at
    hand, and on a drawn image that base's flat areas sit a level or two off by a share that
    changes from one -q to the next: the finest step's residual moves by 5-8% with it, the file
    too, enough to shrink it at the next -q (slide0 of the generated set: -1.38% at -q 90). The
    file at the range's end does not move with -q; the start measured on the base at hand (all
    but the base: no difference reaches half of the coarsest step) moves only as the base's
    bytes do, evenly."""
    sizes = _Sizes(original, end_decoded, end_bytes, span.end)
    return sizes.last, Choice(span.end, sizes.setting, sizes.classed)


def choose_step(original: np.ndarray, decoded: np.ndarray, span: Span, base_bytes: int) -> Choice:
    """The step for ``span`` on this image (both (H, W, 3) uint8) whose file, ``base_bytes``
    without the residual, has its share of the way between the ends' sizes (the start's measured
    on this base, the end's too unless ``Span.last`` has it; capped at ``span.most`` times the
    start's, so no -q step jumps on any image). The residual's size is measured on a sample of
    rows for a large image, scaled to the image (``_Sizes``)."""
    sizes = _Sizes(original, decoded, base_bytes, span.end)
    classed, last = sizes.classed, sizes.last
    if span.t <= 0:
        return Choice(span.start, None, classed)
    if span.start == span.end or (span.t >= 1 and math.isinf(span.most)):
        return Choice(span.end, sizes.setting, classed)
    end_setting = sizes.setting
    first = sizes.size(span.start)
    goal = last if span.last is None else span.last
    target = (1 - span.t) * first + span.t * min(goal, first + math.log(span.most))
    if target >= last:
        return Choice(span.end, end_setting, classed)
    if target <= first:  # an end's file (``Span.last``) no larger than this base's
        return Choice(span.start, sizes.setting, classed)
    # log size is smooth and falling in log step: regula falsi (Illinois) on it, from the ends
    coarse, fine = math.log(span.start), math.log(span.end)
    below, above = first - target, last - target  # < 0 at the coarse end, > 0 at the fine one
    middle, side = coarse, 0
    for _ in range(SEARCH_ROUNDS):
        middle = coarse + (fine - coarse) * -below / (above - below)
        off = sizes.size(math.exp(middle)) - target
        if abs(off) <= SEARCH_TOLERANCE:
            break
        if off > 0:
            fine, above = middle, off
            below = below / 2 if side > 0 else below  # the same end twice: pull the other's weight
            side = 1
        else:
            coarse, below = middle, off
            above = above / 2 if side < 0 else above
            side = -1
    return Choice(math.exp(middle), sizes.setting, classed)


def fixed_step(original: np.ndarray, decoded: np.ndarray, step: float) -> Choice:
    """A step given outright, with the coder and zstd setting its sample favours."""
    return choose_step(original, decoded, Span(step, step, 1.0), 0)


def _sample(height: int, width: int) -> np.ndarray:
    """Row indices for the step search: all rows of a small image, else single rows, one drawn
    from each of equal strata down the image, so that about SEARCH_PIXELS pixels are measured.
    Single rows see every part of a slide or a screen (five bands of 16 rows misjudged a slide's
    residual by a factor of 4); drawn, not evenly spaced, so no stripes can alias with them.
    The draw is seeded by the size: the same image always gets the same step."""
    if height * width <= SEARCH_PIXELS:
        return np.arange(height)
    count = max(1, min(height, SEARCH_PIXELS // width))
    edges = np.linspace(0, height, count + 1)
    draw = np.random.default_rng(height * 65537 + width).random(count)
    rows = np.floor(edges[:-1] + draw * np.diff(edges)).astype(np.int64)
    return np.unique(rows.clip(0, height - 1))


BAND_ROWS = 256  # rows at a time: the float scratch of a 6000-pixel-wide image stays near 18 MB
CLASSED_BAND_PIXELS = 1 << 20  # a classed band's pixels: a Kodak image is one band


def classed_band_rows(height: int, width: int) -> int:
    """Rows of each band of a classed residual (the last may have fewer): about
    ``CLASSED_BAND_PIXELS``, so an encoder's scratch does not grow with the image, and at most
    ``MAX_RESIDUAL_BANDS`` bands."""
    rows = max(2, CLASSED_BAND_PIXELS // max(width, 1), -(-height // MAX_RESIDUAL_BANDS))
    return rows + rows % 2


def classed_bands(height: int, width: int) -> list[slice]:
    """The rows of each band of a classed residual."""
    return _bands(height, classed_band_rows(height, width))


def code_bands(bands: Iterable[np.ndarray], workers: int = 1) -> bytes:
    """The body of a classed residual: each band's (rows, W, 3) int8 values (``classed_bands``)
    coded by classes (``coding.encode_residual``), in the table that layouts 3 and 4 hold."""
    coded = [
        encode_residual(np.ascontiguousarray(band.transpose(2, 0, 1)), index, workers)
        for index, band in enumerate(bands)
    ]
    return tensor_table(coded, MAX_RESIDUAL_BANDS)


def _bands(height: int, rows: int = BAND_ROWS) -> list[slice]:
    return [slice(top, min(top + rows, height)) for top in range(0, height, rows)]
