"""How the writer's zstd settings compare with plain levels: size, and whether sizes rise with -q.

    python benchmarks/zstd_settings.py --model models/default-top8.pt -q 50 100 1 --every 4

For one model, each image (every Nth of the folder) is analysed once; at each of the model's own
qualities from START to STOP in steps of STEP its latent payload (the LATN chunk's bytes) is
compressed by each setting. Printed per setting: the total compressed size, how often the size
falls from one quality to the next (and the worst fall), and the mean time per payload.
"as written" is what ``aecompress.format`` writes today.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import zstandard

from aecompress import codec, coding, passes
from aecompress import latents as latents_lib
from aecompress.evaluate import load_folder
from aecompress.modelfile import load_model, resolve

REPO = Path(__file__).resolve().parent.parent


def _level(level: int) -> Callable[[bytes], bytes]:
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    return compressor.compress


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    parser.add_argument("--model", default=None)
    parser.add_argument(
        "-q", nargs=3, type=float, default=[0.0, 100.0, 1.0], metavar=("START", "STOP", "STEP")
    )
    parser.add_argument("--every", type=int, default=4, help="use every Nth image of the folder")
    parser.add_argument("--levels", type=int, nargs="+", default=[15, 17, 19])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    net, info = load_model(resolve(args.model))
    images = load_folder(Path(args.data))[:: args.every]
    qualities = np.arange(args.q[0], args.q[1] + 1e-9, args.q[2])
    settings: dict[str, Callable[[bytes], bytes]] = {f"level {lv}": _level(lv) for lv in args.levels}
    settings["as written"] = coding.compress_payload
    sizes = {name: np.zeros((len(images), len(qualities))) for name in settings}
    seconds = dict.fromkeys(settings, 0.0)
    for i, (_, image) in enumerate(images):
        latents = passes.analyse(net, image.rgb, torch.device("cpu"))
        for j, quality in enumerate(qualities):
            q = latents_lib.quantize(latents, codec.quality_to_step(float(quality)))
            raw = coding.plain_bytes(q[latents_lib.channel_order(q)])
            for name, compress in settings.items():
                t0 = time.perf_counter()
                sizes[name][i, j] = len(compress(raw))
                seconds[name] += time.perf_counter() - t0
    pairs = len(images) * (len(qualities) - 1)
    start, stop, step = args.q
    print(f"{info.name}: {len(images)} images from {args.data}, its -q {start:g} to {stop:g} by {step:g}")
    print("| setting | total bytes | vs level 19 | falls between neighbours | worst fall | s per payload |")
    print("|---|---:|---:|---:|---:|---:|")
    reference = sizes.get("level 19", next(iter(sizes.values()))).sum()
    for name, table in sizes.items():
        ratio = table[:, :-1] / table[:, 1:]
        falls = int((ratio > 1).sum())
        worst = max(float(ratio.max()) - 1, 0.0)
        print(
            f"| {name} | {int(table.sum()):,} | {100 * (table.sum() / reference - 1):+.1f}% | "
            f"{falls} of {pairs} | {100 * worst:.2f}% | {seconds[name] / table.size:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
