"""Training data: finding images, torchvision's STL10 layout, the validation split, and crops.

Every training sample is a pure function of (seed, sample index): which image, where the crop
lies and how it is flipped. So resuming at step k, running with any number of loader workers, or
sharding across distributed ranks all see exactly the samples a single straight run would.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from aecompress import synthetic as synthetic_images
from aecompress.errors import ImageError, TrainingError
from aecompress.imageio import IMAGE_SUFFIXES, read_image

log = logging.getLogger("aecompress")

STL10_FILES = ("train_X.bin", "unlabeled_X.bin", "test_X.bin")


def find_images(roots: list[str]) -> list[Path]:
    """Every file with an image extension under the given folders (recursive), sorted."""
    found: list[Path] = []
    for root in roots:
        p = Path(root)
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found += [f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
        else:
            raise TrainingError(f"training data not found: {root}")
    return sorted(found)


def load_images(paths: list[Path]) -> tuple[list[torch.Tensor], int]:
    """Decode images into uint8 (3, H, W) tensors; unreadable files are skipped and counted."""
    images: list[torch.Tensor] = []
    skipped = 0
    for path in paths:
        try:
            img = read_image(path)
        except ImageError as exc:
            log.warning("skipping %s", exc)
            skipped += 1
            continue
        images.append(torch.from_numpy(img.rgb).permute(2, 0, 1).contiguous())
    return images, skipped


def load_stl10(root: str, max_images: int | None = None) -> list[torch.Tensor]:
    """Images from torchvision's STL10 binary layout (ROOT/stl10_binary/*_X.bin, 96x96 RGB).

    Nothing can be downloaded here, so a missing folder is a clear error rather than a fetch.
    """
    folder = Path(root) / "stl10_binary"
    files = [folder / name for name in STL10_FILES if (folder / name).is_file()]
    if not files:
        raise TrainingError(
            f"STL10 not found: expected {folder}/train_X.bin or unlabeled_X.bin "
            "(torchvision's layout; download it elsewhere and copy it here)"
        )
    images: list[torch.Tensor] = []
    for path in files:
        raw = np.memmap(path, dtype=np.uint8, mode="r")
        if raw.size % (3 * 96 * 96):
            raise TrainingError(f"{path}: size is not a whole number of 96x96 RGB images")
        arr = raw.reshape(-1, 3, 96, 96)
        for i in range(arr.shape[0]):
            images.append(torch.from_numpy(np.ascontiguousarray(arr[i].transpose(0, 2, 1))))
            if max_images is not None and len(images) >= max_images:
                return images
    return images


def split_validation(paths: list[Path], count: int = 8) -> tuple[list[Path], list[Path]]:
    """Hold out evenly spaced files for validation (none when there are fewer than 10)."""
    if len(paths) < 10:
        return paths, []
    count = min(count, max(1, len(paths) // 10))
    stride = len(paths) // count
    held = set(range(stride // 2, len(paths), stride)[:count])
    return [p for i, p in enumerate(paths) if i not in held], [paths[i] for i in sorted(held)]


def sample_crop(image: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """A size x size crop with random flips; images smaller than the crop are mirror-padded."""
    _, h, w = image.shape
    if h < size or w < size:
        pad_h, pad_w = max(0, size - h), max(0, size - w)
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        image = F.pad(image[None].float(), (0, pad_w, 0, pad_h), mode=mode)[0].round().to(torch.uint8)
        _, h, w = image.shape
    top = int(torch.randint(0, h - size + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - size + 1, (1,), generator=gen))
    crop = image[:, top : top + size, left : left + size]
    if bool(torch.randint(0, 2, (1,), generator=gen)):
        crop = crop.flip(2)
    if bool(torch.randint(0, 2, (1,), generator=gen)):
        crop = crop.flip(1)
    return crop


class CropDataset(Dataset[torch.Tensor]):
    """Sample i is a deterministic random crop (uint8, 3 x out x out) of a deterministic image:
    one of ``images``, or with probability ``synthetic`` a generated one (``aecompress.synthetic``,
    drawn at 1-2 times the crop's size, so its text and shapes come at several scales)."""

    def __init__(
        self,
        images: list[torch.Tensor],
        crop: int,
        seed: int,
        out_size: int | None = None,
        synthetic: float = 0.0,
    ) -> None:
        if not images:
            raise TrainingError("no readable images in the training data")
        if not 0.0 <= synthetic < 1.0:
            raise TrainingError(f"--synthetic must be in [0, 1), not {synthetic}")
        self.images = images
        self.crop = crop
        self.seed = seed
        self.out_size = out_size
        self.synthetic = synthetic

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, index: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed((self.seed * 0x9E3779B1 + index) % (1 << 63))
        # without a synthetic share no extra number is drawn: earlier runs see the same samples
        if self.synthetic and float(torch.rand(1, generator=gen)) < self.synthetic:
            side = int(self.crop * (1.0 + float(torch.rand(1, generator=gen))))
            drawn = synthetic_images.render_any(
                int(torch.randint(0, 1 << 62, (1,), generator=gen)), side, side
            )
            image = torch.from_numpy(drawn).permute(2, 0, 1).contiguous()
        else:
            image = self.images[int(torch.randint(0, len(self.images), (1,), generator=gen))]
        crop = sample_crop(image, self.crop, gen)
        if self.out_size and self.out_size != self.crop:
            scaled = F.interpolate(crop[None].float(), size=(self.out_size, self.out_size), mode="area")
            crop = scaled[0].round().clamp(0, 255).to(torch.uint8)
        return crop


class IndexRange(torch.utils.data.Sampler[int]):
    """The sample indices of steps [start, stop) for one rank: what makes resume and DDP exact."""

    def __init__(self, start_step: int, stop_step: int, batch: int, rank: int = 0, world: int = 1) -> None:
        self.start, self.stop, self.batch, self.rank, self.world = start_step, stop_step, batch, rank, world

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.stop):
            base = (step * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.batch
