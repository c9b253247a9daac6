"""What the encoder's dead zone buys: one model's files with and without it, and the BD-rate.

    python benchmarks/dead_zone.py --model hyperprior [--data FOLDER] [--start 0] [--every 1]
        [-q 30 40 50 60 70 80] [--threads 1]

The dead zone (``aecompress.latents.DEAD_ZONE``) codes a latent of the lowest scale classes as 0
until it lies further than half a step from 0. For each image the model's analysis runs once;
each -q is packed and decoded twice, with the dead zone and with plain rounding. Prints the mean
bpp, PSNR and MS-SSIM (dB, -10 log10(1 - MS-SSIM)) of both, then the BD-rate of the dead zone
against plain rounding in PSNR and in MS-SSIM over those qualities (negative: fewer bits).
Measure on held-out images (BSDS500 validation), not on the evaluation set.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

from aecompress import format as aecformat
from aecompress import latents, pack
from aecompress.evaluate import bd_rate, load_folder
from aecompress.metrics import ms_ssim, psnr
from aecompress.modelfile import resolve
from aecompress.passes import analyse, model_on

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "bsds500" / "val"))
    parser.add_argument("--start", type=int, default=0, help="the first image taken (in name order)")
    parser.add_argument("--every", type=int, default=1, help="then every Nth")
    parser.add_argument("--model", default="hyperprior", help="a model name or file (not a family)")
    parser.add_argument("-q", "--qualities", type=float, nargs="+", default=[30, 40, 50, 60, 70, 80])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = load_folder(Path(args.data))[args.start :: args.every]
    if not images:
        print(f"no images in {args.data}", file=sys.stderr)
        return 1
    device = torch.device("cpu")
    net, info = model_on(resolve(args.model), device)
    shipped = latents.DEAD_ZONE
    runs: dict[str, dict[float, list[tuple[float, float, float]]]] = {
        mode: {q: [] for q in args.qualities} for mode in ("plain", "dead zone")
    }
    for _, image in images:
        y = analyse(net, image.rgb, device, None, compact=True)
        for mode, zone in (("plain", np.zeros(0)), ("dead zone", shipped)):
            latents.DEAD_ZONE = zone
            try:
                for q in args.qualities:
                    data, _ = pack.pack_latents(net, info.name, info.weights_hash, image, y, q)
                    back = pack.decode_with(net, aecformat.unpack(data), device).rgb
                    similarity = min(ms_ssim(image.rgb, back), 1 - 1e-10)
                    runs[mode][q].append(
                        (8 * len(data) / (image.width * image.height), psnr(image.rgb, back),
                         -10 * math.log10(1 - similarity))
                    )  # fmt: skip
            finally:
                latents.DEAD_ZONE = shipped
    means = {mode: [tuple(np.mean(table[q], axis=0)) for q in args.qualities] for mode, table in runs.items()}
    print(f"{len(images)} images from {args.data}, model {info.name}, dead zone {list(shipped)}")
    print("|  -q | plain bpp | PSNR dB | MS-SSIM dB | dead zone bpp | PSNR dB | MS-SSIM dB |")
    print("|----:|----------:|--------:|-----------:|--------------:|--------:|-----------:|")
    for i, q in enumerate(args.qualities):
        (b0, p0, m0), (b1, p1, m1) = means["plain"][i], means["dead zone"][i]
        print(f"| {q:3g} | {b0:9.4f} | {p0:7.2f} | {m0:10.2f} | {b1:13.4f} | {p1:7.2f} | {m1:10.2f} |")
    if len(args.qualities) >= 4:
        for label, k in (("PSNR", 1), ("MS-SSIM", 2)):
            plain = [(p[0], p[k]) for p in means["plain"]]
            zoned = [(p[0], p[k]) for p in means["dead zone"]]
            print(f"BD-rate of the dead zone against plain rounding ({label}): {bd_rate(plain, zoned):+.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
