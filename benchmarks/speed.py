"""Encode and decode time per image on the CPU or a GPU, one at a time and batched.

    python benchmarks/speed.py [--data ../shared/data/kodak] [--device cpu|cuda] [--threads 2] [-q 75]
        [--batch N] [--workers N]
    AECOMPRESS_PRECISION=fp32 python benchmarks/speed.py ...   # the float32 networks

Loads every image once, warms the model up on the first one (CUDA kernels are chosen on first
use), then times `codec.encode`/`codec.decode` per image and `encode_many`/`decode_many` over the
whole folder. Times are wall-clock per image and include entropy coding and the copy back to the
host, as a user would see them from the library (process start and model loading excluded).
Pillow's WebP (its defaults: quality 80, method 4) encodes and decodes the same images in the same
process as the yardstick, and the last lines give aecompress's medians as multiples of its encode.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from aecompress import codec
from aecompress.device import compute_dtype
from aecompress.evaluate import load_folder
from aecompress.imageio import ImageData, encode_image_bytes
from aecompress.passes import network_batch

REPO = Path(__file__).resolve().parent.parent


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-q", "--quality", type=float, default=75.0)
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch", type=int, default=None, help="default: 16 on a GPU, 1 on the CPU")
    parser.add_argument(
        "--workers", type=int, default=None, help="threads packing / parsing beside the batched networks"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = [image for _, image in load_folder(Path(args.data))]
    if not images:
        print(f"no images in {args.data}", file=sys.stderr)
        return 1
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{args.threads} threads"

    warm = codec.encode(images[0], args.model, args.quality, args.device)
    codec.decode(warm.data, args.device, args.model)
    enc, dec, png, datas = [], [], [], []
    for image in images:
        _sync(args.device)
        t0 = time.perf_counter()
        data = codec.encode(image, args.model, args.quality, args.device).data
        t1 = time.perf_counter()
        restored = codec.decode(data, args.device, args.model)
        _sync(args.device)
        t2 = time.perf_counter()
        encode_image_bytes(restored, "PNG")
        t3 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
        png.append(t3 - t1)
        datas.append(data)

    t0 = time.perf_counter()
    codec.encode_many(images, args.model, args.quality, args.device, batch=args.batch, workers=args.workers)
    t1 = time.perf_counter()
    codec.decode_many(datas, args.device, args.model, batch=args.batch, workers=args.workers)
    _sync(args.device)
    t2 = time.perf_counter()
    n = len(images)
    pixels = statistics.mean(image.width * image.height for image in images)

    dtype = compute_dtype(torch.device(args.device))
    print(f"device: {name}, networks in {dtype}; {n} images, {pixels / 1e6:.2f} MP, -q {args.quality:g}")
    print("| path | encode s/image | decode s/image | decode + PNG s/image |")
    print("|---|---:|---:|---:|")
    print(
        f"| one at a time, median | {statistics.median(enc):.4f} | {statistics.median(dec):.4f} "
        f"| {statistics.median(png):.4f} |"
    )
    print(
        f"| one at a time, mean | {statistics.mean(enc):.4f} | {statistics.mean(dec):.4f} "
        f"| {statistics.mean(png):.4f} |"
    )
    workers = f", {args.workers} workers" if args.workers else ""
    size = network_batch(args.batch, torch.device(args.device))
    print(f"| batched (up to {size}{workers}) | {(t1 - t0) / n:.4f} | {(t2 - t1) / n:.4f} | |")
    webp_enc, webp_dec = _webp_times(images)
    print(f"| Pillow WebP, median | {webp_enc:.4f} | {webp_dec:.4f} | |")
    print(f"aecompress against WebP's encode: encode {statistics.median(enc) / webp_enc:.2f}x, "
          f"decode {statistics.median(dec) / webp_enc:.2f}x")  # fmt: skip
    return 0


def _webp_times(images: list[ImageData]) -> tuple[float, float]:
    """Median seconds per image of Pillow's WebP encode and decode (its default settings)."""
    enc, dec = [], []
    for image in images:
        pil = Image.fromarray(image.rgb)
        t0 = time.perf_counter()
        buf = io.BytesIO()
        pil.save(buf, "WEBP")
        t1 = time.perf_counter()
        with Image.open(io.BytesIO(buf.getvalue())) as back:
            back.load()
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
    return statistics.median(enc), statistics.median(dec)


if __name__ == "__main__":
    sys.exit(main())
