"""Offline: a family built from its members' measured curves on held-out images.

``scripts/make_family.py`` measures each member over a sweep of its own -q on calibration
images (never Kodak) and calls ``build``; the result is a family file, which is all the encoder
reads at run time (``aecompress.family``). Nothing else imports this module.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aecompress import pack, passes
from aecompress.device import select_device
from aecompress.errors import ModelError
from aecompress.family import Family, Member, TopRule
from aecompress.format import MAX_RESIDUAL_STEP, MIN_RESIDUAL_STEP, unpack
from aecompress.metrics import psnr

Point = tuple[float, float, float]  # (member's own -q, mean bpp, mean PSNR)
PerImage = dict[str, dict[float, list[tuple[float, float]]]]  # model -> its -q -> (bpp, PSNR) per image


def mean_curves(per_image: PerImage) -> list[tuple[str, list[Point]]]:
    """Mean (bpp, PSNR) over the images at each quality: the curves ``build`` chooses members by."""
    return [
        (model, [(q, sum(b for b, _ in runs) / len(runs), sum(p for _, p in runs) / len(runs))
                 for q, runs in sorted(table.items())])
        for model, table in per_image.items()
    ]  # fmt: skip


def build(
    name: str,
    curves: Sequence[tuple[str, Sequence[Point]]],
    folder: Path,
    card: dict[str, Any] | None = None,
    per_image: PerImage | None = None,
    match: float | None = None,
    top_rule: TopRule | None = None,
    fade: float | None = None,
    fixed: Mapping[str, float] | None = None,
    middle_tops: Mapping[str, float] | None = None,
    last_top: float | None = None,
) -> Family:
    """A family from measured curves: (model, [(its -q, mean bpp, mean PSNR), ...]) per member.

    Members are ordered by the highest PSNR they reach (not by their lowest rate: a finer-strided
    model can start below a coarser one and still end far above it). Each next member takes over
    at its first measured quality whose PSNR beats the family so far (every member chosen before
    it) at that rate; the members before keep only the qualities below that point in both bpp and
    PSNR, so every switch gains both. A member left with fewer than two points adds nothing and is
    dropped (and the takeover is found again without it); a member that never beats the family so
    far is left out. Each member's share of the global 0..100 scale is proportional to the
    log-rate span it covers, so -q moves the file size evenly across members.

    With ``per_image`` measurements, each switch is then moved to where it gains bytes and PSNR
    on as many calibration images as it can, not only on their mean (``_seam``): two members
    spend their bits differently, so an image can lose both at a switch the means say gains both.

    With ``match`` (and ``per_image``), members hand over by size instead: the first runs to its
    own top (lowered per image by a ``top_rule``: ``TopRule``), a middle one to its last quality
    below where the next one starts to win, and the next one's calibrated start is the mean over
    the images of its quality whose file is ``match`` times that top (``_matched_start``); the
    encoder finds it per image. A member named in ``fixed`` starts at the mean for its own ratio
    there, the same for every image (``Member.fixed_start``: no per-image search, one analysis).
    ``last_top`` ends the last member at that quality of its own (where a residual tail takes
    over: ``with_residual_tail``), its share of the scale measured to there.
    A middle member named in ``middle_tops`` runs to that quality of its own instead, even where the
    next one would start to win a little below it (the default -q kept on a faster member).
    """
    fixed, told = dict(fixed or {}), dict(middle_tops or {})
    ordered = sorted(curves, key=lambda c: max(p[2] for p in c[1]))
    chosen: list[tuple[str, list[Point]]] = []  # each member's points from where it takes over
    for model, points in ordered:
        pts = sorted(points)
        while chosen:
            chain = [p for _, kept in _kept(chosen) for p in kept]
            take = next((p for p in pts if p[2] > _psnr_at(chain, p[1])), None)
            if take is None:
                pts = []
                break
            kept = _below(chosen[-1][1], take)
            if len(kept) >= 2 or (len(chosen) == 1 and kept):
                pts = [p for p in pts if p[0] >= take[0]]
                break
            chosen.pop()
        if pts:
            chosen.append((model, pts))
    if not chosen:
        raise ModelError("no measured points to build a family from")
    rules: list[TopRule | None] = [None] * len(chosen)
    if match is not None and per_image is not None:
        rules[0] = top_rule if len(chosen) > 1 else None
        takes = [pts[0] for _, pts in chosen]  # where each member first beats the ones before
        for i in range(1, len(chosen)):
            if i > 1:  # a middle member tops out where the next one starts to win, or where told
                model, pts = chosen[i - 1]
                given = told.get(model)
                kept = _below(pts, takes[i]) if given is None else [p for p in pts if p[0] <= given]
                chosen[i - 1] = (model, kept)
            tops = _tops(chosen[i - 1], per_image, rules[i - 1])
            start = _matched_start(tops, chosen[i][0], per_image, fixed.get(chosen[i][0], match))
            chosen[i] = (chosen[i][0], _from(per_image_curve(per_image, chosen[i][0]), start))
    else:
        match = None
        chosen = _kept(chosen)
        if per_image is not None:
            for i in range(len(chosen) - 1):
                chosen[i], chosen[i + 1] = _seam(chosen[i], chosen[i + 1], per_image, first=i == 0)
    if last_top is not None:
        model, pts = chosen[-1]
        chosen[-1] = (model, _until(pts, last_top))
    spans = [max(math.log(pts[-1][1]) - math.log(pts[0][1]), 1e-3) for _, pts in chosen]
    if rules[0] is not None and per_image is not None:  # the first member's span ends at each image's top
        first_model, first_pts = chosen[0]
        firsts = [b for b, _ in per_image[first_model][first_pts[0][0]]]
        tops0 = _tops(chosen[0], per_image, rules[0])
        spans[0] = max(sum(math.log(t / f) for t, f in zip(tops0, firsts, strict=True)) / len(firsts), 1e-3)
    members, edge = [], 0.0
    for i, ((model, pts), span) in enumerate(zip(chosen, spans, strict=True)):
        top = 100.0 if i == len(chosen) - 1 else round(edge + 100 * span / sum(spans), 2)
        pinned = match is not None and i > 0 and model in fixed
        members.append(Member(model, (edge, top), (pts[0][0], pts[-1][0]), rules[i], pinned))
        edge = top
    return Family(name, tuple(members), folder, card or {}, match, fade if match is not None else None)


def with_residual_tail(
    members: Sequence[Member],
    start: float,
    qualities: tuple[float, float],
    steps: Sequence[float],
    only_last: bool = False,
    knee: float | None = None,
) -> tuple[Member, ...]:
    """The members squeezed into the global -q 0..``start``, the last one stopping at its own
    ``qualities[0]``, and from ``start`` to 100 that member climbing on to ``qualities[1]`` with a
    pixel residual whose step falls from ``steps[0]`` to ``steps[1]`` (``aecompress.residual``):
    where a member's PSNR levels off (drawn graphics), the residual keeps the curve rising. On
    generated images the best pairs of the member's -q and the step climb together (a finer step
    wants a finer base), so the tail moves both. More than two ``steps`` split the tail into even
    pieces of -q, one member each, the step falling geometrically within each: a residual's size
    grows faster as its step gets finer, so a slower fall at the fine end keeps each -q's growth
    even. With ``only_last`` the members below the last keep their ranges and only the last one's
    shrinks to end at ``start`` (every lower -q as before); with a ``knee`` as well, it keeps
    its own pace of -q up to that global -q and only the rest of its range, a member of the same
    model, speeds up (a uniform squeeze would steepen the step just past the hand-over into it)."""
    last = members[-1]
    if last.top_by_rate is not None:
        raise ModelError(f"{last.model} tops out per image (top_by_rate): a residual tail needs a fixed top")
    if not 0 < start < 100:
        raise ModelError(f"a residual tail starts inside 0..100, not at {start:g}")
    falling = all(a >= b for a, b in itertools.pairwise(steps))
    if len(steps) < 2 or not falling or not MIN_RESIDUAL_STEP <= steps[-1] <= steps[0] <= MAX_RESIDUAL_STEP:
        raise ModelError(f"residual steps fall within {MIN_RESIDUAL_STEP:g}..{MAX_RESIDUAL_STEP:g}")
    if not last.local_quality[0] <= qualities[0] <= qualities[1] <= 100:
        raise ModelError(
            f"{last.model} starts at its -q {last.local_quality[0]:.4g}: a tail from its {qualities[0]:g} "
            f"to {qualities[1]:g} must lie above that, rising, within 100"
        )
    if only_last and start <= last.quality[0]:
        raise ModelError(f"{last.model} starts at -q {last.quality[0]:g}: its tail must start above that")
    if knee is not None and not (only_last and last.quality[0] < knee < start):
        raise ModelError(f"a knee at -q {knee:g} must lie between {last.model}'s start and the tail's")
    scale = 1.0 if only_last else start / 100
    squeezed = [
        dataclasses.replace(m, quality=(round(m.quality[0] * scale, 2), round(m.quality[1] * scale, 2)))
        for m in members
    ]
    squeezed[-1] = dataclasses.replace(squeezed[-1], quality=(squeezed[-1].quality[0], start),
                                       local_quality=(last.local_quality[0], qualities[0]))  # fmt: skip
    if knee is not None:
        (q0, q1), (l0, l1) = last.quality, last.local_quality
        bend = l0 + (knee - q0) * (l1 - l0) / (q1 - q0)
        faster = Member(last.model, (knee, start), (bend, qualities[0]), None, True)
        kept = dataclasses.replace(squeezed[-1], quality=(q0, knee), local_quality=(l0, bend))
        squeezed[-1:] = [kept, faster]
    pieces = len(steps) - 1
    edges = [round(start + (100.0 - start) * i / pieces, 2) for i in range(pieces + 1)]
    local = [qualities[0] + (qualities[1] - qualities[0]) * i / pieces for i in range(pieces + 1)]
    tail = [
        Member(
            last.model,
            (edges[i], edges[i + 1]),
            (local[i], local[i + 1]),
            None,
            True,
            (steps[i], steps[i + 1]),
        )
        for i in range(pieces)
    ]
    return (*squeezed, *tail)


def per_image_curve(per_image: PerImage, model: str) -> list[Point]:
    """A member's mean curve from its per-image measurements."""
    return dict(mean_curves({model: per_image[model]}))[model]


