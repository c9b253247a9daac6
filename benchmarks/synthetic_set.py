"""Write a held-out set of generated images (screens, slides, comics, patterns) to benchmark on.

    python benchmarks/synthetic_set.py OUT [--per-kind 6] [--size 768x512] [--first-seed 1000]
    aecompress bench OUT --codecs aec,jpeg,webp,avif

The images come from ``aecompress.synthetic``, the generator ``aecompress train --synthetic``
mixes into training; training draws its seeds at random from 2^62, so the small seeds here are
held out. It is the same generator, though: a gain measured here is an upper bound on what real
screenshots, slides and comics get.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from aecompress import synthetic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", help="folder to write the PNG files to")
    parser.add_argument("--per-kind", type=int, default=6)
    parser.add_argument("--size", default="768x512", help="WIDTHxHEIGHT")
    parser.add_argument("--first-seed", type=int, default=1000)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for kind in synthetic.KINDS:
        for i in range(args.per_kind):
            pixels = synthetic.render(kind, args.first_seed + i, width, height)
            Image.fromarray(pixels).save(out / f"{kind}{i}.png")
    print(f"wrote {len(synthetic.KINDS) * args.per_kind} images of {width}x{height} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
