"""Encoder-side refinement: adjust one image's latents so that the decoder reproduces it better.

The encoder network predicts latents in a single pass. It was trained to do well on average, so
for a given image, decoder and quantization step there are better latents nearby. A few steps of
gradient descent on the latents themselves, through the decoder and a straight-through rounding
onto the file's quantization grid, find them. Latents that the file would code as zero stay
zero: zeros are what make the file small, and letting them move costs more bytes than the quality
it buys (measured: with zeros free, +4 to +20% bytes on some images; with them fixed, sizes stay
within a few percent either way). Those are the coder's zeros, its dead zone's included
(``LatentCoder.coded_zeros``): refined as if they were coded, the others would be tuned to a
decoder that never sees them. They come back unchanged (zeroed, the hyper-analysis would see other
latents and the coder pick other classes: measured, that costs more than it saves). The decoder
and the file format are unchanged, so any decoder restores the result. Each iteration costs a
decoder pass forward and backward: it is opt-in, ``encode --effort N``.

Large images are refined tile by tile over the latent grid, each tile inside a frame of context
latents that the decoder sees but that stay fixed, so memory is bounded by the tile.
"""

from __future__ import annotations

import numpy as np
import torch

from aecompress.nn import LatentCodec

REFINE_TILE = 32  # latents per side of a refined tile: 512 pixels at stride 16
LEARNING_RATE = 0.02  # Adam's step, in quantization steps: each latent moves about this far per pass


# a quantization grid per channel, (scale, recon) each (C, 1, 1): integer = round(y * scale),
# and the synthesis gets integer * recon
Grid = tuple[torch.Tensor, torch.Tensor]


def refine(
    net: LatentCodec,
    latents: torch.Tensor,
    rgb: np.ndarray,
    grid: Grid,
    iterations: int,
    device: torch.device,
    tile: int = REFINE_TILE,
    zeros: torch.Tensor | None = None,
) -> torch.Tensor:
    """Latents (C, Lh, Lw) moved to lower the decoded image's error on this quantization grid
    (the coder's ``grid``: a step for a factorized model, the gains of a rate for a hyperprior);
    never worse. ``zeros`` (C, Lh, Lw, bool): the latents the file codes as 0 (the coder's
    ``coded_zeros``), which come back as they were and count as 0 while the others are refined;
    by default the zeros are those that round to 0 on the grid.

    For each tile the latents with the lowest measured error over the iterations are kept (the
    first measurement is the encoder's own), so refinement cannot lose quality on the pixels it
    is judged on. ``rgb`` is the (H, W, 3) uint8 image the latents were computed from.
    """
    if iterations <= 0:
        return latents
    s, ctx = net.stride, net.decoder_context
    _, lh, lw = latents.shape
    h, w = rgb.shape[:2]
    padded = np.pad(rgb, ((0, lh * s - h), (0, lw * s - w), (0, 0)), mode="edge")
    with torch.inference_mode(False), torch.enable_grad():
        scale, recon = (g.to(device=device, dtype=torch.float32).clone() for g in grid)
        out = latents.to(torch.float32, copy=True)  # bfloat16 latents upcast exactly
        for y0 in range(0, lh, tile):
            for x0 in range(0, lw, tile):
                y1, x1 = min(lh, y0 + tile), min(lw, x0 + tile)
                ly0, ly1 = max(0, y0 - ctx), min(lh, y1 + ctx)
                lx0, lx1 = max(0, x0 - ctx), min(lw, x1 + ctx)
                inner = (slice(y0 - ly0, y1 - ly0), slice(x0 - lx0, x1 - lx0))
                target = torch.from_numpy(np.ascontiguousarray(padded[y0 * s : y1 * s, x0 * s : x1 * s]))
                target = target.to(device).permute(2, 0, 1).float().div_(255.0)
                window = out[:, ly0:ly1, lx0:lx1].to(device)
                fixed = None if zeros is None else zeros[:, ly0:ly1, lx0:lx1].to(device)
                best = _refine_window(net, window, inner, target, (scale, recon), iterations, fixed)
                out[:, y0:y1, x0:x1] = best.cpu()
    return out


def _refine_window(
    net: LatentCodec,
    window: torch.Tensor,
    inner: tuple[slice, slice],
    target: torch.Tensor,
    grid: Grid,
    iterations: int,
    zeros: torch.Tensor | None = None,
) -> torch.Tensor:
    """The refined inner part of one window of latents (the frame and the zeros stay fixed).

    The variables are the latents in quantization steps (y * scale), so one learning rate serves
    every channel whatever its gain."""
    scale, recon = grid
    steps = window * scale
    if zeros is not None:  # the dead zone's latents: 0 in the file, so 0 to the decoder here
        steps = steps.masked_fill(zeros & (torch.round(steps) != 0), 0.0)
    free = torch.zeros_like(window, dtype=torch.bool)
    free[:, inner[0], inner[1]] = True
    free &= torch.round(steps) != 0
    var = steps.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([var], lr=LEARNING_RATE)
    py = slice(inner[0].start * net.stride, inner[0].stop * net.stride)
    px = slice(inner[1].start * net.stride, inner[1].stop * net.stride)
    best_error, best = float("inf"), steps
    for i in range(iterations + 1):
        rounded = var * recon + ((torch.round(var) - var) * recon).detach()
        decoded = net.decode(rounded.unsqueeze(0).contiguous(memory_format=torch.channels_last))[0]
        error = torch.mean((decoded[:, py, px].clamp(0, 1) - target) ** 2)
        value = float(error.detach())
        if value < best_error:
            best_error, best = value, var.detach().clone()
        if i == iterations:
            break
        optimizer.zero_grad(set_to_none=True)
        error.backward()
        assert var.grad is not None
        var.grad.mul_(free)
        optimizer.step()
    kept = torch.where(free, best / scale, window)  # fixed latents come back bit for bit
    return kept[:, inner[0], inner[1]]
