"""The networks on images: padding, tiled analysis and synthesis passes, batched stacks, and the
cache of models placed on a device.

Large images are run in tiles of the latent grid, each with enough surrounding context that the
kept part matches a whole-image pass; memory stays bounded by the tile size, not the image.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from aecompress.defaults import GPU_BATCH
from aecompress.device import autocast
from aecompress.modelfile import ModelInfo, load_model
from aecompress.nn import LatentCodec

if TYPE_CHECKING:
    from aecompress.latents import GainScaled

TILE_PIXELS = 1024  # side of a tile in image pixels: 64 latents at stride 16, 128 at stride 8


_on_device: dict[tuple[str, str], LatentCodec] = {}


def model_on(path: Path, device: torch.device) -> tuple[LatentCodec, ModelInfo]:
    """A loaded model placed on a device (kept for reuse across files in one process)."""
    model, info = load_model(path)
    if device.type == "cpu":
        return model, info
    key = (str(Path(path).resolve()), str(device))
    if key not in _on_device:
        _on_device[key] = copy.deepcopy(model).to(device)
    return _on_device[key], info


def tile_latents(model: LatentCodec, tile: int | None) -> int:
    """Latents per tile side: ``tile`` when given, else what covers TILE_PIXELS at the model's
    stride. Sizing tiles in pixels keeps peak memory the same for every stride, and spares
    stride-8 models the seams (each with its context recomputed) of a Kodak-sized image."""
    return tile if tile else max(1, TILE_PIXELS // model.stride)


def _tiles(length: int, tile: int) -> Iterator[tuple[int, int]]:
    for start in range(0, length, tile):
        yield start, min(start + tile, length)


def _image_tensor(padded: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(padded)).to(device)
    t = t.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    return t.contiguous(memory_format=torch.channels_last)


def _edge_padded(rgb: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Rows y0..y1 and columns x0..x1 of the image extended past its edges by repeating its last
    row and column: one tile's part of the edge-padded image, without padding the whole."""
    h, w = rgb.shape[:2]
    region = rgb[y0 : min(y1, h), x0 : min(x1, w)]
    if y1 <= h and x1 <= w:
        return region
    return np.pad(region, ((0, y1 - min(y1, h)), (0, x1 - min(x1, w)), (0, 0)), mode="edge")


@torch.inference_mode()
def analyse(
    model: LatentCodec,
    rgb: np.ndarray,
    device: torch.device,
    tile: int | None = None,
    compact: bool = False,
) -> torch.Tensor:
    """Float latents (C, Lh, Lw) of an (H, W, 3) uint8 image, edge-padded to the stride, tiled.

    ``compact``: where the network ran in bfloat16, keep its latents in bfloat16 (the float32
    copy would hold the same values in twice the bytes: 600 MB for an 8000x6000 photo at stride
    8); their users upcast them exactly. Otherwise float32."""
    s = model.stride
    h, w = rgb.shape[:2]
    lh, lw = -(-h // s), -(-w // s)
    ctx = model.encoder_context
    tile = tile_latents(model, tile)
    out: torch.Tensor | None = None
    for y0, y1 in _tiles(lh, tile):
        for x0, x1 in _tiles(lw, tile):
            py0, py1 = max(0, y0 * s - ctx), min(lh * s, y1 * s + ctx)
            px0, px1 = max(0, x0 * s - ctx), min(lw * s, x1 * s + ctx)
            region = _edge_padded(rgb, py0, py1, px0, px1)
            with autocast(device):
                y = model.encode(_image_tensor(region, device))[0]
            if out is None:
                keep = y.dtype if compact and y.dtype == torch.bfloat16 else torch.float32
                out = torch.empty(model.latent_channels, lh, lw, dtype=keep)
            oy, ox = (y0 * s - py0) // s, (x0 * s - px0) // s
            out[:, y0:y1, x0:x1] = y[:, oy : oy + y1 - y0, ox : ox + x1 - x0].to(out.dtype).cpu()
    return out if out is not None else torch.empty(model.latent_channels, lh, lw)


@torch.inference_mode()
def synthesize(
    model: LatentCodec,
    latents: torch.Tensor | GainScaled,
    size: tuple[int, int],
    device: torch.device,
    tile: int | None = None,
) -> np.ndarray:
    """Dequantized latents (C, Lh, Lw) -> (H, W, 3) uint8 image cropped to size (H, W), tiled;
    ``GainScaled`` integers are dequantized a tile at a time."""
    s = model.stride
    _, lh, lw = latents.shape
    h, w = size
    ctx = model.decoder_context
    tile = tile_latents(model, tile)
    out = np.empty((lh * s, lw * s, 3), dtype=np.uint8)
    for y0, y1 in _tiles(lh, tile):
        for x0, x1 in _tiles(lw, tile):
            ly0, ly1 = max(0, y0 - ctx), min(lh, y1 + ctx)
            lx0, lx1 = max(0, x0 - ctx), min(lw, x1 + ctx)
            part = latents[:, ly0:ly1, lx0:lx1].unsqueeze(0).to(device)
            part = part.contiguous(memory_format=torch.channels_last)
            with autocast(device):
                decoded = model.decode(part)[0]
            img = decoded.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8)
            oy, ox = (y0 - ly0) * s, (x0 - lx0) * s
            crop = img[:, oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s]
            out[y0 * s : y1 * s, x0 * s : x1 * s] = crop.permute(1, 2, 0).cpu().numpy()
    return out[:h, :w]


def network_batch(requested: int | None, device: torch.device) -> int:
    """Images per pass of the networks: as asked, else ``GPU_BATCH`` on a GPU and one on the
    CPU, where a batch's activations leave the caches (Kodak at -q 75, one thread: batches of
    16 encode in 0.60 s an image, one at a time in 0.42 s)."""
    if requested is not None:
        return max(1, requested)
    return 1 if device.type == "cpu" else GPU_BATCH


@torch.inference_mode()
def analyse_stack(net: LatentCodec, rgbs: list[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """Latents of same-sized images that each fit one tile, in one encoder pass."""
    s = net.stride
    h, w = rgbs[0].shape[:2]
    pad = ((0, -(-h // s) * s - h), (0, -(-w // s) * s - w), (0, 0))
    batch = torch.cat([_image_tensor(np.pad(rgb, pad, mode="edge"), device) for rgb in rgbs])
    with autocast(device):
        y = net.encode(batch.contiguous(memory_format=torch.channels_last)).float().cpu()
    return list(y)


@torch.inference_mode()
def synthesize_stack(net: LatentCodec, latents: list[torch.Tensor], device: torch.device) -> np.ndarray:
    """Same-shaped dequantized latents in one decoder pass -> (N, H', W', 3) uint8, uncropped."""
    stack = torch.stack(latents)
    with autocast(device):
        decoded = net.decode(stack.to(device).contiguous(memory_format=torch.channels_last))
    return decoded.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
