"""How high can a model's quality go? PSNR at finer and finer quantization steps, and with none.

    python benchmarks/ceiling.py --models models/factorized.pt [more.pt ...] [--images 6] [--threads 2]

A model trained at one rate-distortion trade-off tops out: below some step, finer quantization
buys nothing, because the transforms themselves lose detail. The "none" column (latents not
rounded at all) is that ceiling. A family member meant for high qualities must raise it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from aecompress import passes
from aecompress.imageio import read_image
from aecompress.metrics import psnr
from aecompress.modelfile import load_model

REPO = Path(__file__).resolve().parent.parent
STEPS = (1.0, 0.5, 0.25, 0.0)


def ceiling(model: Path, images: list[Path]) -> dict[float, float]:
    """Mean PSNR over the images at each quantization step (0: no rounding)."""
    net, _ = load_model(model)
    cpu = torch.device("cpu")
    scores: dict[float, list[float]] = {step: [] for step in STEPS}
    for path in images:
        image = read_image(path)
        latents = passes.analyse(net, image.rgb, cpu)
        for step in STEPS:
            rounded = latents if step == 0 else torch.round(latents / step) * step
            restored = passes.synthesize(net, rounded, (image.height, image.width), cpu)
            scores[step].append(psnr(image.rgb, restored))
    return {step: float(np.mean(values)) for step, values in scores.items()}


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--models", type=Path, nargs="+", default=[REPO / "models" / "factorized.pt"])
    parser.add_argument("--folder", type=Path, default=REPO.parent / "shared" / "data" / "kodak")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = sorted(args.folder.glob("*.png"))[: args.images]
    if not images:
        raise SystemExit(f"no PNG images in {args.folder}")
    print(f"mean PSNR (dB) over {len(images)} images of {args.folder}, by quantization step")
    print(f"{'model':40} " + " ".join(f"{'step ' + format(s, 'g') if s else 'none':>9}" for s in STEPS))
    for model in args.models:
        row = ceiling(model, images)
        print(f"{model!s:40} " + " ".join(f"{row[s]:9.2f}" for s in STEPS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
