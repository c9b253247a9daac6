"""Several models behind one -q: a codec family maps each quality to a member model and its own -q.

One model trained at one rate-distortion trade-off covers only part of the quality range (its
transforms top out; finer steps buy little). A family file (``NAME.family.json`` in a models
folder) lists members, each serving a slice of the global 0..100 scale mapped linearly onto a
slice of that member's own quality. ``build`` makes such a file from measured curves, so that
the switch from one member to the next gains both bytes and PSNR.

Members can also hand over by size (``match``): each member after the first then starts, for
each image, at its own quality whose coded latents are, by the coder's estimate, ``match`` times
the previous member's at that member's top. Two models spend bits differently, so a hand-over
fixed in -q jumps by a factor that depends on the image (1.2-1.6 between the bundled members);
matched per image, a step of -q across the hand-over grows the file about as much as any other.
The encoder finds the start (``codec.Placer``); the family file holds only the ratio and each
member's calibrated mean start.

Each .aec file names the member that made it, so decoding needs no family at all.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aecompress.errors import ModelError
from aecompress.modelfile import DEFAULT_MODEL, resolve, search_dirs, search_files

FAMILY_KIND = "aecompress-family"
FAMILY_SUFFIX = ".family.json"


@dataclass(frozen=True)
class Member:
    """One model of a family and the slice of the global scale it serves."""

    model: str
    quality: tuple[float, float]  # global -q range served
    local_quality: tuple[float, float]  # the member's own -q at the ends of that range
    top_by_rate: TopRule | None = None  # a lower top, per image, for images it codes at high rates


@dataclass(frozen=True)
class TopRule:
    """Where a member stops for an image, from the rate it reaches at its nominal top.

    A stride-16 member spends its last qualities poorly on detailed images (its curve flattens
    where the stride-8 member's still climbs) and well on smooth ones. Measured per image on the
    calibration set, the best hand-over quality falls with the rate of the member's top file;
    this rule follows that: the top stays where it is up to ``bpp``, and comes down by
    ``per_octave`` qualities for each doubling of the rate above it, but not below ``lowest``.
    """

    bpp: float
    per_octave: float
    lowest: float

    def top(self, nominal: float, bpp: float) -> float:
        """The member's own top quality for an image whose file at ``nominal`` has ``bpp``."""
        drop = self.per_octave * max(0.0, math.log2(max(bpp, 1e-9) / self.bpp))
        return max(min(self.lowest, nominal), nominal - drop)


@dataclass(frozen=True)
class Family:
    """Members ordered from low to high quality; their global ranges tile 0..100."""

    name: str
    members: tuple[Member, ...]
    folder: Path
    card: dict[str, Any]
    match: float | None = None  # hand over by size: next member's first file / previous top file

    def pick(self, quality: float) -> tuple[Path, float]:
        """The member model file and its own quality for a global quality (calibrated starts)."""
        index, t = self.slot(quality)
        return self.model_path(self.members[index]), self.local(index, t)

    def slot(self, quality: float) -> tuple[int, float]:
        """The member serving a global quality and how far along its global range it lies (0..1)."""
        if not 0 <= quality <= 100:
            raise ValueError(f"quality {quality} is outside 0..100")
        for index, member in enumerate(self.members):
            lo, hi = member.quality
            if quality < hi or index == len(self.members) - 1:
                return index, 0.0 if hi == lo else (quality - lo) / (hi - lo)
        raise AssertionError("unreachable: the last member takes the rest")

    def local(self, index: int, t: float, start: float | None = None, top: float | None = None) -> float:
        """A member's own quality at fraction ``t`` of its range, from ``start`` when matched, to
        ``top`` when its top depends on the image (``TopRule``)."""
        lo, hi = self.members[index].local_quality
        lo = lo if start is None else start
        hi = hi if top is None else top
        return min(100.0, max(0.0, lo + t * (hi - lo)))

    def model_path(self, member: Member) -> Path:
        """A member's file: beside the family file first, then the usual model search."""
        beside = self.folder / f"{member.model}.pt"
        return beside if beside.is_file() else resolve(member.model)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": FAMILY_KIND,
            "name": self.name,
            "members": [
                {"model": m.model, "quality": list(m.quality), "local_quality": list(m.local_quality)}
                | ({"top_by_rate": dataclasses.asdict(m.top_by_rate)} if m.top_by_rate else {})
                for m in self.members
            ],
        }
        if self.match is not None:
            data["match"] = self.match
        data["card"] = self.card
        return data


