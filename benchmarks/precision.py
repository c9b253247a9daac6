"""bfloat16 against float32 networks: file sizes and PSNR on a folder, at each -q.

    python benchmarks/precision.py [--data ../shared/data/kodak] [--model default] \
        [-q 10 20 35 50 65 75 85 95 100] [--threads 1]

The fast CPU path (``--precision bf16``, the default where the CPU has native bfloat16) is only
worth having if it keeps the codec's quality: for each -q, the mean bpp and PSNR in both
precisions, the largest per-image changes, and whether the fp32 decoder restores bf16-encoded
files as well (a file must decode well on any machine, whatever precision made it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from aecompress import codec
from aecompress import precision as precision_lib
from aecompress.device import native_bf16
from aecompress.evaluate import load_folder
from aecompress.metrics import psnr

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    qualities = [10, 20, 35, 50, 65, 75, 85, 95, 100]
    parser.add_argument("-q", "--qualities", type=float, nargs="+", default=qualities)
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = load_folder(Path(args.data))
    print(f"{len(images)} images from {args.data}; native bfloat16 on this CPU: {native_bf16()}")
    columns = ["-q", "bpp fp32", "bpp bf16", "size change (max)", "PSNR fp32", "PSNR bf16", "ΔPSNR (worst)"]
    print("| " + " | ".join([*columns, "bf16 file, fp32 decoder"]) + " |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    worst_size = worst_psnr = 0.0
    for quality in args.qualities:
        rows = []
        for _, image in images:
            pixels = image.width * image.height
            out = {}
            for precision in ("fp32", "bf16"):
                precision_lib.set(precision)
                data = codec.encode(image, args.model, quality, "cpu").data
                out[precision] = (
                    8 * len(data) / pixels,
                    psnr(image.rgb, codec.decode(data, "cpu").rgb),
                    data,
                )
            precision_lib.set("fp32")
            cross = psnr(image.rgb, codec.decode(out["bf16"][2], "cpu").rgb)
            rows.append((out["fp32"][0], out["bf16"][0], out["fp32"][1], out["bf16"][1], cross))
        n = len(rows)
        bpp32, bpp16 = sum(r[0] for r in rows) / n, sum(r[1] for r in rows) / n
        p32, p16, cross = (sum(r[i] for r in rows) / n for i in (2, 3, 4))
        size_max = max(abs(r[1] / r[0] - 1) for r in rows)
        psnr_worst = min(r[3] - r[2] for r in rows)
        worst_size, worst_psnr = max(worst_size, abs(bpp16 / bpp32 - 1)), min(worst_psnr, p16 - p32)
        print(
            f"| {quality:g} | {bpp32:.4f} | {bpp16:.4f} | "
            f"{100 * (bpp16 / bpp32 - 1):+.2f}% ({100 * size_max:.2f}%) | "
            f"{p32:.3f} | {p16:.3f} | {p16 - p32:+.3f} ({psnr_worst:+.3f}) | {cross:.3f} |"
        )
    print(f"mean over the folder: sizes within {100 * worst_size:.2f}%, PSNR within {abs(worst_psnr):.3f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