def _tops(low: tuple[str, list[Point]], per_image: PerImage, rule: TopRule | None) -> list[float]:
    """Each calibration image's rate at the member's top: its last point, or where ``rule``
    puts the top for that image (log-rate interpolated between measured qualities)."""
    name, pts = low
    nominal = pts[-1][0]
    table = sorted(per_image[name].items())
    rates = []
    for j, (bpp, _) in enumerate(per_image[name][nominal]):
        top = nominal if rule is None else rule.top(nominal, bpp)
        curve = [(q, math.log(runs[j][0])) for q, runs in table]
        rates.append(math.exp(_interpolate(curve, top)))
    return rates


def _interpolate(curve: Sequence[tuple[float, float]], x: float) -> float:
    """y at x on a piecewise-linear (x, y) curve sorted by x, flat beyond its ends."""
    if x <= curve[0][0]:
        return curve[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / max(x1 - x0, 1e-12)
    return curve[-1][1]


def _matched_start(tops: Sequence[float], high: str, per_image: PerImage, match: float) -> float:
    """The mean over calibration images of ``high``'s quality whose rate is ``match`` times the
    previous member's at its top (``tops``, per image; log-rate interpolated)."""
    table = sorted(per_image[high].items())
    starts = []
    for j, top_bpp in enumerate(tops):
        by_rate = [(math.log(runs[j][0]), q) for q, runs in table]  # rising with q
        starts.append(_interpolate(by_rate, math.log(match * top_bpp)))
    return sum(starts) / len(starts)


def _until(points: Sequence[Point], top: float) -> list[Point]:
    """A curve up to quality ``top``, its last point interpolated there (its first point at
    least: a top below the curve's start leaves that start)."""
    pts = sorted(points)
    before = [p for p in pts if p[0] < top]
    after = [p for p in pts if p[0] >= top]
    if not before or not after:
        return before or [pts[0]]
    (q0, b0, p0), (q1, b1, p1) = before[-1], after[0]
    t = (top - q0) / (q1 - q0)
    last = (top, math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0))), p0 + t * (p1 - p0))
    return [*before, last]


