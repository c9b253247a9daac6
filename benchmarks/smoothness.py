"""How smoothly file size follows -q: every integer -q from 0 to 100 on every image of a folder.

    python benchmarks/smoothness.py [--data ../shared/data/kodak] [--model default] [--every 1]
        [--threads 2] [--content auto] [--from 0] [--per-q]

A user who moves -q by one expects a small, same-direction change. For each image the encoder
runs once per model (a family may have several), then every -q is placed as `aecompress encode`
places it (a family's size-matched hand-over included), quantized and packed. Prints,
over all images: the largest growth between neighbouring -q (issue 15 asks for at most 12%), the
largest fall (at most 1%), where each happens, and how many steps grew more than 12% or fell;
for a family, how the file size and PSNR change across each hand-over of each kind's members (-q
just below and above), and how many images its stand-in members for other kinds of picture coded
(``--content``). ``--from Q`` sweeps only -q Q-1 to 100 (the top of a family, faster);
``--per-q`` adds a row per -q: the mean and largest growth into it over the images, and how many
grew more than 12%.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from aecompress import placement
from aecompress.evaluate import load_folder
from aecompress.family import find_family

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--content", default="auto", help="auto, photo or a family's other kind")
    parser.add_argument("--from", dest="lowest", type=int, default=0, help="the lowest -q swept (1-100)")
    parser.add_argument("--per-q", action="store_true", help="a row per -q: mean and largest growth")
    args = parser.parse_args(argv)
    first = min(max(args.lowest, 1), 100) - 1 if args.lowest > 0 else 0
    torch.set_num_threads(args.threads)
    family = find_family(args.model)
    images = load_folder(Path(args.data))[:: args.every]
    worst_growth = (0.0, "", 0)
    worst_fall = (0.0, "", 0)
    big, falls = 0, []
    seams: list[tuple[str, str, float, float, float]] = []  # image, kind, edge, size ratio, PSNR change
    kinds: dict[str, int] = {}
    growths: list[list[float]] = []
    for name, image in images:
        placer = placement.Placer(args.model, image, torch.device("cpu"), family=family, content=args.content)
        kinds[placer.kind] = kinds.get(placer.kind, 0) + 1
        sizes = [len(placer.pack(float(quality)).data) if quality >= first else 0 for quality in range(101)]
        growths.append([sizes[q] / sizes[q - 1] for q in range(first + 1, 101)])
        edges = [m.quality[1] for m in family.for_kind(placer.kind).members[:-1]] if family else []
        for edge in edges:
            below, above = placer.pack(edge - 0.01), placer.pack(edge + 0.01)
            cpu = torch.device("cpu")
            change = placement._psnr_of(below, image, cpu) - placement._psnr_of(above, image, cpu)
            seams.append((name, placer.kind, edge, len(above.data) / len(below.data), -change))
        for quality in range(first + 1, 101):
            ratio = sizes[quality] / sizes[quality - 1]
            if ratio > 1.12:
                big += 1
            if ratio < 1.0:
                falls.append(f"{name} at {quality} {100 * (ratio - 1):+.2f}%")
            if ratio - 1 > worst_growth[0]:
                worst_growth = (ratio - 1, name, quality)
            if 1 - ratio > worst_fall[0]:
                worst_fall = (1 - ratio, name, quality)
    steps = (100 - first) * len(images)
    coded = ", ".join(f"{n} as {kind}" for kind, n in sorted(kinds.items()))
    print(f"{len(images)} images ({coded}), model {args.model or 'default'}: {steps} steps of -q")
    print(f"largest growth {100 * worst_growth[0]:.1f}% ({worst_growth[1]} at -q {worst_growth[2]})")
    print(f"largest fall {100 * worst_fall[0]:.2f}% ({worst_fall[1]} at -q {worst_fall[2]})")
    print(f"steps growing more than 12%: {big}; steps that fall: {len(falls)}")
    if falls:
        print("falls: " + ", ".join(falls))
    if args.per_q:
        print("| -q | mean growth | largest | images above 12% |\n|---:|---:|---:|---:|")
        for j, quality in enumerate(range(first + 1, 101)):
            column = [row[j] - 1 for row in growths]
            print(f"| {quality} | {100 * sum(column) / len(column):.1f}% | {100 * max(column):.1f}% | "
                  f"{sum(g > 0.12 for g in column)} |")  # fmt: skip
    for kind, edge in sorted({(seam[1], seam[2]) for seam in seams}):
        at = [seam for seam in seams if seam[1:3] == (kind, edge)]
        losses = sorted((change, name) for name, _, _, _, change in at if change < 0)
        print(
            f"hand-over at -q {edge:g} ({kind}, -0.01 -> +0.01): size x{min(s[3] for s in at):.3f}"
            f"-x{max(s[3] for s in at):.3f}; PSNR rises on {len(at) - len(losses)} of {len(at)}"
            + "".join(f", {change:+.2f} dB on {name}" for change, name in losses)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
