"""Training data stored as .aec: a real DataLoader with worker processes, CPU and batched decoding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import aecompress
from aecompress.dataset import AecFolder, BatchDecoder
from tests.conftest import photo_like


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "train.aec"
    for label, name in enumerate(("cats", "dogs")):
        (root / name / "deeper").mkdir(parents=True)
        for i in range(3):
            image = Image.fromarray(photo_like(32, 48, seed=10 * label + i))
            folder = root / name / ("deeper" if i == 2 else "")
            (folder / f"{i}.png.aec").write_bytes(aecompress.compress(image, quality=70))
    (root / "cats" / "notes.txt").write_text("not an image")
    return root


def test_a_dataloader_with_workers_decodes_every_file_with_its_label(tree: Path) -> None:
    data = AecFolder(tree, labels=True)
    assert data.classes == ["cats", "dogs"] and len(data) == 6
    loader = DataLoader(data, batch_size=4, num_workers=2)
    seen = []
    for images, labels in loader:
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 48)
        seen += labels.tolist()
    assert sorted(seen) == [0, 0, 0, 1, 1, 1]
    first, label = data[0]
    assert label == 0
    assert torch.equal(first, aecompress.decompress_tensor(data.files[0], device="cpu"))


def test_batched_decoding_gives_the_same_pixels(tree: Path) -> None:
    raw = AecFolder(tree, labels=True, decode=False)
    loader = DataLoader(raw, batch_size=6, num_workers=2, collate_fn=BatchDecoder("cpu"))
    images, labels = next(iter(loader))
    assert images.shape == (6, 3, 32, 48) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    decoded = AecFolder(tree)
    for i in range(6):
        assert torch.equal(images[i], decoded[i])


def test_empty_or_missing_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(aecompress.AecError, match="not a folder"):
        AecFolder(tmp_path / "missing")
    with pytest.raises(aecompress.AecError, match=r"no \.aec files"):
        AecFolder(tmp_path)