def _from(points: Sequence[Point], start: float) -> list[Point]:
    """A curve from quality ``start`` on, its first point interpolated there."""
    pts = sorted(points)
    after = [p for p in pts if p[0] > start]
    before = [p for p in pts if p[0] <= start]
    if not before or not after:
        return after or [pts[-1]]
    (q0, b0, p0), (q1, b1, p1) = before[-1], after[0]
    t = (start - q0) / (q1 - q0)
    first = (start, math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0))), p0 + t * (p1 - p0))
    return [first, *after]


def _seam(
    low: tuple[str, list[Point]], high: tuple[str, list[Point]], per_image: PerImage, first: bool
) -> tuple[tuple[str, list[Point]], tuple[str, list[Point]]]:
    """Where ``low`` hands over to ``high``: its last quality and ``high``'s first.

    Of the pairs that leave ``low`` a range (two or more points, unless it is the first member),
    the one under which the most calibration images gain both bytes and PSNR wins; ties go to
    the smallest mean jump in log-rate, so the file grows as little as it can at the switch.
    """
    (low_name, low_pts), (high_name, high_pts) = low, high
    a_runs, b_runs = per_image.get(low_name), per_image.get(high_name)
    if not a_runs or not b_runs:
        return low, high
    best: tuple[int, float] | None = None
    pick = (low_pts, high_pts)
    least = 1 if first else 2
    for end in range(least, len(low_pts) + 1):
        a = a_runs.get(low_pts[end - 1][0])
        for start in range(len(high_pts) - 1):
            b = b_runs.get(high_pts[start][0])
            if a is None or b is None or len(a) != len(b):
                continue
            gains = sum(bb > ba and pb > pa for (ba, pa), (bb, pb) in zip(a, b, strict=True))
            jump = sum(math.log(bb / ba) for (ba, _), (bb, _) in zip(a, b, strict=True)) / len(a)
            score = (gains, -jump)
            if best is None or score > best:
                best, pick = score, (low_pts[:end], high_pts[start:])
    return (low_name, pick[0]), (high_name, pick[1])


