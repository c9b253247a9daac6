"""What the coding layer costs against what it aims at, per model and -q.

    python benchmarks/entropy.py [--data ../shared/data/kodak] [--model default] [-q 10 50 75 95]
        [--every 1] [--threads 2] [--streams]

For each -q (a family picks its member), summed over the images, in bits per pixel:
- file: the whole .aec file as aecompress writes it now (format version 4, header included);
- version 3: the same latents as the single zstd frame of format version 3 (whole file);
- model: the network's own rate estimate for these integers (factorized: -log2 P(bin));
- channel entropy: the empirical entropy of each channel's integers (an ideal static code per
  image and channel, tables free);
- class entropy: the empirical entropy of the integers of each context class (what the
  channel-context scheme aims at, tables free);
- streams: the coded streams alone (zstd frames with the dictionary set);
- gap: how far the coded latents are above the class entropy (streams + tensor table - class
  entropy, in % of the file): frame headers, the table, and zstd's Huffman codes against ideal ones.
With --streams, each stream's share of the coded bytes and its bits per raw byte are listed too.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from aecompress import codec, coding
from aecompress import format as aecformat
from aecompress.evaluate import load_folder
from aecompress.family import find_family
from aecompress.modelfile import load_model, resolve

REPO = Path(__file__).resolve().parent.parent


def _entropy_bits(values: np.ndarray) -> float:
    if values.size == 0:
        return 0.0
    _, counts = np.unique(values, return_counts=True)
    return float(-(counts * np.log2(counts / counts.sum())).sum())


@torch.inference_mode()
def _model_bits(net: torch.nn.Module, q: np.ndarray, step: float) -> float:
    density = getattr(net, "density", None)
    if density is None:
        return float("nan")
    v = torch.from_numpy(q.astype(np.float32)).reshape(q.shape[0], 1, -1) * step
    lower = density._logits_cdf(v - step / 2)
    upper = density._logits_cdf(v + step / 2)
    sign = -torch.sign(lower + upper)
    p = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs().clamp_min(1e-9)
    return float(-torch.log2(p).sum())


STREAM_NAMES = [f"sig{k}" for k in range(coding.CLASSES)] + [f"gt1.{k}" for k in range(coding.CLASSES)]
STREAM_NAMES += ["sign", "rest", "esc"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    parser.add_argument("-q", "--qualities", type=float, nargs="+", default=[10, 50, 75, 95])
    parser.add_argument("--model", default=None, help="model or family (default: the default family)")
    parser.add_argument("--every", type=int, default=1, help="take every N-th image")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--streams", action="store_true", help="list each stream's cost too")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = load_folder(Path(args.data))[:: args.every]
    family = find_family(args.model)
    pixels = sum(img.width * img.height for _, img in images)
    latents: dict[tuple[Path, int], torch.Tensor] = {}
    print(f"{len(images)} images from {args.data}; bits per pixel")
    columns = ["-q", "member", "file", "version 3", "change", "model", "channel entropy"]
    columns += ["class entropy", "streams", "gap"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" for _ in columns) + "|")
    per_stream: dict[float, dict[str, list[float]]] = {}
    for quality in args.qualities:
        path, local = family.pick(quality) if family else (resolve(args.model), quality)
        net, info = load_model(path)
        step = codec.quality_to_step(local)
        sums: dict[str, float] = defaultdict(float)
        streams: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for index, (_, image) in enumerate(images):
            if (path, index) not in latents:
                latents[(path, index)] = codec.analyse(net, image.rgb, torch.device("cpu"))
            y = latents[(path, index)]
            data, header = codec.pack_latents(net, info.name, info.weights_hash, image, y, local)
            aec = aecformat.unpack(data)
            q = coding.latents_of(aec)
            stored = q[aec.order]
            sums["file"] += 8 * len(data)
            sums["v3"] += 8 * len(
                aecformat.pack_legacy(header, q, image.alpha, image.icc, image.exif, aec.order)
            )
            sums["model"] += _model_bits(net, q, step)
            sums["channel"] += sum(_entropy_bits(channel) for channel in stored)
            classes = coding.context_classes(stored)
            sums["class"] += sum(_entropy_bits(stored[classes == k]) for k in range(coding.CLASSES))
            tensor = coding.encode_streams(stored)
            sums["streams"] += 8 * tensor.coded_bytes
            sums["table"] += 8 * tensor.table_bytes
            for name, raw, frame in zip(STREAM_NAMES, tensor.raw_sizes, tensor.frames, strict=True):
                streams[name][0] += raw
                streams[name][1] += len(frame)
        b = {k: v / pixels for k, v in sums.items()}
        gap = (b["streams"] + b["table"] - b["class"]) / b["file"]
        print(
            f"| {quality:g} | {info.name} {local:.1f} | {b['file']:.4f} | {b['v3']:.4f} | "
            f"{100 * (b['file'] / b['v3'] - 1):+.1f}% | {b['model']:.4f} | {b['channel']:.4f} | "
            f"{b['class']:.4f} | {b['streams']:.4f} | {100 * gap:.1f}% |"
        )
        per_stream[quality] = streams
    if args.streams:
        for quality, streams in per_stream.items():
            total = sum(coded for _, coded in streams.values()) or 1
            print(f"\n-q {quality:g}: stream, share of coded bytes, bits per raw byte")
            for name, (raw, coded) in streams.items():
                if raw:
                    print(f"  {name:6s} {100 * coded / total:5.1f}%  {8 * coded / raw:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
