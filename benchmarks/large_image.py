"""Peak memory and time of encoding and decoding a large photo on the CPU, one process each.

    python benchmarks/large_image.py [--size 6000x4000 ...] [--quality 75 ...] [--threads 2]

The image is the bundled sample photo scaled to each size; each step runs `aecompress` in its own
process, started from a small launcher, and reports that process's peak RSS (ru_maxrss, the
figure `/usr/bin/time -v` prints as "Maximum resident set size"). The "image only" row is a
process that imports torch and aecompress, reads the image and writes it back as PNG, as encode
and decode do, and codes nothing: the "beyond" column is each step's peak less that one, what
coding the image holds on top of its pixels, which tiling should keep from growing with the
image. It also checks the tiled path against a whole-image pass on an image small enough for both.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def _source(width: int, height: int) -> Image.Image:
    sample = REPO / "samples" / "parrots.png"
    return Image.open(sample).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)


IMAGE_ONLY = (
    "import os, sys, torch, aecompress.codec; from pathlib import Path; "
    "from aecompress.imageio import encode_image_bytes, read_image; "
    "Path(sys.argv[2]).write_bytes(encode_image_bytes(read_image(Path(sys.argv[1])), 'PNG')); "
    "os._exit(0)"
)  # leaving as the CLI does (os._exit: torch's teardown would add to the peak)


AECOMPRESS = ("-m", "aecompress", "--quiet")

# Each measured process is started by this small launcher, not by the benchmark itself: a child
# started from a big process (vfork, then exec) inherits that process's peak RSS as its own
# ru_maxrss, so a benchmark holding a large image would be measured instead of the step.
LAUNCHER = (
    "import os, subprocess, sys, time; start = time.perf_counter(); "
    "child = subprocess.Popen(sys.argv[1:]); _, status, usage = os.wait4(child.pid, 0); "
    "child.returncode = os.waitstatus_to_exitcode(status); "
    "print(time.perf_counter() - start, usage.ru_maxrss, child.returncode)"
)


def _run(args: list[str], threads: int, command: tuple[str, ...] = AECOMPRESS) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one step in its own process."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run(
        [sys.executable, "-c", LAUNCHER, sys.executable, *command, *args],
        env=env, stdout=subprocess.PIPE, text=True, check=True,
    )  # fmt: skip
    seconds, maxrss, code = out.stdout.split()[-3:]
    if int(code) != 0:
        raise SystemExit(f"{' '.join(args)} failed with status {code}")
    return float(seconds), int(maxrss) / 1024.0


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


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=_size, nargs="+", default=[(6000, 4000)], help="WIDTHxHEIGHT")
    parser.add_argument("--quality", type=float, nargs="+", default=[75.0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"{args.threads} threads; 'beyond' is the peak RSS less the image-only process's")
    print("| size | -q | bpp | PSNR dB | step | seconds | peak RSS MiB | beyond MiB |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for width, height in args.size:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "large.png"
            _source(width, height).save(src)
            original = np.asarray(Image.open(src)).astype(np.float64)
            base_s, base = _run([str(src), f"{tmp}/copy.png"], args.threads, ("-c", IMAGE_ONLY))
            print(f"| {width}x{height} | | | | image only | {base_s:.1f} | {base:.0f} | 0 |")
            for q in args.quality:
                enc = _run(["encode", str(src), "-q", f"{q:g}", "-o", f"{tmp}/large.aec", "-f"], args.threads)
                dec = _run(["decode", f"{tmp}/large.aec", "-o", f"{tmp}/back.png", "-f"], args.threads)
                bpp = 8 * Path(f"{tmp}/large.aec").stat().st_size / (width * height)
                mse = np.mean((original - np.asarray(Image.open(f"{tmp}/back.png"))) ** 2)
                quality = 10 * np.log10(255**2 / max(mse, 1e-12))
                for step, (seconds, rss) in (("encode", enc), ("decode", dec)):
                    print(f"| {width}x{height} | {q:g} | {bpp:.3f} | {quality:.2f} | {step} | {seconds:.1f} "
                          f"| {rss:.0f} | {rss - base:.0f} |")  # fmt: skip
    whole, tiled = _tiling_gap(args.threads)
    print(f"tiling, 1536x1024: whole-image {whole:.3f} dB, tiles of 24 latents {tiled:.3f} dB, "
          f"gap {abs(whole - tiled):.4f} dB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
