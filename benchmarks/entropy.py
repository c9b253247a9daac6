"""What zstd costs: the packed latents against the model's own rate estimate and the entropy.

    python benchmarks/entropy.py [--data ../shared/data/kodak] [-q 40 55 75 95] [--threads 2]

For each -q, summed over the images, in bits per pixel (the file column includes its header):
- file: the whole .aec file as aecompress writes it (header included; int8 latents channel-major,
  channels sorted by their spread, one zstd frame; int16 latents as zigzag byte planes);
- natural order: plain bytes in the natural channel order of format version 1 (int16 interleaved);
- model: the factorized density's estimate, -log2 P(bin) with bins of the quantization step;
- entropy: the empirical entropy of each channel's integers in each image (an ideal static code
  per image and channel, tables not counted);
and variants of the packing: all-zero channels dropped (a 100-bit mask instead), zstd level 22,
position-major order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import zstandard

from aecompress import codec
from aecompress.evaluate import load_folder
from aecompress.modelfile import load_model, resolve

REPO = Path(__file__).resolve().parent.parent


def _zstd(raw: bytes, level: int = 19) -> int:
    return len(zstandard.ZstdCompressor(level=level, write_checksum=True).compress(raw))


def _entropy_bits(q: np.ndarray) -> float:
    total = 0.0
    for channel in q.reshape(q.shape[0], -1):
        _, counts = np.unique(channel, return_counts=True)
        p = counts / counts.sum()
        total += float(-(counts * np.log2(p)).sum())
    return total


@torch.inference_mode()
def _model_bits(net: torch.nn.Module, q: np.ndarray, step: float) -> float:
    density = net.density
    v = torch.from_numpy(q.astype(np.float32)).reshape(q.shape[0], 1, -1) * step
    lower = density._logits_cdf(v - step / 2)
    upper = density._logits_cdf(v + step / 2)
    sign = -torch.sign(lower + upper)
    p = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs().clamp_min(1e-9)
    return float(-torch.log2(p).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    parser.add_argument("-q", "--qualities", type=int, nargs="+", default=[40, 55, 75, 95])
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = load_folder(Path(args.data))
    net, _ = load_model(resolve(args.model))
    pixels = sum(img.width * img.height for _, img in images)
    latents = [codec.analyse(net, img.rgb, torch.device("cpu")) for _, img in images]
    print(f"{len(images)} images from {args.data}; bits per pixel")
    columns = ["-q", "file (as written)", "natural order", "model estimate", "entropy", "zero channels"]
    columns += ["zeros dropped", "level 22", "position-major"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" for _ in columns) + "|")
    for quality in args.qualities:
        step = codec.quality_to_step(quality)
        sums = dict.fromkeys(("file", "natural", "model", "entropy", "dropped", "l22", "pos"), 0.0)
        zero_channels = 0
        for (_, image), y in zip(images, latents, strict=True):
            q = codec.quantize(y, step)
            data, _ = codec.pack_latents(net, "benchmark", bytes(16), image, y, quality)
            sums["file"] += 8 * len(data)
            sums["natural"] += 8 * _zstd(q.tobytes())
            sums["model"] += _model_bits(net, q, step)
            sums["entropy"] += _entropy_bits(q)
            live = np.abs(q).reshape(q.shape[0], -1).max(axis=1) > 0
            zero_channels += int((~live).sum())
            sums["dropped"] += 8 * _zstd(q[live].tobytes()) + q.shape[0]
            sums["l22"] += 8 * _zstd(q.tobytes(), 22)
            sums["pos"] += 8 * _zstd(np.ascontiguousarray(q.transpose(1, 2, 0)).tobytes())
        b = {k: v / pixels for k, v in sums.items()}
        print(
            f"| {quality:3d} | {b['file']:17.4f} | {b['natural']:13.4f} | {b['model']:14.4f} | "
            f"{b['entropy']:7.4f} | "
            f"{zero_channels / len(latents):13.1f} | {b['dropped']:13.4f} | {b['l22']:8.4f} | "
            f"{b['pos']:14.4f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
