"""Bytes -> integer latents per image, the part of decoding that runs before the synthesis network.

    python benchmarks/parse.py [--data ../shared/data/kodak] [-q 50 75] [--images 8] [--repeats 3]
        [--threads 1] [--model NAME]

Each image is encoded once at each -q with the bundled codec (or --model); then, warm and in one
process, the median over images and repeats of: unpacking the container, and the coder's
``restore`` (everything from the parsed file to the latents the synthesis network takes). For a
hyperprior member, that restore is split into the hyper-latents z with their exact integer scale
classes (the integer h_s) and the latent streams (zstd and the class-ordered rebuild).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from aecompress import codec, coding
from aecompress import format as aecformat
from aecompress.evaluate import load_folder
from aecompress.latents import ScaleClassCoder, coder_for, hyper_latents_of, side_information
from aecompress.modelfile import find_for_file
from aecompress.passes import model_on

REPO = Path(__file__).resolve().parent.parent


def _times(data: bytes, near: list[Path]) -> tuple[float, float, float | None, float | None]:
    """Seconds to unpack one file and to restore its latents; for a scale-class coder also the
    two parts of the restore (scale classes, latent streams). ``near``: where a --model file
    lies (a family's member, or a model file outside the models folders)."""
    t0 = time.perf_counter()
    aec = aecformat.unpack(data)
    t1 = time.perf_counter()
    h = aec.header
    net, _ = model_on(find_for_file(h.model_name, h.model_hash, near=near), torch.device("cpu"))
    t2 = time.perf_counter()
    coder_for(net).restore(net, aec)
    t3 = time.perf_counter()
    if not isinstance(coder_for(net), ScaleClassCoder):
        return t1 - t0, t3 - t2, None, None
    hyper = side_information(net)
    t4 = time.perf_counter()
    classes = hyper.scale_classes(hyper_latents_of(hyper, aec), (h.latent_height, h.latent_width))
    t5 = time.perf_counter()
    latents = next(t for t in aec.tensors if t.role == coding.ROLE_LATENTS)
    coding.decode_classed(latents, classes, hyper.scale_class_count)
    return t1 - t0, t3 - t2, t5 - t4, time.perf_counter() - t5


def _ms(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{1000 * statistics.median(known):.1f}" if known else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    parser.add_argument("-q", "--qualities", type=float, nargs="+", default=[50.0, 75.0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=None, help="model or family (default: the bundled default)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = [image for _, image in load_folder(Path(args.data))][: args.images]
    if not images:
        print(f"no images in {args.data}", file=sys.stderr)
        return 1
    print(f"{len(images)} images, {args.threads} threads, median of {args.repeats} passes (ms per image)")
    print("| -q | member | unpack | restore (bytes -> latents) | of which: z + integer classes | streams |")
    print("|---:|---|---:|---:|---:|---:|")
    near = [Path(args.model).parent] if args.model and Path(args.model).is_file() else []
    for q in args.qualities:
        files = [codec.encode(image, args.model, q, "cpu").data for image in images]
        _times(files[0], near)  # loads the member and warms it up
        runs = [_times(data, near) for _ in range(args.repeats) for data in files]
        member = aecformat.unpack(files[0]).header.model_name
        cells = " | ".join(_ms([r[i] for r in runs]) for i in range(4))
        print(f"| {q:g} | {member} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
