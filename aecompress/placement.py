"""Which model and which of its qualities serve an image: a family's member for a global -q
(placed per image where members hand over by size), and the search for a target file size.

The networks' passes are ``passes``'; turning latents into bytes is ``pack``'s. A ``Placer``
runs each model's analysis of the image once, however many qualities are tried.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from aecompress import format as aecformat
from aecompress.content import AUTO, kind_of
from aecompress.family import PHOTO, Family, find_family
from aecompress.imageio import ImageData
from aecompress.latents import coder_for, quality_to_step
from aecompress.metrics import psnr
from aecompress.modelfile import resolve
from aecompress.pack import decode_with, pack_file, residual_end
from aecompress.passes import analyse, model_on
from aecompress.residual import TAIL_GROWTH, Span


@dataclass
class Packed:
    """One candidate file: its bytes and header, the model file that made it, its own -q."""

    data: bytes
    header: aecformat.AecHeader
    path: Path
    local: float
    residual: Span | None = None


def pick_model(model: str | Path | None, quality: float) -> tuple[Path, float]:
    """The model file and its own quality for a --model value and -q (a family picks a member).

    Without an image at hand a family's size-matched hand-overs take their calibrated starts;
    encoding places each image's own (``Placer``).
    """
    family = find_family(model)
    if family is not None:
        return family.pick(quality)
    quality_to_step(quality)  # range check
    return resolve(model), quality


MATCH_TOLERANCE = 0.01  # a matched start is searched until its estimate is this close to the goal
MATCH_TRIES = 6  # at most this many estimates to find one matched start
MATCH_CORRECTIONS = 3  # at most this many real files to correct one start's estimates
MATCH_MOVE = 1.0  # a start the correction moves this far (in the member's -q) is measured again
MATCH_SLOPE = 0.032  # d log(file size) / d quality for the search's first step (the bundled stride-8
# member at its -q 25-50: 0.031-0.033 on average over the calibration images)


class Placer:
    """One image's files at any global -q, with each model's analysis run once.

    A family that hands over by size (``Family.match``) starts each member after the first, for
    this image, at the quality where its file is ``match`` times the previous member's at its
    top: found once per member, from the coder's estimates (``LatentCoder.estimate``) at the
    previous member's top and a few of its own qualities, corrected by real files. A
    member with a ``TopRule`` tops out, for this image, where the estimated rate at its nominal
    top puts it. A family with members for other kinds of picture serves the image with those
    of its kind (``content``: a kind, or ``auto`` to tell it from the pixels).
    """

    def __init__(
        self,
        model: str | Path | None,
        image: ImageData,
        device: torch.device,
        tile: int | None = None,
        family: Family | None = None,
        once: bool = False,
        content: str = AUTO,
    ) -> None:
        """``once``: a single quality will be placed (an encode), so a hand-over drops the
        previous member's latents as soon as its top file is measured: one analysis is held
        at a time (a large photo's latents are hundreds of megabytes)."""
        self.once = once
        found = family if family is not None else find_family(model)
        self.kind = kind_of(image.rgb, found, content)
        self.family = found.for_kind(self.kind) if found is not None else None
        self.alone = None if self.family is not None else resolve(model)
        self.image, self.device, self.tile = image, device, tile
        self.latents: dict[Path, torch.Tensor] = {}
        self.starts: dict[int, float] = {}
        self.tops: dict[int, float] = {}
        self.ends: dict[int, tuple[float, int]] = {}
        self.estimates: dict[tuple[Path, float], float] = {}

    def needs(self, quality: float) -> list[Path]:
        """The models whose analysis of the image placing ``quality`` takes."""
        if self.family is None:
            assert self.alone is not None
            return [self.alone]
        index, t = self.family.slot(quality)
        first = index - 1 if self.family.needs_start(index, t) else index
        return [self.family.model_path(m) for m in self.family.members[first : index + 1]]

    def place(self, quality: float) -> tuple[Path, float]:
        """The model file and its own quality serving a global quality for this image."""
        if self.family is None:
            assert self.alone is not None
            quality_to_step(quality)  # range check
            return self.alone, quality
        index, t = self.family.slot(quality)
        start = self.start(index) if self.family.needs_start(index, t) else None
        local = self.family.local(index, t, start, self.top(index))
        return self.family.model_path(self.family.members[index]), local

    def residual(self, quality: float) -> Span | None:
        """Where the file at a global quality sits in its member's pixel-residual range (None:
        the member adds none); the step itself comes from the image (``residual.choose_step``).
        A drawn image's span carries its file at the range's end (``Span.last``, ``Span.cap``:
        one more file and synthesis, once per image and member): its base's flat areas move by a
        level from one -q to the next, and the end measured on each -q's own base would move its
        file with them. Photos' bases do not, and their tails keep the time."""
        if self.family is None:
            return None
        index, t = self.family.slot(quality)
        member = self.family.members[index]
        if member.residual is None:
            return None
        width = member.quality[1] - member.quality[0]
        span = Span(member.residual[0], member.residual[1], t, TAIL_GROWTH**width)
        if self.kind == PHOTO or not 0 < t < 1:
            return span
        if index not in self.ends:
            start = self.start(index) if self.family.needs_start(index, 1.0) else None
            end = self.family.local(index, 1.0, start, self.top(index))
            path = self.family.model_path(member)
            self.ends[index] = residual_end(path, self.image, self.analysis(path), end, span, self.device)
        last, cap = self.ends[index]
        return dataclasses.replace(span, last=last, cap=cap)

    def analysis(self, path: Path) -> torch.Tensor:
        """The model's float latents of the image (computed on first use; bfloat16 where the
        network ran in it, ``passes.analyse(compact=True)``)."""
        if path not in self.latents:
            net, _ = model_on(path, self.device)
            self.latents[path] = analyse(net, self.image.rgb, self.device, self.tile, compact=True)
        return self.latents[path]

    def pack(self, quality: float) -> Packed:
        """The file at a global quality."""
        return self.pack_own(*self.place(quality), quality, self.residual(quality))

    def pack_own(self, path: Path, local: float, label: float, residual: Span | None = None) -> Packed:
        """The file a model makes at its own quality ``local``, recording ``label`` as the -q
        (with a pixel residual where ``residual`` places one)."""
        latents = self.analysis(path)
        data, header = pack_file(path, self.image, latents, local, label, 0, self.device, residual)
        return Packed(data, header, path, local, residual)

    def estimate(self, path: Path, local: float) -> float:
        """About how many bytes the model's coded latents take at its own quality ``local``."""
        if (path, local) not in self.estimates:
            net, _ = model_on(path, self.device)
            self.estimates[path, local] = max(coder_for(net).estimate(net, self.analysis(path), local), 1.0)
        return self.estimates[path, local]

    def top(self, index: int) -> float:
        """Member ``index``'s own top quality for this image (``TopRule``: from the estimated
        rate at its nominal top)."""
        assert self.family is not None
        member = self.family.members[index]
        nominal = member.local_quality[1]
        if member.top_by_rate is None:
            return nominal
        if index not in self.tops:
            size = self.estimate(self.family.model_path(member), nominal)
            bpp = 8 * size / (self.image.width * self.image.height)
            self.tops[index] = member.top_by_rate.top(nominal, bpp)
        return self.tops[index]

    def start(self, index: int) -> float:
        """Member ``index``'s own quality where it takes over for this image (matched by size)."""
        if index not in self.starts:
            family = self.family
            assert family is not None and family.match is not None and index > 0
            before, member = family.members[index - 1], family.members[index]
            top = self.estimate(family.model_path(before), self.top(index - 1))
            real_top = len(self.pack_own(family.model_path(before), self.top(index - 1), 0.0).data)
            if self.once:
                self.latents.pop(family.model_path(before), None)
            goal = math.log(family.match * top)
            path = family.model_path(member)

            def log_size(q: float) -> float:
                return math.log(self.estimate(path, q))

            start = _solve(log_size, goal, member.local_quality[0], member.local_quality[1])
            # The estimates run under the coded files by a few percent, and by more for a coder
            # with more streams (a context model codes each slice apart: 7-12% under where a
            # hyperprior is 3-7%), so files matched on estimates alone jumped 6-11% at the
            # hand-over. One real file at each end measures the two biases; the goal moves by
            # them, so the files themselves come out ``match`` apart. On drawn images the
            # estimate (order-0 entropy) runs far over the file (zstd finds their repeats) by an
            # amount that changes with the quality, so a start moved far by the correction is
            # measured again (up to MATCH_CORRECTIONS files).
            for _ in range(MATCH_CORRECTIONS):
                real_start = len(self.pack_own(path, start, 0.0).data)
                goal = math.log(family.match * real_top) - (math.log(real_start) - log_size(start))
                if abs(goal - log_size(start)) <= math.log1p(MATCH_TOLERANCE):
                    break
                moved = _solve(log_size, goal, start, member.local_quality[1])
                near = abs(moved - start) < MATCH_MOVE
                start = moved
                if near:
                    break
            self.starts[index] = start
        return self.starts[index]


def _solve(f: Callable[[float], float], goal: float, guess: float, top: float) -> float:
    """A quality in [0, top] where the increasing ``f`` is near ``goal``: secant steps from
    ``guess``, kept inside the bracket found so far (an end of the range is tried once when a
    step passes it; otherwise the bracket is halved)."""
    lo, hi = 0.0, top
    tried: list[tuple[float, float]] = []
    q = min(max(guess, lo), hi)
    for _ in range(MATCH_TRIES):
        value = f(q)
        tried.append((q, value))
        if abs(value - goal) <= math.log1p(MATCH_TOLERANCE):
            break
        if value < goal:
            lo = q
        else:
            hi = q
        if (value < goal and q >= top) or (value > goal and q <= 0.0):
            break  # the goal is out of this member's reach: its nearest end it is
        if len(tried) == 1:
            step = (goal - value) / MATCH_SLOPE
        else:
            (q0, v0), (q1, v1) = tried[-2], tried[-1]
            step = (goal - v1) * (q1 - q0) / (v1 - v0) if v1 != v0 else math.inf
        q = q + step
        if q >= hi:
            q = top if hi == top and top not in (t for t, _ in tried) else (lo + hi) / 2
        elif q <= lo:
            q = 0.0 if lo == 0.0 and 0.0 not in (t for t, _ in tried) else (lo + hi) / 2
    return min(tried, key=lambda qv: abs(qv[1] - goal))[0]


def encode_to_size(
    image: ImageData,
    target_bpp: float,
    model: str | Path | None,
    device: torch.device,
    tile: int | None = None,
    effort: int = 0,
    content: str = AUTO,
) -> tuple[bytes, aecformat.AecHeader]:
    """The file at the highest quality whose whole size stays at or under ``target_bpp``.

    Each model runs its encoder once (a family may use more than one); only quantization and
    packing repeat, in a bisection over the continuous quality. When even quality 0 is larger,
    that smallest file is returned. Where a family's members hand over at a fixed -q (not
    matched by size), the file jumps in size, and a target inside that jump would land well
    under it: there both members are pushed past their share of -q to the target, and the one
    that decodes to the higher PSNR is kept. With ``effort``, the chosen quality is then
    refined, and kept unrefined if refinement would cross the target. ``content`` as ``Placer``'s.
    """
    placer = Placer(model, image, device, tile, content=content)
    budget = target_bpp * image.width * image.height / 8
    lo, hi, best = _fit(placer.pack, 0.0, 100.0, budget)
    jumps = placer.family is not None and placer.family.match is None  # hand-overs fixed in -q
    if jumps and len(best.data) <= budget and hi > lo:
        (low_path, low_local), (high_path, high_local) = placer.place(lo), placer.place(hi)
        if low_path != high_path:
            up = _fit(lambda q: placer.pack_own(low_path, q, lo), low_local, 100.0, budget)[2]
            down = _fit(lambda q: placer.pack_own(high_path, q, lo), 0.0, high_local, budget)[2]
            fitting = [c for c in (best, up, down) if len(c.data) <= budget]
            best = max(fitting, key=lambda c: _psnr_of(c, image, device))
    if effort > 0:
        latents = placer.analysis(best.path)
        data, header = pack_file(
            best.path, image, latents, best.local, best.header.quality, effort, device, best.residual
        )
        if len(data) <= budget:
            return data, header
    return best.data, best.header


def _fit(pack: Callable[[float], Packed], lo: float, hi: float, budget: float) -> tuple[float, float, Packed]:
    """Bisect [lo, hi] for the highest quality whose file fits ``budget``.

    Returns the final bracket (the fitting quality, the nearest one above that did not fit)
    and the file at the first; when even ``lo`` does not fit, its file with the bracket (lo, lo).
    """
    best = pack(lo)
    if len(best.data) > budget:
        return lo, lo, best
    top = pack(hi)
    if len(top.data) <= budget:
        return hi, hi, top
    while hi - lo > 100 / 2**14:
        mid = (lo + hi) / 2
        candidate = pack(mid)
        if len(candidate.data) <= budget:
            lo, best = mid, candidate
        else:
            hi = mid
    return lo, hi, best


def _psnr_of(packed: Packed, image: ImageData, device: torch.device) -> float:
    net, _ = model_on(packed.path, device)
    return psnr(image.rgb, decode_with(net, aecformat.unpack(packed.data), device).rgb)
