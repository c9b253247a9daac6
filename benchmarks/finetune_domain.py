"""Does fine-tuning pay? The default codec against itself fine-tuned on a narrow domain.

    python benchmarks/finetune_domain.py [--steps 600] [--threads 1] [--work runs/finetune] [--model default]

The domain is rendered screenshots and documents (text in several sizes and colours, UI boxes,
flat fills; ``aecompress.synthetic``'s "screen" kind), with fixed seeds: 120 training images and 8
held-out ones drawn with other seeds. The script fine-tunes the bundled default with
`aecompress train --init default`, then codes the held-out images with both models over a sweep
of -q and reports BD-rate (bits at equal PSNR) of the fine-tuned model against the default, and
bpp at a few PSNR levels. ``--model`` fine-tunes another codec instead (a model file of any
architecture, e.g. a hyperprior: a variable-rate model is fine-tuned over all its rates at once).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aecompress import synthetic
from aecompress.evaluate import bd_rate, load_folder, mean, measure_aec

REPO = Path(__file__).resolve().parent.parent


def make_domain(root: Path) -> tuple[Path, Path]:
    train, test = root / "train", root / "test"
    train.mkdir(parents=True, exist_ok=True)
    test.mkdir(parents=True, exist_ok=True)
    for i in range(120):
        Image.fromarray(synthetic.render("screen", i, 320, 240)).save(train / f"page{i:03d}.png")
    for i in range(8):
        Image.fromarray(synthetic.render("screen", 10_000 + i, 512, 384)).save(test / f"held{i}.png")
    return train, test


def curve(images: list, model: str, qualities: list[int]) -> list[tuple[float, float]]:
    points = []
    for q in qualities:
        ms = [measure_aec(name, img, q, model, with_ms_ssim=False) for name, img in images]
        points.append((mean([m.bpp for m in ms]), mean([m.psnr for m in ms])))
    return points


def bpp_at(points: list[tuple[float, float]], target: float) -> float:
    pts = sorted(points, key=lambda p: p[1])
    return float(np.exp(np.interp(target, [p[1] for p in pts], np.log([p[0] for p in pts]))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default=str(REPO / "runs" / "finetune"))
    parser.add_argument("--model", default="default", help="the codec to fine-tune (name or file)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    train_dir, test_dir = make_domain(work / "domain")
    tuned = work / f"screens-{Path(args.model).stem}.pt"
    if not tuned.is_file():
        cmd = [sys.executable, "-m", "aecompress", "--quiet", "train", str(train_dir), "-o", str(tuned),
               "--init", args.model, "--steps", str(args.steps), "--lr", "1e-4", "--crop", "128",
               "--batch-size", "8", "--threads", str(args.threads), "--device", "cpu",
               "--val-every", "200"]  # fmt: skip
        subprocess.run(cmd, check=True)
    images = load_folder(test_dir)
    qualities = [40, 55, 65, 75, 85, 95]
    base = curve(images, args.model, qualities)
    ft = curve(images, str(tuned), qualities)
    print(f"held-out screenshots ({len(images)} images 512x384), fine-tuned {args.steps} steps on 120 pages")
    print("|  -q | default bpp | default PSNR | fine-tuned bpp | fine-tuned PSNR |")
    print("|----:|------------:|-------------:|---------------:|----------------:|")
    for q, (b_bpp, b_psnr), (f_bpp, f_psnr) in zip(qualities, base, ft, strict=True):
        print(f"| {q:3d} | {b_bpp:11.3f} | {b_psnr:12.2f} | {f_bpp:14.3f} | {f_psnr:15.2f} |")
    lo = max(min(p[1] for p in base), min(p[1] for p in ft))
    hi = min(max(p[1] for p in base), max(p[1] for p in ft))
    if lo >= hi:  # a few steps of a tiny model can leave the two curves apart
        print(f"no BD-rate: the two curves share no PSNR range ({lo:.2f} dB above {hi:.2f} dB)")
        return 0
    for target in np.linspace(lo, hi, 3):
        b, f = bpp_at(base, target), bpp_at(ft, target)
        print(f"at {target:.2f} dB: default {b:.3f} bpp, fine-tuned {f:.3f} bpp ({(f / b - 1) * 100:+.1f}%)")
    print(f"BD-rate of the fine-tuned model against {args.model}: {bd_rate(base, ft):+.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
