"""The GPU check of issue 26, one run: exact parsing and throughput on a device, in one table.

    python scripts/gpu_check.py --data .data/kodak --device cuda [--model M] [--repeat 4]

1. **Integers**: every golden file of format 5 and 6 (with its committed model) and every
   encoded image parses to the same integer latents with the model on the CPU and on --device.
   The parse-critical networks are exact integer sums in float64, on either device.
2. **Batch decode**, end to end: .aec bytes -> uint8 tensors on the device (``decompress_many``:
   threads parse while the device runs the synthesis), images/s over --repeat passes.
3. **Encode** throughput (``encode_many``), images/s.
4. **A DataLoader** of .aec files (``AecFolder`` + ``BatchDecoder`` on the device, 2 workers)
   against one of the same images as JPEG (quality 90) decoded by ``torchvision.io.decode_jpeg``
   on the device.

Exits 1 when any integers differ. On a CPU (``--device cpu``) the same script runs at tiny scale
in the test suite, so it works the day a GPU comes.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from aecompress import api, codec, passes
from aecompress import format as aecformat
from aecompress.dataset import AecFolder, BatchDecoder
from aecompress.imageio import IMAGE_SUFFIXES, read_image
from aecompress.latents import coder_for, gains_at, step_to_quality
from aecompress.modelfile import find_for_file

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "assets" / "golden"


def integer_latents(data: bytes, model: Path, device: torch.device) -> np.ndarray:
    """A file's integer latents as the decoder restores them with the model on ``device``."""
    aec = aecformat.unpack(data)
    net, _ = passes.model_on(model, device)
    igain = gains_at(net, step_to_quality(aec.header.step))[1].cpu().double()
    y = coder_for(net).restore(net, aec).cpu().double() / igain[:, None, None]
    return np.round(y.numpy() * 256).astype(np.int64)


def same_integers(files: list[tuple[str, bytes, Path]], device: torch.device) -> list[str]:
    """The names of the files whose integers differ between the CPU and ``device``."""
    cpu = torch.device("cpu")
    return [
        name
        for name, data, model in files
        if not np.array_equal(integer_latents(data, model, cpu), integer_latents(data, model, device))
    ]


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:.1f}" if seconds > 0 else "-"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Jpegs(Dataset[torch.Tensor]):
    def __init__(self, blobs: list[bytes]) -> None:
        self.blobs = blobs

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.frombuffer(bytearray(self.blobs[index]), dtype=torch.uint8)


def _jpeg_collate(device: torch.device) -> object:
    import torchvision.io as tvio

    def collate(items: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(tvio.decode_jpeg(items, device=str(device)))

    return collate


def _loader_rate(dataset: Dataset[object], collate: object, batch: int, device: torch.device) -> float:
    loader = DataLoader(dataset, batch_size=batch, num_workers=2, collate_fn=collate)  # type: ignore[arg-type]
    count, start = 0, time.perf_counter()
    for items in loader:
        count += len(items)
    _sync(device)
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "kodak")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default=None, help="model or family (default: the bundled default)")
    parser.add_argument("-q", "--quality", type=float, default=75.0)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=4, help="passes over the images for the rates")
    parser.add_argument("--batch", type=int, default=24)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    paths = sorted(p for p in args.data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.images]
    images = [read_image(p) for p in paths]
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}; "
          f"{len(images)} images from {args.data}, -q {args.quality:g}")  # fmt: skip

    codec.encode_many(images[:1], args.model, args.quality, str(device))  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.repeat):
        encoded = codec.encode_many(images, args.model, args.quality, str(device))
    _sync(device)
    encode_s = time.perf_counter() - start
    datas = [r.data for r in encoded]

    files = [(f"golden/{p.name}", p.read_bytes(), GOLDEN / m)
             for p, m in ((GOLDEN / "v5-hyperprior.aec", "hyperprior-small.pt"),
                          (GOLDEN / "v6-context.aec", "context-small.pt"))]  # fmt: skip
    for path, data in zip(paths, datas, strict=True):
        h = aecformat.unpack(data).header
        model = find_for_file(h.model_name, h.model_hash)
        files.append((path.name, data, model))
    differ = same_integers(files, device)

    api.decompress_many(datas[:1], device=str(device), model=args.model)  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.repeat):
        tensors = api.decompress_many(datas, device=str(device), model=args.model, batch=args.batch)
    _sync(device)
    decode_s = time.perf_counter() - start
    assert all(t.device.type == device.type and t.dtype == torch.uint8 for t in tensors)

    with tempfile.TemporaryDirectory() as tmp:
        for i, data in enumerate(datas * args.repeat):
            Path(tmp, f"{i:05d}.aec").write_bytes(data)
        decoder = BatchDecoder(str(device), args.model, args.batch)
        aec_rate = _loader_rate(AecFolder(tmp, decode=False), decoder, args.batch, device)
    jpegs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image.rgb).save(buffer, "JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    jpeg_rate = _loader_rate(_Jpegs(jpegs * args.repeat), _jpeg_collate(device), args.batch, device)

    n = len(images) * args.repeat
    print("| check | result |")
    print("|---|---:|")
    matched = f"{len(files) - len(differ)} of {len(files)}"
    print(f"| files whose integers match on CPU and {device.type} | {matched} |")
    print(f"| batch decode, bytes -> uint8 tensors on {device.type}, images/s | {_rate(n, decode_s)} |")
    print(f"| encode (encode_many), images/s | {_rate(n, encode_s)} |")
    print(f"| DataLoader of .aec (BatchDecoder, 2 workers), images/s | {aec_rate:.1f} |")
    print(f"| DataLoader of JPEG q90 (decode_jpeg on {device.type}, 2 workers), images/s | {jpeg_rate:.1f} |")
    if differ:
        print("integers differ: " + ", ".join(differ))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
