"""Feeding PyTorch from .aec files: a Dataset over a folder and a batched GPU decoder.

    from torch.utils.data import DataLoader
    from aecompress.dataset import AecFolder, BatchDecoder

    # decode in the loader's worker processes (CPU), like torchvision's ImageFolder
    loader = DataLoader(AecFolder("train.aec/", labels=True), batch_size=32, num_workers=4)

    # or hand the raw files to the GPU, which decodes a batch in one pass
    data = AecFolder("train.aec/", labels=True, decode=False)
    loader = DataLoader(data, batch_size=32, num_workers=2, collate_fn=BatchDecoder("cuda"))

Labels follow torchvision's ImageFolder: each first-level subfolder is a class, sorted by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from aecompress import api
from aecompress.device import select_device
from aecompress.errors import AecError

SUFFIX = ".aec"


class AecFolder(Dataset[Any]):
    """Every .aec file under ``root`` (recursively, in sorted order).

    An item is a uint8 tensor (C, H, W) decoded on the CPU, or with ``decode=False`` the file's
    bytes (for ``BatchDecoder``); with ``labels=True`` a pair (item, class index) where the class
    is the first-level subfolder. ``transform`` is applied to decoded tensors.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        labels: bool = False,
        decode: bool = True,
        transform: Any = None,
        model: str | Path | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise AecError(f"{self.root}: not a folder")
        self.files = sorted(p for p in self.root.rglob(f"*{SUFFIX}") if p.is_file())
        if not self.files:
            raise AecError(f"{self.root}: no {SUFFIX} files")
        self.classes: list[str] = []
        self.class_to_idx: dict[str, int] = {}
        if labels:
            from torchvision.datasets.folder import find_classes

            self.classes, self.class_to_idx = find_classes(str(self.root))
            self.files = [p for p in self.files if p.relative_to(self.root).parts[0] in self.class_to_idx]
        self.labels, self.decode, self.transform, self.model = labels, decode, transform, model

    def __len__(self) -> int:
        return len(self.files)

    def label_of(self, index: int) -> int:
        return self.class_to_idx[self.files[index].relative_to(self.root).parts[0]]

    def __getitem__(self, index: int) -> Any:
        path = self.files[index]
        item: Any = path.read_bytes()
        if self.decode:
            item = api.decompress_tensor(item, device="cpu", model=self.model)
            if self.transform is not None:
                item = self.transform(item)
        return (item, self.label_of(index)) if self.labels else item


class BatchDecoder:
    """A ``collate_fn`` that decodes a batch of .aec files together on ``device``: same-model,
    same-size files go through the decoder network in one pass. Returns a stacked uint8 tensor
    (B, C, H, W) when all images share a shape, else a list; with labels, also a label tensor.
    ``batch``: files per pass of the network (default: the whole batch on a GPU, one file at a
    time on the CPU, where larger passes run slower)."""

    def __init__(
        self, device: str = "auto", model: str | Path | None = None, batch: int | None = None
    ) -> None:
        self.device, self.model, self.batch = device, model, batch

    def __call__(self, items: Sequence[Any]) -> Any:
        with_labels = bool(items) and isinstance(items[0], tuple)
        datas = [item[0] if with_labels else item for item in items]
        batch = self.batch
        if batch is None:
            batch = 1 if select_device(self.device).type == "cpu" else max(1, len(datas))
        images = api.decompress_many(datas, device=self.device, model=self.model, batch=batch)
        shapes = {tuple(t.shape) for t in images}
        stacked: Any = torch.stack(images) if len(shapes) == 1 else images
        if with_labels:
            return stacked, torch.tensor([item[1] for item in items])
        return stacked