def _below(points: Sequence[Point], take: Point) -> list[Point]:
    """The points a member keeps when the next one takes over at ``take``: lower in bpp and PSNR."""
    return [q for q in points if q[1] < take[1] and q[2] < take[2]]


def _kept(chosen: list[tuple[str, list[Point]]]) -> list[tuple[str, list[Point]]]:
    """Each member's points up to where the next member takes over."""
    return [
        (model, _below(pts, chosen[i + 1][1][0]) if i + 1 < len(chosen) else list(pts))
        for i, (model, pts) in enumerate(chosen)
    ]


def _psnr_at(points: Sequence[Point], bpp: float) -> float:
    """A member's PSNR at a rate, interpolated; flat beyond its top, -inf below its bottom."""
    by_rate = sorted(points, key=lambda p: p[1])
    if bpp < by_rate[0][1]:
        return -math.inf
    for (_, b0, p0), (_, b1, p1) in itertools.pairwise(by_rate):
        if b0 <= bpp <= b1:
            return p0 + (p1 - p0) * (bpp - b0) / max(b1 - b0, 1e-12)
    return max(p[2] for p in points)


def measure_per_image(
    models: Sequence[Path], images: Sequence[Any], qualities: Sequence[float], device: str = "cpu"
) -> PerImage:
    """Each model's (bpp, PSNR) on each calibration image (never Kodak) at each of its own qualities.

    The encoder runs once per image and model; each quality only quantizes, packs and decodes.
    """
    dev = select_device(device)
    out: PerImage = {}
    for path in models:
        net, info = passes.model_on(Path(path), dev)
        table: dict[float, list[tuple[float, float]]] = {float(q): [] for q in qualities}
        for _, image in images:
            latents = passes.analyse(net, image.rgb, dev)
            for q in qualities:
                data, _ = pack.pack_latents(net, info.name, info.weights_hash, image, latents, float(q))
                back = pack.decode_with(net, unpack(data), dev)
                bpp = 8 * len(data) / (image.width * image.height)
                table[float(q)].append((bpp, psnr(image.rgb, back.rgb)))
        out[info.name] = table
    return out
