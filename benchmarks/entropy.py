"""What the coding layer costs against what it aims at, per model and -q.

    python benchmarks/entropy.py [--data ../shared/data/kodak] [--model default] [-q 10 50 75 95]
        [--every 1] [--threads 2] [--streams]

For each -q (a family picks its member), summed over the images, in bits per pixel:
- file: the whole .aec file as aecompress writes it now (header included);
- one frame: the same latents as the single zstd frame of format version 3 (whole file; for a
  hyperprior, what scale classes save over one frame, the hyper-latents left out);
- model: the network's own rate estimate for these integers (factorized: -log2 P(bin) of its
  density; hyperprior: of the zero-mean Gaussian with the float h_s scales);
- channel entropy: the empirical entropy of each channel's integers (an ideal static code per
  image and channel, tables free);
- class entropy: the empirical entropy of the integers of each class the coder separates (the
  channel-context classes of scheme 1; the scale classes of scheme 3), tables free;
- hyper: the coded hyper-latents (hyperprior files only);
- streams: the coded latent streams alone (zstd frames with their dictionary set);
- gap: how far the coded latents are above the class entropy (streams + tensor table - class
  entropy, in % of the file): frame headers, the table, and zstd's codes against ideal ones.
With --streams, each stream's share of the coded bytes and its bits per raw byte are listed too
(channel-context coding only).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from aecompress import coding, pack, passes, placement
from aecompress import format as aecformat
from aecompress.evaluate import load_folder
from aecompress.latents import ScaleClassCoder, channel_order, quality_to_step, quantize
from aecompress.modelfile import load_model
from aecompress.nn.entropy import gaussian_bits

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


def _channel_context(
    net: torch.nn.Module,
    y: torch.Tensor,
    local: float,
    sums: dict[str, float],
    streams: dict[str, list[float]],
) -> None:
    """Scheme 1 (factorized models): channel-sorted integers, context classes from earlier channels."""
    q = quantize(y, quality_to_step(local))
    stored = q[channel_order(q)]
    sums["model"] += _model_bits(net, q, quality_to_step(local))
    sums["channel"] += sum(_entropy_bits(channel) for channel in stored)
    classes = coding.context_classes(stored)
    sums["class"] += sum(_entropy_bits(stored[classes == k]) for k in range(coding.CLASSES))
    tensor = coding.encode_streams(stored)
    sums["streams"] += 8 * tensor.coded_bytes
    sums["table"] += 8 * tensor.table_bytes
    for name, raw, frame in zip(STREAM_NAMES, tensor.raw_sizes, tensor.frames, strict=True):
        streams[name][0] += raw
        streams[name][1] += len(frame)


@torch.inference_mode()
def _scale_classes(net: torch.nn.Module, y: torch.Tensor, local: float, sums: dict[str, float]) -> None:
    """Scheme 3 (hyperprior models): integers grouped by the scale class the integer h_s gives."""
    coder = ScaleClassCoder()
    z, q, classes = coder._integers(net, y, local)
    log2 = net.hyper_scales(torch.from_numpy(z.astype(np.float32))[None], q.shape[1:])[0]
    sums["model"] += float(gaussian_bits(torch.from_numpy(q.astype(np.float32)), torch.exp2(log2)).sum())
    sums["channel"] += sum(_entropy_bits(channel) for channel in q)
    sums["class"] += 8 * coding.classed_entropy_bytes(q, classes, net.scale_class_count)
    hyper, latents = coder.code(net, y, local).tensors
    sums["hyper"] += 8 * (hyper.coded_bytes + hyper.table_bytes)
    sums["streams"] += 8 * latents.coded_bytes
    sums["table"] += 8 * latents.table_bytes


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
    pixels = sum(img.width * img.height for _, img in images)
    latents: dict[tuple[Path, int], torch.Tensor] = {}
    print(f"{len(images)} images from {args.data}; bits per pixel")
    columns = ["-q", "member", "file", "one frame", "change", "model", "channel entropy"]
    columns += ["class entropy", "hyper", "streams", "gap"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" for _ in columns) + "|")
    per_stream: dict[float, dict[str, list[float]]] = {}
    for quality in args.qualities:
        path, local = placement.pick_model(args.model, quality)
        net, info = load_model(path)
        sums: dict[str, float] = defaultdict(float)
        streams: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for index, (_, image) in enumerate(images):
            if (path, index) not in latents:
                latents[(path, index)] = passes.analyse(net, image.rgb, torch.device("cpu"))
            y = latents[(path, index)]
            data, header = pack.pack_latents(net, info.name, info.weights_hash, image, y, local)
            sums["file"] += 8 * len(data)
            if net.coding == "scale-classes":
                _scale_classes(net, y, local, sums)
                q = ScaleClassCoder()._integers(net, y, local)[1]
                order = None
            else:
                _channel_context(net, y, local, sums, streams)
                q = quantize(y, quality_to_step(local))
                order = channel_order(q)
            one_frame = aecformat.pack_legacy(header, q, image.alpha, image.icc, image.exif, order)
            sums["one frame"] += 8 * len(one_frame)
        b = {k: v / pixels for k, v in sums.items()}
        gap = (b["streams"] + b["table"] - b["class"]) / b["file"]
        hyper = f"{b['hyper']:.4f}" if "hyper" in b else "-"
        print(
            f"| {quality:g} | {info.name} {local:.1f} | {b['file']:.4f} | {b['one frame']:.4f} | "
            f"{100 * (b['file'] / b['one frame'] - 1):+.1f}% | {b['model']:.4f} | {b['channel']:.4f} | "
            f"{b['class']:.4f} | {hyper} | {b['streams']:.4f} | {100 * gap:.1f}% |"
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
