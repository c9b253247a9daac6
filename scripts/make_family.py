"""Measure member models on calibration images and write the family file that puts them behind -q.

    python scripts/make_family.py --name default --members models/hyperprior-low.pt models/hyperprior.pt \
        --calibration ../shared/data/bsds500/val --images 24 --out models/default.family.json

Calibrate on held-out training-set images, never on Kodak (the evaluation set). Prints each
member's measured curve and the resulting family. Every image's bytes and PSNR go into
NAME.calibration.json beside it: the builder puts each switch where it gains both on as many
images as it can. Check the family with `python benchmarks/kodak.py` and the -q monotonicity test
(`pytest tests/test_quality.py`) before committing it. `--remeasure no` rebuilds the family from
the measurements already stored beside --out (after a change to the builder); `--remeasure new`
measures only the members not stored there (a member added to a family). `--match 1.03` makes
members hand over by size, per image (see aecompress/family.py); check it with
`python benchmarks/smoothness.py`.

`--variant graphics:0.6:MODEL=STANDIN,...` adds stand-ins for flat images; with
`--variant-calibration graphics=FOLDER` they get their own slices and hand-overs, built the same
way from their curves on the images of FOLDER that are of that kind (generated ones, say:
`python benchmarks/synthetic_set.py FOLDER --first-seed 5000`, seeds apart from any benchmark's),
measured into NAME.KIND.calibration.json beside --out. Stand-in model files are looked for beside
--out first.

`--variant-handover graphics=44` moves the variant's first hand-over to a global -q of choice.

`--residual-tail graphics=61:60-100:128-4` ends a kind's range (photo, the family's own, when no
KIND is named) with a pixel residual: its members squeezed into `-q` 0-61, the last stopping at
its own -q 60, and from 61 to 100 that member climbing from its 60 to 100 while a residual's step
falls from 128 to 4 (aecompress/residual.py). More steps (`128-16-4`) split the tail into even
pieces, the step falling geometrically within each. A trailing `:last` (`93:100-100:24-4:last`)
leaves the members below the last where they were and shrinks only the last one's range;
`:last@84` keeps the last one's own pace up to `-q` 84 and speeds up only above it.
Pick the numbers from `benchmarks/residual.py` on calibration images.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from aecompress import calibration, family
from aecompress.content import flat_share
from aecompress.imageio import IMAGE_SUFFIXES, ImageData, read_image
from aecompress.modelfile import read_info, resolve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", default="default")
    parser.add_argument("--members", type=Path, nargs="+", help="model files (any order)")
    parser.add_argument("--calibration", type=Path, help="folder of held-out images (never Kodak)")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--qualities", default=",".join(f"{q / 2:g}" for q in range(0, 201, 5)))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--remeasure",
        choices=["yes", "no", "new"],
        default="yes",
        help="no: rebuild from the measurements beside --out; new: measure only the members "
        "they lack (by model name: delete a member's entry when its weights change)",
    )
    parser.add_argument(
        "--match",
        type=float,
        default=None,
        help="hand over by size: each next member starts, per image, at this ratio to the last top file",
    )
    parser.add_argument(
        "--top-rule",
        default=None,
        help="with --match: BPP,PER_OCTAVE,LOWEST, the first member's top per image (family.TopRule)",
    )
    parser.add_argument(
        "--fade",
        type=float,
        default=None,
        help="with --match: the share of each later member's range its per-image start shapes "
        "(past it an encode runs one analysis; see aecompress/family.py)",
    )
    parser.add_argument(
        "--fixed",
        action="append",
        default=[],
        metavar="MODEL=RATIO",
        help="with --match: MODEL starts at one calibrated quality for every image, the mean over "
        "the calibration images of where its file is RATIO times the previous member's top "
        "(no per-image search: one analysis in its range)",
    )
    parser.add_argument(
        "--top",
        action="append",
        default=[],
        metavar="MODEL=Q",
        help="with --match: a middle MODEL runs to its own -q Q, even where the next member would "
        "start to win a little below it (to keep a -q, such as the default, on a faster member)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="KIND:SHARE:MODEL=STANDIN,...",
        help="stand-in members for images of KIND (such as graphics) with at least SHARE of their "
        "pixels equal to the left neighbour: each STANDIN codes at its MODEL's -q slice",
    )
    parser.add_argument(
        "--variant-calibration",
        action="append",
        default=[],
        metavar="KIND=FOLDER",
        help="give KIND's stand-ins slices of their own, calibrated on FOLDER's images of that kind",
    )
    parser.add_argument(
        "--variant-fade",
        action="append",
        default=[],
        metavar="KIND=SHARE",
        help="with --match: KIND's stand-ins fade over this share of each member's range instead "
        "of --fade's (a short stand-in slice climbs gentler over a longer fade)",
    )
    parser.add_argument(
        "--variant-handover",
        action="append",
        default=[],
        metavar="KIND=Q",
        help="KIND's second member takes over at the global -q Q instead of where the calibration "
        "puts it (each keeps its own -q range: the first reaches its top at Q)",
    )
    parser.add_argument(
        "--residual-tail",
        action="append",
        default=[],
        metavar="[KIND=]FROM:Q-Q100:STEP-...-STEP100[:last[@KNEE]]",
        help="end KIND's range (default: photo) from the global -q FROM with its last member, from "
        "its own -q Q to Q100, plus a pixel residual whose step falls from STEP to STEP100 (through "
        "each step between, in even pieces; with :last, only the last member's range shrinks, and "
        "with :last@KNEE only above KNEE)",
    )
    args = parser.parse_args(argv)
    variants = tuple(_variant(parser, spec) for spec in args.variant)
    tails = dict(_tail(parser, spec) for spec in args.residual_tail)
    folders = dict(
        _named(parser, spec, "--variant-calibration", "FOLDER") for spec in args.variant_calibration
    )
    unknown = set(folders) - {v.kind for v in variants}
    if unknown:
        parser.error(f"--variant-calibration names no --variant: {', '.join(sorted(unknown))}")
    unknown = set(tails) - {v.kind for v in variants} - {family.PHOTO}
    if unknown:
        parser.error(f"--residual-tail names no --variant: {', '.join(sorted(unknown))}")
    fades = _named_values(parser, args.variant_fade, "--variant-fade", "SHARE", (0.01, 1.0))
    unknown = set(fades) - {v.kind for v in variants}
    if unknown:
        parser.error(f"--variant-fade names no --variant: {', '.join(sorted(unknown))}")
    if fades and args.match is None:
        parser.error("--variant-fade needs --match")
    variants = tuple(dataclasses.replace(v, fade=fades.get(v.kind)) for v in variants)
    handovers = _named_values(parser, args.variant_handover, "--variant-handover", "Q", (0.0, 100.0))
    unknown = set(handovers) - set(folders)
    if unknown:
        parser.error(f"--variant-handover names no --variant-calibration: {', '.join(sorted(unknown))}")
    fixed = _named_values(parser, args.fixed, "--fixed", "RATIO", (0.5, 2.0))
    tops = _named_values(parser, args.top, "--top", "Q", (0.0, 100.0))
    rule = family.TopRule(*(float(v) for v in args.top_rule.split(","))) if args.top_rule else None
    torch.set_num_threads(args.threads)
    given = "python scripts/make_family.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.remeasure == "no":
        card = json.loads(args.out.read_text(encoding="utf-8"))["card"]
        curves = [(name, [tuple(p) for p in points]) for name, points in card["curves"].items()]
        sidecar = _calibration_path(args.out)
        per_image = _per_image_from_json(json.loads(sidecar.read_text())) if sidecar.is_file() else None
        card["rebuilt"] = given
    else:
        if not args.members or not args.calibration:
            parser.error("--members and --calibration are needed unless --remeasure no")
        images = _images(args.calibration, args.images)
        per_image = _measured(list(args.members), images, args, _calibration_path(args.out))
        curves = calibration.mean_curves(per_image)
        for name, points in curves:
            print(name)
            for q, bpp, psnr in points:
                print(f"  -q {q:5.1f}: {bpp:.4f} bpp, {psnr:.2f} dB")
        card = {
            "calibration": f"{len(images)} images from {args.calibration}",
            "curves": {name: points for name, points in curves},
            "command": given,
            "per_image": f"every calibration image's bpp and PSNR: {_calibration_path(args.out).name}",
        }
    built = calibration.build(
        args.name,
        curves,
        args.out.parent,
        card,
        per_image,
        args.match,
        rule,
        args.fade,
        fixed,
        tops,
        _tail_top(tails, family.PHOTO),
    )
    variants = tuple(
        _calibrated(args, v, tails, built, folders.get(v.kind), rule, fixed, tops) for v in variants
    )
    built = _tailed(dataclasses.replace(built, variants=variants), tails)
    family.save(_handed_over(built, handovers), args.out)
    print(json.dumps(family.load_family(args.out).to_json()["members"], indent=2))
    return 0


def _images(folder: Path, count: int, kind: family.Variant | None = None) -> list[tuple[str, ImageData]]:
    """The first ``count`` images of a folder (of ``kind``'s flatness, for a variant)."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    images = []
    for path in paths:
        image = read_image(path)
        if kind is None or flat_share(image.rgb) >= kind.flat_share:
            images.append((path.name, image))
        if len(images) == count:
            break
    return images


def _measured(
    members: list[Path], images: list[tuple[str, ImageData]], args: argparse.Namespace, sidecar: Path
) -> calibration.PerImage:
    """Each model's per-image measurements, kept in ``sidecar`` (with ``--remeasure new``, the
    models stored there are not measured again)."""
    qualities = [float(q) for q in args.qualities.split(",")]
    kept: calibration.PerImage = {}
    if args.remeasure == "new" and sidecar.is_file():
        stored = _per_image_from_json(json.loads(sidecar.read_text()))
        names = {path: read_info(path).name for path in members}
        kept = {names[p]: stored[names[p]] for p in members if names[p] in stored}
        members = [p for p in members if names[p] not in stored]
        print("reused: " + (", ".join(sorted(kept)) or "none"))
    per_image = {**kept, **calibration.measure_per_image(members, images, qualities)}
    table = {
        name: {f"{q:g}": [[round(b, 5), round(p, 3)] for b, p in runs] for q, runs in table.items()}
        for name, table in per_image.items()
    }
    sidecar.write_text(json.dumps(table, separators=(",", ":")) + "\n")
    return per_image


def _calibrated(
    args: argparse.Namespace,
    variant: family.Variant,
    tails: dict[str, Tail],
    built: family.Family,
    folder: Path | None,
    rule: family.TopRule | None,
    fixed: dict[str, float],
    tops: dict[str, float],
) -> family.Variant:
    """A variant with stand-ins for the members the family kept and, given a ``folder``, slices of
    its own, built as the family's are from the stand-ins' curves on the images there of its kind."""
    kept = {m.model for m in built.members}
    dropped = sorted(set(variant.models) - kept)
    if dropped:
        print(f"variant {variant.kind}: no stand-in for {', '.join(dropped)} (not a member)")
    variant = dataclasses.replace(variant, models={a: b for a, b in variant.models.items() if a in kept})
    if folder is None or not variant.models:
        return variant
    sidecar = _calibration_path(args.out, variant.kind)
    if args.remeasure == "no":
        per_image = _per_image_from_json(json.loads(sidecar.read_text()))
    else:
        images = _images(folder, args.images, variant)
        if not images:
            raise SystemExit(f"{folder}: no images of kind {variant.kind!r} to calibrate on")
        standins = [_standin_path(args.out.parent, name) for name in variant.models.values()]
        per_image = _measured(standins, images, args, sidecar)
    swap = variant.models
    built = calibration.build(
        args.name,
        calibration.mean_curves(per_image),
        args.out.parent,
        {},
        per_image,
        args.match,
        rule,
        args.fade if variant.fade is None else variant.fade,
        {swap.get(name, name): ratio for name, ratio in fixed.items()},
        {swap.get(name, name): q for name, q in tops.items()},
        _tail_top(tails, variant.kind),
    )
    return dataclasses.replace(variant, members=built.members)


# from, the member's -q, the steps, whether only the last member makes room, and from where
Tail = tuple[float, tuple[float, float], tuple[float, ...], bool, float | None]


def _tail(parser: argparse.ArgumentParser, spec: str) -> tuple[str, Tail]:
    """``--residual-tail [KIND=]FROM:Q-Q100:STEP-...-STEP100[:last[@KNEE]]`` as (kind, tail)."""
    kind, _, numbers = spec.rpartition("=")
    fields = numbers.split(":")
    only_last = len(fields) == 4 and fields[3].partition("@")[0] == "last"
    try:
        knee = float(fields[3].partition("@")[2]) if only_last and "@" in fields[3] else None
        start, qualities, steps = fields[:3] if only_last else fields
        q_from, q_to = (float(v) for v in qualities.split("-"))
        knots = tuple(float(v) for v in steps.split("-"))
        if len(knots) < 2:
            raise ValueError(steps)
        return kind or family.PHOTO, (float(start), (q_from, q_to), knots, only_last, knee)
    except ValueError:
        parser.error(f"--residual-tail needs [KIND=]FROM:Q-Q100:STEP-...-STEP100[:last[@KNEE]], got {spec!r}")


def _tail_top(tails: dict[str, Tail], kind: str) -> float | None:
    """Where a kind's last member stops for its residual tail, for the calibration to spread the
    scale by (None: no tail, or one that leaves the lower members where they were)."""
    return tails[kind][1][0] if kind in tails and not tails[kind][3] else None


def _tailed(built: family.Family, tails: dict[str, Tail]) -> family.Family:
    """The family with a residual tail on each kind named in ``tails``."""
    for kind, (start, top, steps, only_last, knee) in tails.items():
        if kind == family.PHOTO:
            members = calibration.with_residual_tail(built.members, start, top, steps, only_last, knee)
            built = dataclasses.replace(built, members=members)
            continue
        variants = list(built.variants)
        for i, v in enumerate(variants):
            if v.kind == kind:
                own = built.for_kind(kind).members
                variants[i] = dataclasses.replace(
                    v, members=calibration.with_residual_tail(own, start, top, steps, only_last, knee)
                )
        built = dataclasses.replace(built, variants=tuple(variants))
    return built


def _handed_over(built: family.Family, handovers: dict[str, float]) -> family.Family:
    """The family with each named variant's first hand-over moved to the given global -q."""
    variants = list(built.variants)
    for i, v in enumerate(variants):
        if v.kind not in handovers:
            continue
        if len(v.members) < 2:
            raise SystemExit(f"--variant-handover: {v.kind} has no hand-over of its own")
        first, second, *rest = v.members
        q = handovers[v.kind]
        if not first.quality[0] < q < second.quality[1]:
            raise SystemExit(
                f"--variant-handover {v.kind}={q:g} is outside {first.quality[0]:g}..{second.quality[1]:g}"
            )
        first = dataclasses.replace(first, quality=(first.quality[0], q))
        second = dataclasses.replace(second, quality=(q, second.quality[1]))
        variants[i] = dataclasses.replace(v, members=(first, second, *rest))
    return dataclasses.replace(built, variants=tuple(variants))


def _standin_path(folder: Path, name: str) -> Path:
    """A stand-in's model file: beside the family file first, then the usual model search."""
    beside = folder / f"{name}.pt"
    return beside if beside.is_file() else resolve(name)


def _named(parser: argparse.ArgumentParser, spec: str, flag: str, what: str) -> tuple[str, Path]:
    """A ``FLAG NAME=PATH`` option as (name, path)."""
    name, sep, value = spec.partition("=")
    if not sep or not name or not value:
        parser.error(f"{flag} needs KIND={what}, got {spec!r}")
    return name, Path(value)


def _named_values(
    parser: argparse.ArgumentParser, specs: list[str], flag: str, what: str, bounds: tuple[float, float]
) -> dict[str, float]:
    """``FLAG MODEL=VALUE`` options as {model name: value}, each within ``bounds``."""
    out = {}
    for spec in specs:
        name, _, value = spec.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            parser.error(f"{flag} needs MODEL={what}, got {spec!r}")
        if not bounds[0] <= out[name] <= bounds[1]:
            parser.error(f"{flag} {what.lower()} for {name} must lie in {bounds[0]:g}..{bounds[1]:g}")
    return out


def _variant(parser: argparse.ArgumentParser, spec: str) -> family.Variant:
    """``--variant KIND:SHARE:MODEL=STANDIN,...`` as a family variant (checked again on loading)."""
    try:
        kind, share, swaps = spec.split(":", 2)
        models = dict(swap.split("=", 1) for swap in swaps.split(","))
        return family.Variant(kind, float(share), models)
    except ValueError:
        parser.error(f"--variant needs KIND:SHARE:MODEL=STANDIN,..., got {spec!r}")


def _calibration_path(out: Path, kind: str | None = None) -> Path:
    """Where every calibration image's measurements are kept, beside the family file (a variant's
    in a file of its own: its images are others)."""
    stem = out.name.removesuffix(family.FAMILY_SUFFIX) + (f".{kind}" if kind else "")
    return out.with_name(stem + ".calibration.json")


def _per_image_from_json(data: dict) -> calibration.PerImage:
    """The per-image table back into numbers (JSON keys are strings)."""
    return {
        name: {float(q): [(float(b), float(p)) for b, p in runs] for q, runs in table.items()}
        for name, table in data.items()
    }


if __name__ == "__main__":
    sys.exit(main())
