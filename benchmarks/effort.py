"""What --effort buys: rate, PSNR and encode time at each effort, on the same images and qualities.

    python benchmarks/effort.py [--data ../shared/data/kodak] [--every 3] [-q 50 75 85]
        [--efforts 0 20] [--model default] [--threads 2]

--every N takes every Nth image of the folder (the effort costs a decoder pass per iteration,
so a full sweep on a CPU takes long). For each quality: mean bpp and PSNR at each effort, the
change against effort 0, and the mean encode time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from aecompress.evaluate import load_folder, mean, measure_aec

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("-q", "--qualities", type=float, nargs="+", default=[50, 75, 85])
    parser.add_argument("--efforts", type=int, nargs="+", default=[0, 20])
    parser.add_argument("--model", default=None, help="model or family (default: the bundled default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = load_folder(Path(args.data))[:: args.every]
    if not images:
        print(f"no images in {args.data}", file=sys.stderr)
        return 1
    print(f"{len(images)} images from {args.data}, model {args.model or 'default'}, {args.device}")
    print("|  -q | effort |   bpp | PSNR dB | Δbytes | ΔPSNR | encode s |")
    print("|----:|-------:|------:|--------:|-------:|------:|---------:|")
    for q in args.qualities:
        base: tuple[float, float] | None = None
        for effort in args.efforts:
            runs = [
                measure_aec(name, image, q, args.model, args.device, with_ms_ssim=False, effort=effort)
                for name, image in images
            ]
            size, quality = mean([float(m.bytes) for m in runs]), mean([m.psnr for m in runs])
            base = base or (size, quality)
            print(
                f"| {q:3g} | {effort:6d} | {mean([m.bpp for m in runs]):.3f} | {quality:7.2f} "
                f"| {100 * (size / base[0] - 1):+5.1f}% | {quality - base[1]:+.2f} "
                f"| {mean([m.encode_s for m in runs]):8.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
