"""Peak memory and time of encoding and decoding a large photo on the CPU, one process each.

    python benchmarks/large_image.py [--width 6000 --height 4000] [--threads 2]

The image is a Kodak-like photo scaled up (or a synthetic one when ../shared is absent); each
step runs `aecompress` in its own process and reports that process's peak RSS (ru_maxrss, the
figure `/usr/bin/time -v` prints as "Maximum resident set size"). It also checks the tiled path
against a whole-image pass on an image small enough for both.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def _source(width: int, height: int) -> Image.Image:
    sample = REPO / "samples" / "parrots.png"
    return Image.open(sample).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)


def _run(args: list[str], threads: int) -> tuple[float, float]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "aecompress", "--quiet", *args], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"aecompress {' '.join(args)} failed with status {status}")
    return elapsed, usage.ru_maxrss / 1024.0


def _tiling_gap(threads: int) -> tuple[float, float]:
    import torch

    from aecompress import codec
    from aecompress.imageio import from_pil
    from aecompress.metrics import psnr

    torch.set_num_threads(threads)
    image = from_pil(_source(1536, 1024))
    results = []
    for tile in (256, 24):
        data = codec.encode(image, device="cpu", tile=tile).data
        results.append(psnr(image.rgb, codec.decode(data, device="cpu", tile=tile).rgb))
    return results[0], results[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "large.png"
        _source(args.width, args.height).save(src)
        enc_s, enc_rss = _run(["encode", str(src), "-o", f"{tmp}/large.aec"], args.threads)
        dec_s, dec_rss = _run(["decode", f"{tmp}/large.aec", "-o", f"{tmp}/back.png"], args.threads)
        size = Path(f"{tmp}/large.aec").stat().st_size
        original = np.asarray(Image.open(src))
        back = np.asarray(Image.open(f"{tmp}/back.png"))
        mse = np.mean((original.astype(np.float64) - back) ** 2)
    whole, tiled = _tiling_gap(args.threads)
    bpp = 8 * size / (args.width * args.height)
    quality = 10 * np.log10(255**2 / mse)
    print(f"{args.width}x{args.height}, {args.threads} threads, {bpp:.3f} bpp, PSNR {quality:.2f} dB")
    print("| step   | seconds | peak RSS MiB |")
    print("|--------|--------:|-------------:|")
    print(f"| encode | {enc_s:7.1f} | {enc_rss:12.0f} |")
    print(f"| decode | {dec_s:7.1f} | {dec_rss:12.0f} |")
    print(f"tiling, 1536x1024: whole-image {whole:.3f} dB, tiles of 24 latents {tiled:.3f} dB, "
          f"gap {abs(whole - tiled):.4f} dB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
