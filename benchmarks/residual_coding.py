"""The pixel residual's two codings side by side: for every file of a family's residual tail, its
values coded as one zstd frame (the smaller of both settings) and by classes (format 8), with
the time each takes to code and to parse, and how often the encoder's choice was the smaller.

    python benchmarks/residual_coding.py --data FOLDER [--model default] -q 94 97 100 [--threads 2]

One row per -q: the files that hold a residual, the residual's mean size each way, classes
against the frame over all of them, mean milliseconds to code and to parse each, how many files
the encoder coded by classes, and how many of its choices were the smaller of the two.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from aecompress import codec, coding, residual
from aecompress import format as aecformat
from aecompress.imageio import IMAGE_SUFFIXES, read_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument(
        "--model", default=None, help="a model name, file or family (default: the bundled one)"
    )
    parser.add_argument("-q", type=float, nargs="+", default=[96.0, 100.0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[: args.images]
    if not paths:
        parser.error(f"no images in {args.data}")
    images = [read_image(p) for p in paths]
    print(f"{len(images)} images from {args.data}, {args.threads} threads")
    print("| -q | files | frame KB | classes KB | classes / frame | code ms frame | code ms classes "
          "| parse ms frame | parse ms classes | coded by classes | choice the smaller |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for quality in args.q:
        sizes: list[tuple[int, int]] = []
        times: list[tuple[float, float, float, float]] = []
        chosen = smaller = 0
        for image in images:
            aec = aecformat.unpack(codec.encode(image, args.model, quality, "cpu").data)
            values = aec.residual_array()
            if values is None or aec.residual is None:
                continue
            start = time.perf_counter()
            frame = coding.compress_payload(values.tobytes())
            coded = time.perf_counter()
            body = residual.code_bands(
                (values[rows] for rows in residual.classed_bands(*values.shape[:2])), args.threads
            )
            classed = time.perf_counter()
            aecformat.inflate(frame, values.size, "residual")
            inflated = time.perf_counter()
            as_classes = dataclasses.replace(aec.residual.with_classed(True), frame=body)
            assert np.array_equal(
                aecformat.AecFile(aec.header, b"", residual=as_classes).residual_array(), values
            )
            parsed = time.perf_counter()
            sizes.append((len(frame), len(body)))
            times.append((coded - start, classed - coded, inflated - classed, parsed - inflated))
            chosen += aec.residual.classed
            smaller += aec.residual.classed == (len(body) < len(frame))
        if not sizes:
            print(f"| {quality:g} | 0 | | | | | | | | | |")
            continue
        kb = np.array(sizes, dtype=float).mean(axis=0) / 1024
        ms = np.array(times).mean(axis=0) * 1000
        ratio = sum(b for _, b in sizes) / sum(f for f, _ in sizes)
        print(f"| {quality:g} | {len(sizes)} | {kb[0]:.1f} | {kb[1]:.1f} | {ratio:.3f} | {ms[0]:.1f} "
              f"| {ms[1]:.1f} | {ms[2]:.1f} | {ms[3]:.1f} | {chosen} | {smaller}/{len(sizes)} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
