"""What a pixel residual over a model's decoded image buys: mean bpp and PSNR over a folder, for
the model at some of its own -q alone and with a residual at each of some steps.

    python benchmarks/residual.py --model runs/gfx/fam/hyperprior-hs16-graphics.pt --data CAL \
        -q 30 50 70 100 --steps 128 64 32 16 8 4 [--kind graphics|photo] [--threads 1]

The table is what `scripts/make_family.py --residual-tail` is chosen from: the member's own -q
where adding the residual beats raising the -q (the rows of one step against the next -q's
plain row, at equal bpp), and the steps that span the rates the tail should cover. Use held-out
calibration images (never Kodak). ``--kind`` keeps the images a family would code with that
kind's members (``graphics``: at least 60% of pixels equal to their left neighbour).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from aecompress import format as aecformat
from aecompress import pack, passes
from aecompress.content import flat_share
from aecompress.imageio import IMAGE_SUFFIXES, read_image
from aecompress.metrics import psnr

GRAPHICS_SHARE = 0.6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("-q", type=float, nargs="+", default=[50.0, 100.0])
    parser.add_argument("--steps", type=float, nargs="+", default=[64.0, 16.0, 4.0])
    parser.add_argument("--kind", choices=["graphics", "photo", "any"], default="any")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    net, info = passes.model_on(args.model, device)
    images = []
    for path in sorted(p for p in args.data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        image = read_image(path)
        share = flat_share(image.rgb)
        if args.kind == "any" or (share >= GRAPHICS_SHARE) == (args.kind == "graphics"):
            images.append(image)
        if len(images) == args.images:
            break
    if not images:
        parser.error(f"no {args.kind} images in {args.data}")
    rows: dict[tuple[float, float | None], list[tuple[float, float]]] = {}
    for image in images:
        latents = passes.analyse(net, image.rgb, device)
        for quality in args.q:
            for step in [None, *args.steps]:
                data, _ = pack.pack_latents(
                    net, info.name, info.weights_hash, image, latents, quality, None, step, device
                )
                back = pack.decode_with(net, aecformat.unpack(data), device)
                bpp = 8 * len(data) / (image.width * image.height)
                rows.setdefault((quality, step), []).append((bpp, psnr(image.rgb, back.rgb)))
    print(f"{info.name} on {len(images)} {args.kind} images of {args.data}")
    print("| own -q | residual step | bpp | PSNR dB |")
    print("|---:|---:|---:|---:|")
    for (quality, step), runs in rows.items():
        bpp = float(np.mean([b for b, _ in runs]))
        db = float(np.mean([p for _, p in runs]))
        print(f"| {quality:g} | {'none' if step is None else f'{step:g}'} | {bpp:.3f} | {db:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
