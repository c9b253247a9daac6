"""Measure member models on calibration images and write the family file that puts them behind -q.

    python scripts/make_family.py --name default --members models/default.pt models/default-hi.pt \
        --calibration ../shared/data/bsds500/val --images 24 --out models/default.family.json

Calibrate on held-out training-set images, never on Kodak (the evaluation set). Prints each
member's measured curve and the resulting family; check it with `python benchmarks/kodak.py` and
the -q monotonicity test (`pytest tests/test_quality.py`) before committing it. `--remeasure no`
rebuilds the family from the curves already stored in --out (after a change to the builder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from aecompress import family
from aecompress.imageio import IMAGE_SUFFIXES, read_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", default="default")
    parser.add_argument("--members", type=Path, nargs="+", help="model files (any order)")
    parser.add_argument("--calibration", type=Path, help="folder of held-out images (never Kodak)")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--qualities", default="0,10,20,30,40,50,60,70,80,90,100")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--remeasure", choices=["yes", "no"], default="yes")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.remeasure == "no":
        old = json.loads(args.out.read_text(encoding="utf-8"))["card"]
        curves = [(name, [tuple(p) for p in points]) for name, points in old["curves"].items()]
        family.save(family.build(args.name, curves, args.out.parent, old), args.out)
        print(json.dumps(family.load_family(args.out).to_json()["members"], indent=2))
        return 0
    if not args.members or not args.calibration:
        parser.error("--members and --calibration are needed unless --remeasure no")
    paths = sorted(p for p in args.calibration.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[
        : args.images
    ]
    images = [(p.name, read_image(p)) for p in paths]
    qualities = [float(q) for q in args.qualities.split(",")]
    curves = family.measure_curves(args.members, images, qualities)
    for name, points in curves:
        print(name)
        for q, bpp, psnr in points:
            print(f"  -q {q:5.1f}: {bpp:.4f} bpp, {psnr:.2f} dB")
    card = {
        "calibration": f"{len(images)} images from {args.calibration}",
        "curves": {name: points for name, points in curves},
        "command": "python scripts/make_family.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    built = family.build(args.name, curves, args.out.parent, card)
    family.save(built, args.out)
    print(json.dumps(built.to_json()["members"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
