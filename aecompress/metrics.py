"""Image quality measures used by benchmarks, training validation and tests."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB between two uint8 images of the same shape (all channels pooled)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(peak**2 / mse)) if mse > 0 else float("inf")


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_parts(x: torch.Tensor, y: torch.Tensor, win: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and contrast-structure term per image and channel (N, C); the five local
    moments in one pass. Pixels are on the 0..255 scale."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    n, c = x.shape[:2]
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    k = win.numel()
    blurred = F.conv2d(stack, win.view(1, 1, 1, k).repeat(5 * c, 1, 1, 1), groups=5 * c)
    blurred = F.conv2d(blurred, win.view(1, 1, k, 1).repeat(5 * c, 1, 1, 1), groups=5 * c)
    mx, my, exx, eyy, exy = blurred.reshape(n, 5, c, *blurred.shape[-2:]).unbind(1)
    sxx, syy, sxy = exx - mx * mx, eyy - my * my, exy - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    ssim = ((2 * mx * my + c1) / (mx * mx + my * my + c1)) * cs
    return ssim.mean(dim=(-2, -1)), cs.mean(dim=(-2, -1))


def ms_ssim_batch(x: torch.Tensor, y: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """Differentiable MS-SSIM of each image in two (N, C, H, W) batches on the 0..255 scale,
    channels averaged: the measure ``ms_ssim`` reports, in a form training can descend.

    Each scale's term is clamped at ``floor`` before its power: 0 for measuring (a negative
    structure term counts as none), a small positive value for training, where the power's
    gradient grows without bound as a term nears 0. Images too small for five scales use as
    many as fit.
    """
    win = _gaussian().to(x.device)
    scales = 1
    while scales < 5 and min(x.shape[-2:]) // (2**scales) >= 11:
        scales += 1
    weights = torch.tensor(_MS_WEIGHTS[:scales], dtype=x.dtype, device=x.device)
    weights = weights / weights.sum()
    result = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
    for i in range(scales):
        ssim, cs = _ssim_parts(x, y, win)
        result = result * (ssim if i == scales - 1 else cs).clamp(min=floor) ** weights[i]
        if i < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return result.mean(dim=1)


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Multi-scale SSIM (Wang et al. 2003) of two uint8 (H, W, C) images, channels averaged.

    Images too small for five scales use as many as fit (weights renormalized).
    """
    x = torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1)[None]
    y = torch.from_numpy(np.array(b, dtype=np.float32)).permute(2, 0, 1)[None]
    if min(x.shape[-2:]) < 11:
        return 1.0 if np.array_equal(a, b) else float(max(0.0, 1 - np.mean((x - y).numpy() ** 2) / 255**2))
    return float(ms_ssim_batch(x, y)[0])
