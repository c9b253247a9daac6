"""What --effort buys: rate, PSNR and encode time at each effort, on the same images and qualities.

    python benchmarks/effort.py [--data ../shared/data/kodak] [--start 0] [--every 3] [-q 50 75 85]
        [--efforts 0 20] [--model default] [--threads 2]

--start S --every N takes every Nth image of the folder from the Sth (the effort costs a decoder
pass per iteration, so a full sweep on a CPU takes long). For each quality: mean bpp and PSNR at
each effort, the change against the first effort, and the mean encode time; with four qualities
or more, each effort's BD-rate (PSNR) against the first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from aecompress.evaluate import bd_rate, load_folder, mean, measure_aec

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    parser.add_argument("--start", type=int, default=0, help="the first image taken (in name order)")
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("-q", "--qualities", type=float, nargs="+", default=[50, 75, 85])
    parser.add_argument("--efforts", type=int, nargs="+", default=[0, 20])
    parser.add_argument("--model", default=None, help="model or family (default: the bundled default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = load_folder(Path(args.data))[args.start :: args.every]
    if not images:
        print(f"no images in {args.data}", file=sys.stderr)
        return 1
    print(f"{len(images)} images from {args.data}, model {args.model or 'default'}, {args.device}")
    print("|  -q | effort |   bpp | PSNR dB | Δbytes | ΔPSNR | encode s |")
    print("|----:|-------:|------:|--------:|-------:|------:|---------:|")
    curves: dict[int, list[tuple[float, float]]] = {effort: [] for effort in args.efforts}
    for q in args.qualities:
        base: tuple[float, float] | None = None
        for effort in args.efforts:
            runs = [
                measure_aec(name, image, q, args.model, args.device, with_ms_ssim=False, effort=effort)
                for name, image in images
            ]
            size, quality = mean([float(m.bytes) for m in runs]), mean([m.psnr for m in runs])
            base = base or (size, quality)
            curves[effort].append((mean([m.bpp for m in runs]), quality))
            print(
                f"| {q:3g} | {effort:6d} | {mean([m.bpp for m in runs]):.3f} | {quality:7.2f} "
                f"| {100 * (size / base[0] - 1):+5.1f}% | {quality - base[1]:+.2f} "
                f"| {mean([m.encode_s for m in runs]):8.2f} |",
                flush=True,
            )
    if len(args.qualities) >= 4:
        first = args.efforts[0]
        for effort in args.efforts[1:]:
            change = bd_rate(curves[first], curves[effort])
            print(f"BD-rate of effort {effort} against effort {first} (PSNR): {change:+.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
