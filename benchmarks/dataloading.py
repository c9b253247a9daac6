"""Images per second into a PyTorch training loop: .aec files against JPEG at equal PSNR.

    python benchmarks/dataloading.py [--data ../shared/data/kodak] [-q 75] [--workers 2]
        [--batch 8] [--rounds 3] [--device cpu|cuda]

Every image is coded at -q Q as .aec, and as JPEG (Pillow, 4:2:0) at the lowest quality whose
PSNR reaches the .aec file's, so both hold the same quality. Then, per path, the images per
second a DataLoader delivers as uint8 tensors (lists of them: Kodak mixes portrait and landscape;
best of --rounds passes, workers started once). A pass covers the folder as many times as it takes
for every worker to get the same number of batches: a loader hands whole batches to its workers in
turn, so 24 images in batches of 8 over 2 workers would leave one worker idle for a third of a
single pass and time the loader's start-up and tail, not its rate:

- aec, workers: ``AecFolder`` decoding in the loader's worker processes (CPU);
- aec, batched: the raw files collated by ``BatchDecoder`` on --device (the GPU path);
- jpeg, workers: ``torchvision.io.decode_jpeg`` in the worker processes;
- jpeg, batched: ``decode_jpeg`` on a list of files on --device (nvJPEG on a GPU).
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

import aecompress
from aecompress.dataset import AecFolder, BatchDecoder
from aecompress.evaluate import load_folder
from aecompress.metrics import psnr

REPO = Path(__file__).resolve().parent.parent


class JpegFiles(Dataset[Any]):
    """JPEG files as bytes tensors, decoded by torchvision in the worker (or not, for batching)."""

    def __init__(self, files: list[Path], decode: bool) -> None:
        self.files, self.decode = files, decode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:
        from torchvision.io import decode_jpeg

        data = torch.frombuffer(bytearray(self.files[index].read_bytes()), dtype=torch.uint8)
        return decode_jpeg(data) if self.decode else data


def _jpeg_batch(device: str) -> Any:
    def collate(items: list[torch.Tensor]) -> Any:
        from torchvision.io import decode_jpeg

        return decode_jpeg(items, device=device)

    return collate


def _jpeg_at(image: np.ndarray, target: float) -> tuple[bytes, float]:
    """The smallest Pillow JPEG whose PSNR reaches ``target`` (or quality 95)."""
    for quality in range(5, 96):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=quality, optimize=True)
        decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        if psnr(image, decoded) >= target or quality == 95:
            return buf.getvalue(), psnr(image, decoded)
    raise AssertionError("unreachable")


def _repeats(count: int, batch: int, workers: int) -> int:
    """How many times a pass covers the folder so that each worker gets as many batches as any other."""
    if workers <= 1:
        return 1
    whole = batch * workers  # one full batch for every worker
    return whole // math.gcd(count, whole)


def _balanced(dataset: Dataset[Any], count: int, repeats: int) -> Dataset[Any]:
    return dataset if repeats == 1 else Subset(dataset, list(range(count)) * repeats)


def _rate(loader: DataLoader[Any], count: int, rounds: int) -> float:
    best = 0.0
    it = iter(loader)  # persistent workers: started once, before the clock
    for _ in range(rounds):
        start = time.perf_counter()
        for batch in loader:
            if isinstance(batch, torch.Tensor) and batch.is_cuda:
                torch.cuda.synchronize()
        best = max(best, count / (time.perf_counter() - start))
    del it
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    parser.add_argument("-q", "--quality", type=float, default=75)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    images = load_folder(Path(args.data))
    with tempfile.TemporaryDirectory() as tmp:
        aec_dir, jpeg_dir = Path(tmp) / "aec", Path(tmp) / "jpeg"
        aec_dir.mkdir()
        jpeg_dir.mkdir()
        aec_bytes = jpeg_bytes = 0
        aec_psnr, jpeg_psnr, pixels = [], [], 0
        for name, image in images:
            data = aecompress.compress(image.rgb, quality=args.quality)
            (aec_dir / f"{name}.aec").write_bytes(data)
            quality = psnr(image.rgb, np.asarray(aecompress.decompress(data).convert("RGB")))
            jpeg, jq = _jpeg_at(image.rgb, quality)
            (jpeg_dir / f"{name}.jpg").write_bytes(jpeg)
            aec_bytes, jpeg_bytes = aec_bytes + len(data), jpeg_bytes + len(jpeg)
            aec_psnr.append(quality)
            jpeg_psnr.append(jq)
            pixels += image.width * image.height
        n = len(images)
        jpeg_files = sorted(jpeg_dir.glob("*.jpg"))
        common = {
            "batch_size": args.batch,
            "num_workers": args.workers,
            "persistent_workers": args.workers > 0,
        }
        repeats = _repeats(n, args.batch, args.workers)

        def make(dataset: Dataset[Any], collate: Any) -> DataLoader[Any]:
            return DataLoader(_balanced(dataset, n, repeats), collate_fn=collate, **common)

        paths = {
            "aec, workers (CPU)": make(AecFolder(aec_dir), list),
            f"aec, batched on {args.device}": make(
                AecFolder(aec_dir, decode=False), BatchDecoder(args.device)
            ),
            "jpeg, workers (CPU)": make(JpegFiles(jpeg_files, True), list),
            f"jpeg, batched on {args.device}": make(JpegFiles(jpeg_files, False), _jpeg_batch(args.device)),
        }
        print(
            f"{n} images from {args.data}: .aec at -q {args.quality:g}, {8 * aec_bytes / pixels:.3f} bpp, "
            f"{np.mean(aec_psnr):.2f} dB; JPEG at equal PSNR {8 * jpeg_bytes / pixels:.3f} bpp, "
            f"{np.mean(jpeg_psnr):.2f} dB; batch {args.batch}, {args.workers} workers, "
            f"torch threads {torch.get_num_threads()}; a pass is the folder {repeats} time(s)"
        )
        print("| path | images/s |")
        print("|---|---:|")
        for label, loader in paths.items():
            print(f"| {label} | {_rate(loader, n * repeats, args.rounds):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
