"""Build a zstd dictionary set for the latent streams (aecompress/coding.py) from training images.

    python scripts/train_dictionaries.py --data ../shared/data/bsds500/train --every 5 \
        --out aecompress/dictionaries/set1.zdict

The bundled family codes every fifth BSDS500 training image at -q 5, 10, ..., 100; each stream's
samples train its own dictionary (its entropy tables are what a small stream saves). A set, once
released, never changes: files name the set they were coded with. Never run on Kodak.

With a hyperprior model (``--model runs/hp2/hyperprior.pt``) it trains a set for the scale-class
streams of scheme 2 instead (one dictionary per class stream), from the classes its integer
hyper-synthesis gives.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zstandard

from aecompress import codec, coding, passes
from aecompress import latents as latents_lib
from aecompress.evaluate import load_folder
from aecompress.family import find_family
from aecompress.modelfile import load_model


def _streams(net: torch.nn.Module, y: torch.Tensor, quality: float) -> list[bytes]:
    """The raw streams a file of this model at this quality holds for its latents."""
    if getattr(net, "coding", "") == "scale-classes":
        hyper: Any = net
        coded = latents_lib.coder_for(hyper).code(hyper, y, quality)
        z = coding.decode_tensor(coded.tensors[0], np.dtype("<i2"))
        position = torch.tensor([hyper.rate_position(quality)])
        scaled = torch.round(y * hyper.gains(position)[0][0][:, None, None]).numpy()
        classes = hyper.scale_classes(z, scaled.shape[1:])
        return coding.binarize_classed(scaled, classes, hyper.scale_class_count)
    q = latents_lib.quantize(y, codec.quality_to_step(quality))
    stored = q[latents_lib.channel_order(q)]
    return coding.binarize(stored, coding.context_classes(stored))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True)
    parser.add_argument("--every", type=int, default=5, help="take every N-th image")
    parser.add_argument("--model", default="default", help="a model or family")
    parser.add_argument("--size", type=int, default=2048, help="bytes per dictionary")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = load_folder(Path(args.data))[:: args.every]
    family = find_family(args.model)
    samples: list[list[bytes]] = [[] for _ in range(coding.MAX_STREAMS)]
    latents: dict[tuple[Path, int], torch.Tensor] = {}
    for quality in range(5, 101, 5):
        path, local = family.pick(quality) if family else (Path(args.model), float(quality))
        net, _ = load_model(path)
        for index, (_, image) in enumerate(images):
            if (path, index) not in latents:
                latents[(path, index)] = passes.analyse(net, image.rgb, torch.device("cpu"))
            for i, raw in enumerate(_streams(net, latents[(path, index)], local)):
                if len(raw) >= 16:
                    samples[i].append(raw)
        print(f"-q {quality}: {path.name} at its -q {local:.1f}", file=sys.stderr)
    while samples and not samples[-1]:
        samples.pop()
    dicts: list[bytes | None] = []
    for i, found in enumerate(samples):
        try:
            d = zstandard.train_dictionary(args.size, found, level=coding.ZSTD_LEVEL, k=16, d=8, threads=1)
            dicts.append(d.as_bytes())
        except zstandard.ZstdError as exc:
            print(f"stream {i}: no dictionary ({len(found)} samples: {exc})", file=sys.stderr)
            dicts.append(None)
    blob = coding.dictionary_blob(dicts)
    Path(args.out).write_bytes(blob)
    print(f"{args.out}: {len(blob)} bytes, sha256 {hashlib.sha256(blob).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
