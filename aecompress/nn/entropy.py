"""A learned per-channel factorized density (Ballé et al. 2018, appendix 6.1) for the rate term.

Training needs a differentiable estimate of the bits that the quantized latents will cost; this
module models each latent channel with its own monotonic cumulative function, so the rate is
-log2(P(y + 1/2) - P(y - 1/2)). The file itself is packed by zstd, not by this density.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FactorizedDensity(nn.Module):
    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0) -> None:
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1.0 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1.0 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, dims[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def _logits_cdf(self, x: Tensor) -> Tensor:
        """x: (C, 1, N) -> logits of the cumulative distribution, same shape."""
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases, strict=True)):
            x = torch.matmul(F.softplus(matrix), x) + bias
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def likelihood(self, y: Tensor) -> Tensor:
        """Probability mass of the unit interval around each value of y (B, C, H, W)."""
        b, c, h, w = y.shape
        v = y.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self._logits_cdf(v - 0.5)
        upper = self._logits_cdf(v + 0.5)
        sign = -torch.sign(lower + upper).detach()
        p = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        p = p.clamp_min(1e-9)
        return p.reshape(c, b, h, w).permute(1, 0, 2, 3)

    def bits(self, y: Tensor) -> Tensor:
        """Total estimated bits of y under the density (a scalar)."""
        return -torch.log2(self.likelihood(y)).sum()


def gaussian_bits(values: Tensor, scales: Tensor) -> Tensor:
    """Bits of each value under a zero-mean Gaussian of the given scale, discretized to the
    unit interval around the value (the rate term of a hyperprior model)."""
    upper = _normal_cdf((0.5 - values.abs()) / scales)
    lower = _normal_cdf((-0.5 - values.abs()) / scales)
    return -torch.log2((upper - lower).clamp_min(1e-9))


def _normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * torch.erfc(-x * (0.5**0.5))