def load_family(path: Path) -> Family:
    """Read and check a family file: members in order, global ranges tiling 0..100."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable family file ({exc})") from exc
    if not isinstance(data, dict) or data.get("kind") != FAMILY_KIND:
        raise ModelError(f"{path}: not an aecompress family file")
    try:
        members = tuple(
            Member(
                str(m["model"]), _pair(m["quality"]), _pair(m["local_quality"]), _rule(m.get("top_by_rate"))
            )
            for m in data["members"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: bad member entry ({exc})") from exc
    if not members:
        raise ModelError(f"{path}: a family needs at least one member")
    edges = [members[0].quality[0]] + [m.quality[1] for m in members]
    starts = [m.quality[0] for m in members]
    if edges[0] != 0 or edges[-1] != 100 or starts[1:] != edges[1:-1] or edges != sorted(edges):
        raise ModelError(f"{path}: member quality ranges must tile 0..100 in order")
    card = data.get("card", {})
    match = data.get("match")
    ratio = isinstance(match, (int, float)) and not isinstance(match, bool)
    if match is not None and not (ratio and 1 <= match <= 2):
        raise ModelError(f"{path}: match must be a ratio between 1 and 2")
    name = str(data.get("name", Path(path).name[: -len(FAMILY_SUFFIX)]))
    return Family(name, members, Path(path).parent, card, None if match is None else float(match))


def _rule(value: Any) -> TopRule | None:
    if value is None:
        return None
    rule = TopRule(float(value["bpp"]), float(value["per_octave"]), float(value["lowest"]))
    if not (rule.bpp > 0 and 0 <= rule.per_octave <= 100 and 0 <= rule.lowest <= 100):
        raise ValueError("top_by_rate needs bpp > 0, per_octave and lowest in 0..100")
    return rule


def _pair(value: Any) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("ranges must be finite")
    return lo, hi


def find_family(spec: str | os.PathLike[str] | None) -> Family | None:
    """The family a --model value names, if it names one (None means the default name).

    Folders are searched in order (the user's first). Within a folder a family file comes before
    a model file of the same name; a user's own ``default.pt`` still wins over the bundled
    ``default.family.json``.
    """
    text = DEFAULT_MODEL if spec is None else os.fspath(spec)
    if text.endswith(FAMILY_SUFFIX):
        return load_family(Path(text).expanduser())
    if Path(text).expanduser().is_file():
        return None
    for folder in search_dirs():
        candidate = folder / f"{text}{FAMILY_SUFFIX}"
        if candidate.is_file():
            return load_family(candidate)
        if (folder / f"{text}.pt").is_file():
            return None
    return None


Point = tuple[float, float, float]  # (member's own -q, mean bpp, mean PSNR)


def available_families() -> list[Path]:
    """Every family file in the model search folders."""
    return search_files(FAMILY_SUFFIX)


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

    With ``match`` (and ``per_image``), members hand over by size instead: each runs to its own
    top, and the next one's calibrated start is the mean over the images of its quality whose
    file is ``match`` times that top (``_matched_start``); the encoder finds it per image. A
    ``top_rule`` lowers the first member's top per image (``TopRule``).
    """
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
        for i in range(1, len(chosen)):
            tops = _tops(chosen[i - 1], per_image, rules[i - 1])
            start = _matched_start(tops, chosen[i][0], per_image, match)
            chosen[i] = (chosen[i][0], _from(per_image_curve(per_image, chosen[i][0]), start))
    else:
        match = None
        chosen = _kept(chosen)
        if per_image is not None:
            for i in range(len(chosen) - 1):
                chosen[i], chosen[i + 1] = _seam(chosen[i], chosen[i + 1], per_image, first=i == 0)
    spans = [max(math.log(pts[-1][1]) - math.log(pts[0][1]), 1e-3) for _, pts in chosen]
    if rules[0] is not None and per_image is not None:  # the first member's span ends at each image's top
        first_model, first_pts = chosen[0]
        firsts = [b for b, _ in per_image[first_model][first_pts[0][0]]]
        tops0 = _tops(chosen[0], per_image, rules[0])
        spans[0] = max(sum(math.log(t / f) for t, f in zip(tops0, firsts, strict=True)) / len(firsts), 1e-3)
    members, edge = [], 0.0
    for i, ((model, pts), span) in enumerate(zip(chosen, spans, strict=True)):
        top = 100.0 if i == len(chosen) - 1 else round(edge + 100 * span / sum(spans), 2)
        members.append(Member(model, (edge, top), (pts[0][0], pts[-1][0]), rules[i]))
        edge = top
    return Family(name, tuple(members), folder, card or {}, match)


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


def save(family: Family, path: Path) -> None:
    """Write a family file (atomically, replacing an older one)."""
    from aecompress.fileio import atomic_write

    atomic_write(Path(path), (json.dumps(family.to_json(), indent=2) + "\n").encode(), force=True)
