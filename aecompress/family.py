"""Several models behind one -q: a codec family maps each quality to a member model and its own -q.

One model trained at one rate-distortion trade-off covers only part of the quality range (its
transforms top out; finer steps buy little). A family file (``NAME.family.json`` in a models
folder) lists members, each serving a slice of the global 0..100 scale mapped linearly onto a
slice of that member's own quality. ``calibration.build`` makes such a file from measured curves, so that
the switch from one member to the next gains both bytes and PSNR.

Members can also hand over by size (``match``): each member after the first then starts, for
each image, at its own quality whose coded latents are, by the coder's estimate, ``match`` times
the previous member's at that member's top. Two models spend bits differently, so a hand-over
fixed in -q jumps by a factor that depends on the image (1.2-1.6 between the bundled members);
matched per image, a step of -q across the hand-over grows the file about as much as any other.
The encoder finds the start (``placement.Placer``); the family file holds only the ratio and each
member's calibrated mean start.

Finding an image's start takes the previous member's analysis as well as this one's. With
``fade`` the image's own start matters only over the first ``fade`` of a member's global range:
from the start the member's quality climbs straight to where the calibrated mapping is at
``fade``, and follows that mapping from there. Past the fade an encode runs one analysis.

A member whose files keep close to the previous member's across images can start at a fixed
quality instead (``Member.fixed_start``): its calibrated start, chosen by the builder for a ratio
of its own, serves every image, and no encode in its range runs the previous member. The
bundled ``context`` member is one: at its calibrated start its files are 1.00-1.05 times the
``hyperprior`` member's top file on the calibration images, where the two hyperpriors' ratio
spreads over 0.76-1.36.

A family can also keep stand-ins for one kind of picture (``Variant``): models that replace
members for images of that kind, ``graphics`` members, say, fine-tuned with generated screens,
slides, comics and patterns, for the images that ``content.kind_of`` finds flat. A variant either
takes its members' -q slices and hand-overs as they are, or carries its own, calibrated on
images of its kind (the stand-ins' curves cross elsewhere than the photo members' do, so the
photo hand-overs would cost PSNR there).

Each .aec file names the member that made it, so decoding needs no family at all.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aecompress.errors import ModelError
from aecompress.format import MAX_RESIDUAL_STEP, MIN_RESIDUAL_STEP
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
    fixed_start: bool = False  # in a matched family: starts at local_quality[0] for every image
    residual: tuple[float, float] | None = None  # a pixel residual's step at the ends of its range


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
class Variant:
    """Stand-in members for one kind of picture, told apart by how flat an image is.

    ``flat_share``: an image is of this kind when at least that share of its pixels equal their
    left neighbour (``content.flat_share``); photos rarely pass a half, drawn graphics mostly
    pass nine tenths. ``models`` maps a member's model to the one that takes its place;
    ``members``, when given, are the stand-ins' own slices, calibrated on images of the kind
    (otherwise each stand-in takes its member's); ``fade``, the family's fade for them instead
    (a stand-in's slice may be short, and a short fade makes an image whose start lies far
    below the calibrated one climb steeply: docs/results.md, the graphics variant's tail).
    """

    kind: str
    flat_share: float
    models: dict[str, str]
    members: tuple[Member, ...] = ()
    fade: float | None = None


PHOTO = "photo"  # the kind a family's own members serve


@dataclass(frozen=True)
class Family:
    """Members ordered from low to high quality; their global ranges tile 0..100."""

    name: str
    members: tuple[Member, ...]
    folder: Path
    card: dict[str, Any]
    match: float | None = None  # hand over by size: next member's first file / previous top file
    fade: float | None = None  # with match: the share of a member's range its image's start shapes
    variants: tuple[Variant, ...] = ()  # stand-in members for other kinds of picture

    def kinds(self) -> list[str]:
        """The kinds of picture this family has members for, its own (photo) first."""
        return [PHOTO] + [v.kind for v in self.variants]

    def for_kind(self, kind: str) -> Family:
        """The family as it serves one kind of picture: the variant's stand-ins in their
        members' places (the family itself for photos)."""
        if kind == PHOTO:
            return self
        for variant in self.variants:
            if variant.kind == kind:
                members = variant.members or tuple(
                    dataclasses.replace(m, model=variant.models.get(m.model, m.model)) for m in self.members
                )
                fade = self.fade if variant.fade is None else variant.fade
                return dataclasses.replace(self, members=members, variants=(), fade=fade)
        kinds = ", ".join(self.kinds())
        raise ModelError(f"family {self.name!r} has no members for {kind!r} images (it has: {kinds})")

    def member_named(self, model: str) -> Member | None:
        """The member whose model (or one of whose stand-ins) is ``model``."""
        for variant in self.variants:
            own = next((m for m in variant.members if m.model == model), None)
            if own is not None:
                return own
        for member in self.members:
            if member.model == model or any(v.models.get(member.model) == model for v in self.variants):
                return dataclasses.replace(member, model=model)
        return None

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
        ``top`` when its top depends on the image (``TopRule``). With ``fade``, past it the
        calibrated mapping, and before it a straight climb from ``start`` to that mapping
        (level, never falling, for an image whose start lies above where the climb ends)."""
        lo, hi = self.members[index].local_quality
        hi = hi if top is None else top
        fade = self.fade
        if start is not None and fade is None:
            lo = start
        elif start is not None and fade is not None and t < fade:
            join = lo + fade * (hi - lo)
            return min(100.0, max(0.0, min(join, start + t / fade * (join - start))))
        return min(100.0, max(0.0, lo + t * (hi - lo)))

    def needs_start(self, index: int, t: float) -> bool:
        """Whether member ``index`` at fraction ``t`` of its range depends on the image's start
        (and so on the previous member's analysis)."""
        if self.match is None or index == 0 or self.members[index].fixed_start:
            return False
        return self.fade is None or t < self.fade

    def model_path(self, member: Member) -> Path:
        """A member's file: beside the family file first, then the usual model search."""
        beside = self.folder / f"{member.model}.pt"
        return beside if beside.is_file() else resolve(member.model)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": FAMILY_KIND,
            "name": self.name,
            "members": _members_json(self.members),
        }
        if self.match is not None:
            data["match"] = self.match
        if self.fade is not None:
            data["fade"] = self.fade
        if self.variants:
            data["variants"] = [
                {"kind": v.kind, "flat_share": v.flat_share, "models": dict(v.models)}
                | ({"members": _members_json(v.members)} if v.members else {})
                | ({"fade": v.fade} if v.fade is not None else {})
                for v in self.variants
            ]
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
    members = _members(path, data.get("members"))
    card = data.get("card", {})
    match = data.get("match")
    ratio = isinstance(match, (int, float)) and not isinstance(match, bool)
    if match is not None and not (ratio and 1 <= match <= 2):
        raise ModelError(f"{path}: match must be a ratio between 1 and 2")
    fade = _fade(path, data.get("fade"), match)
    name = str(data.get("name", Path(path).name[: -len(FAMILY_SUFFIX)]))
    variants = _variants(path, data.get("variants", []), {m.model for m in members}, match)
    return Family(
        name, members, Path(path).parent, card, None if match is None else float(match), fade, variants,
    )  # fmt: skip


def _members_json(members: tuple[Member, ...]) -> list[dict[str, Any]]:
    return [
        {"model": m.model, "quality": list(m.quality), "local_quality": list(m.local_quality)}
        | ({"top_by_rate": dataclasses.asdict(m.top_by_rate)} if m.top_by_rate else {})
        | ({"fixed_start": True} if m.fixed_start else {})
        | ({"residual": list(m.residual)} if m.residual else {})
        for m in members
    ]


def _members(path: Path, value: Any) -> tuple[Member, ...]:
    """Member entries, checked: at least one, their global ranges tiling 0..100 in order."""
    try:
        members = tuple(
            Member(
                str(m["model"]),
                _pair(m["quality"]),
                _pair(m["local_quality"]),
                _rule(m.get("top_by_rate")),
                _flag(m.get("fixed_start", False)),
                _steps(m.get("residual")),
            )
            for m in value
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: bad member entry ({exc})") from exc
    if not members:
        raise ModelError(f"{path}: a family needs at least one member")
    edges = [members[0].quality[0]] + [m.quality[1] for m in members]
    starts = [m.quality[0] for m in members]
    if edges[0] != 0 or edges[-1] != 100 or starts[1:] != edges[1:-1] or edges != sorted(edges):
        raise ModelError(f"{path}: member quality ranges must tile 0..100 in order")
    return members


def _fade(path: Path, value: Any, match: Any) -> float | None:
    share = isinstance(value, (int, float)) and not isinstance(value, bool)
    if value is not None and not (share and match is not None and 0 < value <= 1):
        raise ModelError(f"{path}: fade must be a share between 0 and 1, with match")
    return None if value is None else float(value)


def _variants(path: Path, value: Any, members: set[str], match: Any) -> tuple[Variant, ...]:
    """A family file's variants, checked: known members, a share in (0, 1], kinds named once,
    their own members (if any) stand-ins of theirs, and a fade of their own (if any) valid."""
    try:
        variants = tuple(
            Variant(
                str(v["kind"]),
                float(v["flat_share"]),
                {str(a): str(b) for a, b in v["models"].items()},
                _members(path, v["members"]) if "members" in v else (),
                _fade(path, v.get("fade"), match),
            )
            for v in value
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"{path}: bad variant entry ({exc})") from exc
    kinds = [PHOTO] + [v.kind for v in variants]
    if len(set(kinds)) != len(kinds):
        raise ModelError(f"{path}: each kind of picture may have one variant ({', '.join(kinds)})")
    for v in variants:
        if not 0 < v.flat_share <= 1:
            raise ModelError(f"{path}: variant {v.kind!r}: flat_share must be in (0, 1]")
        if not v.models or not set(v.models) <= members:
            raise ModelError(f"{path}: variant {v.kind!r} must replace members of the family")
        if not {m.model for m in v.members} <= set(v.models.values()):
            raise ModelError(f"{path}: variant {v.kind!r}: its own members must be its stand-ins")
    return variants


def _rule(value: Any) -> TopRule | None:
    if value is None:
        return None
    rule = TopRule(float(value["bpp"]), float(value["per_octave"]), float(value["lowest"]))
    if not (rule.bpp > 0 and 0 <= rule.per_octave <= 100 and 0 <= rule.lowest <= 100):
        raise ValueError("top_by_rate needs bpp > 0, per_octave and lowest in 0..100")
    return rule


def _steps(value: Any) -> tuple[float, float] | None:
    """A member's residual steps, each a step the file format stores (falling: -q rising)."""
    if value is None:
        return None
    hi, lo = _pair(value)
    if not (MIN_RESIDUAL_STEP <= lo <= hi <= MAX_RESIDUAL_STEP):
        raise ValueError(f"residual steps must fall within {MIN_RESIDUAL_STEP:g}..{MAX_RESIDUAL_STEP:g}")
    return hi, lo


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("fixed_start must be true or false")
    return value


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


def available_families() -> list[Path]:
    """Every family file in the model search folders."""
    return search_files(FAMILY_SUFFIX)


def save(family: Family, path: Path) -> None:
    """Write a family file (atomically, replacing an older one)."""
    from aecompress.fileio import atomic_write

    atomic_write(Path(path), (json.dumps(family.to_json(), indent=2) + "\n").encode(), force=True)
