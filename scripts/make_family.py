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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from aecompress import calibration, family
from aecompress.imageio import IMAGE_SUFFIXES, read_image
from aecompress.modelfile import read_info


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
    args = parser.parse_args(argv)
    variants = tuple(_variant(parser, spec) for spec in args.variant)
    fixed = _named_values(parser, args.fixed, "--fixed", "RATIO", (0.5, 2.0))
    tops = _named_values(parser, args.top, "--top", "Q", (0.0, 100.0))
    rule = family.TopRule(*(float(v) for v in args.top_rule.split(","))) if args.top_rule else None
    torch.set_num_threads(args.threads)
    if args.remeasure == "no":
        old = json.loads(args.out.read_text(encoding="utf-8"))["card"]
        curves = [(name, [tuple(p) for p in points]) for name, points in old["curves"].items()]
        sidecar = _calibration_path(args.out)
        per_image = _per_image_from_json(json.loads(sidecar.read_text())) if sidecar.is_file() else None
        given = argv if argv is not None else sys.argv[1:]
        old["rebuilt"] = "python scripts/make_family.py " + " ".join(given)
        rebuilt = calibration.build(
            args.name, curves, args.out.parent, old, per_image, args.match, rule, args.fade, fixed, tops
        )
        family.save(dataclasses.replace(rebuilt, variants=variants), args.out)
        print(json.dumps(family.load_family(args.out).to_json()["members"], indent=2))
        return 0
    if not args.members or not args.calibration:
        parser.error("--members and --calibration are needed unless --remeasure no")
    paths = sorted(p for p in args.calibration.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[
        : args.images
    ]
    images = [(p.name, read_image(p)) for p in paths]
    qualities = [float(q) for q in args.qualities.split(",")]
    sidecar = _calibration_path(args.out)
    kept: calibration.PerImage = {}
    members = list(args.members)
    if args.remeasure == "new" and sidecar.is_file():
        stored = _per_image_from_json(json.loads(sidecar.read_text()))
        names = {path: read_info(path).name for path in members}
        kept = {names[p]: stored[names[p]] for p in members if names[p] in stored}
        members = [p for p in members if names[p] not in stored]
        print("reused: " + (", ".join(sorted(kept)) or "none"))
    per_image = {**kept, **calibration.measure_per_image(members, images, qualities)}
    curves = calibration.mean_curves(per_image)
    for name, points in curves:
        print(name)
        for q, bpp, psnr in points:
            print(f"  -q {q:5.1f}: {bpp:.4f} bpp, {psnr:.2f} dB")
    card = {
        "calibration": f"{len(images)} images from {args.calibration}",
        "curves": {name: points for name, points in curves},
        "command": "python scripts/make_family.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    table = {
        name: {f"{q:g}": [[round(b, 5), round(p, 3)] for b, p in runs] for q, runs in table.items()}
        for name, table in per_image.items()
    }
    _calibration_path(args.out).write_text(json.dumps(table, separators=(",", ":")) + "\n")
    card["per_image"] = f"every calibration image's bpp and PSNR: {_calibration_path(args.out).name}"
    built = calibration.build(
        args.name, curves, args.out.parent, card, per_image, args.match, rule, args.fade, fixed, tops
    )
    family.save(dataclasses.replace(built, variants=variants), args.out)
    print(json.dumps(family.load_family(args.out).to_json()["members"], indent=2))
    return 0


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


def _calibration_path(out: Path) -> Path:
    """Where every calibration image's measurements are kept, beside the family file."""
    return out.with_name(out.name.removesuffix(family.FAMILY_SUFFIX) + ".calibration.json")


def _per_image_from_json(data: dict) -> calibration.PerImage:
    """The per-image table back into numbers (JSON keys are strings)."""
    return {
        name: {float(q): [(float(b), float(p)) for b, p in runs] for q, runs in table.items()}
        for name, table in data.items()
    }


if __name__ == "__main__":
    sys.exit(main())
