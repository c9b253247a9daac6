"""The Python face of aecompress: compress and decompress images in memory, as the CLI does.

Options are keyword-only and named as on the command line (``quality`` is ``-q``, ``target_bpp``
is ``--target-bpp``, ``model`` is ``--model``, ``device`` is ``--device``); errors are the
documented types of ``aecompress.errors`` (all ``AecError``). torch is imported when a network
is first needed, not before (``info`` never needs one).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from aecompress import format as aecformat
from aecompress.defaults import DEFAULT_MAX_PIXELS, DEFAULT_QUALITY
from aecompress.errors import ImageError
from aecompress.format import MODES
from aecompress.imageio import ImageData, from_pil, read_image

if TYPE_CHECKING:
    import torch

ImageLike = Image.Image | np.ndarray | str | Path


def _image_data(image: ImageLike, max_pixels: int | None) -> ImageData:
    """A PIL image, a uint8 array (H x W, H x W x 1/3/4) or a path -> what the codec codes."""
    if isinstance(image, str | Path):
        return read_image(Path(image), max_pixels)
    if isinstance(image, Image.Image):
        return from_pil(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ImageError(f"arrays must be uint8, not {image.dtype}")
        if image.ndim == 2:
            return from_pil(Image.fromarray(image, "L"))
        if image.ndim == 3 and image.shape[2] in MODES:
            array = image[..., 0] if image.shape[2] == 1 else image
            return from_pil(Image.fromarray(np.ascontiguousarray(array), MODES[image.shape[2]]))
        raise ImageError(f"an image array is H x W or H x W x 1/2/3/4, not {image.shape}")
    raise ImageError(f"cannot compress a {type(image).__name__} (a PIL image, a uint8 array or a path)")


def compress(
    image: ImageLike,
    *,
    quality: float = DEFAULT_QUALITY,
    target_bpp: float | None = None,
    model: str | Path | None = None,
    device: str = "auto",
    effort: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    content: str = "auto",
) -> bytes:
    """An image as .aec bytes: at ``quality`` 0..100, or at the highest quality whose file stays
    at or under ``target_bpp`` bits per pixel. ``model`` is a name, a model file or a family;
    ``effort`` refines the latents with that many decoder passes (``--effort``); ``content``
    (``auto``, ``photo``, ``graphics``) picks a family's members for the kind of picture."""
    from aecompress import codec

    data = _image_data(image, max_pixels)
    result = codec.encode(data, model, quality, device, effort=effort, target_bpp=target_bpp, content=content)
    return result.data


def compress_many(
    images: Sequence[ImageLike],
    *,
    quality: float = DEFAULT_QUALITY,
    model: str | Path | None = None,
    device: str = "auto",
    batch: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    content: str = "auto",
) -> list[bytes]:
    """Several images at one quality, same-sized ones through the encoder together on a GPU
    (``batch`` at a time, default 16 there; one at a time on the CPU, where batches are slower).
    ``content`` as ``compress``'s, told per image."""
    from aecompress import codec

    datas = [_image_data(image, max_pixels) for image in images]
    return [r.data for r in codec.encode_many(datas, model, quality, device, batch, content=content)]


def decompress(
    data: bytes | str | Path,
    *,
    device: str = "auto",
    model: str | Path | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """.aec bytes (or a path to a .aec file) -> a PIL image in the mode the file records (L, LA,
    RGB or RGBA), with its ICC profile and EXIF in ``.info``. The model is found from the file's
    name and weights hash: beside the file, in the current folder, in the models folders."""
    from aecompress import codec

    raw, near = _read(data)
    return codec.decode(raw, device, model, max_pixels=max_pixels, near=near).to_pil()


def decompress_tensor(
    data: bytes | str | Path,
    *,
    device: str = "auto",
    model: str | Path | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """.aec bytes -> a uint8 tensor (C, H, W) on ``device`` (RGB, or RGBA when the file has alpha)."""

    from aecompress import codec
    from aecompress.device import select_device

    raw, near = _read(data)
    image = codec.decode(raw, device, model, max_pixels=max_pixels, near=near)
    return _tensor(image, select_device(device))


def decompress_many(
    datas: Sequence[bytes],
    *,
    device: str = "auto",
    model: str | Path | None = None,
    batch: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> list[torch.Tensor]:
    """Several files at once, same-shaped ones through the decoder together on a GPU (``batch`` at
    a time, default 16 there; one at a time on the CPU): uint8 tensors (C, H, W) on ``device``.
    The first file that fails raises its error."""
    from aecompress import codec
    from aecompress.device import select_device
    from aecompress.errors import AecError

    dev = select_device(device)
    out = []
    for item in codec.decode_many([bytes(d) for d in datas], device, model, batch, max_pixels=max_pixels):
        if isinstance(item, AecError):
            raise item
        out.append(_tensor(item, dev))
    return out


def info(data: bytes | str | Path) -> dict[str, Any]:
    """The header fields of .aec bytes or a file (as ``aecompress info --json``), without a network."""
    return aecformat.describe(aecformat.unpack(_read(data)[0]))


def _read(data: bytes | str | Path) -> tuple[bytes, list[Path]]:
    """Bytes as given, or a file's bytes and its folder (where its model may be)."""
    if isinstance(data, str | Path):
        path = Path(data)
        try:
            return path.read_bytes(), [path.parent]
        except OSError as exc:
            raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return bytes(data), []


def _tensor(image: ImageData, device: torch.device) -> torch.Tensor:
    import torch

    planes = image.rgb if image.alpha is None else np.dstack([image.rgb, image.alpha])
    return torch.from_numpy(np.ascontiguousarray(planes.transpose(2, 0, 1))).to(device)
