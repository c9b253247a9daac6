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
    """Mean SSIM and contrast-structure term per channel; the five local moments in one pass."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    c = x.shape[1]
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    k = win.numel()
    blurred = F.conv2d(stack, win.view(1, 1, 1, k).repeat(5 * c, 1, 1, 1), groups=5 * c)
    blurred = F.conv2d(blurred, win.view(1, 1, k, 1).repeat(5 * c, 1, 1, 1), groups=5 * c)
    mx, my, exx, eyy, exy = blurred.reshape(5, c, *blurred.shape[-2:])
    sxx, syy, sxy = exx - mx * mx, eyy - my * my, exy - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    ssim = ((2 * mx * my + c1) / (mx * mx + my * my + c1)) * cs
    return ssim.mean(dim=(1, 2))[None], cs.mean(dim=(1, 2))[None]


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Multi-scale SSIM (Wang et al. 2003) of two uint8 (H, W, C) images, channels averaged.

    Images too small for five scales use as many as fit (weights renormalized).
    """
    x = torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1)[None]
    y = torch.from_numpy(np.array(b, dtype=np.float32)).permute(2, 0, 1)[None]
    win = _gaussian()
    scales = 1
    while scales < 5 and min(x.shape[-2:]) // (2**scales) >= 11:
        scales += 1
    if min(x.shape[-2:]) < 11:
        return 1.0 if np.array_equal(a, b) else float(max(0.0, 1 - np.mean((x - y).numpy() ** 2) / 255**2))
    weights = torch.tensor(_MS_WEIGHTS[:scales], dtype=torch.float32)
    weights = weights / weights.sum()
    values = []
    for i in range(scales):
        ssim, cs = _ssim_parts(x, y, win)
        values.append(torch.relu(ssim if i == scales - 1 else cs))
        if i < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stacked = torch.stack(values, dim=0)
    result = torch.prod(stacked ** weights.view(-1, 1, 1), dim=0)
    return float(result.mean())
