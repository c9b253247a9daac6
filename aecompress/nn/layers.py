"""Generalized divisive normalization (Ballé et al. 2016), the nonlinearity of the default codec."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class GDN(nn.Module):
    """y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2); ``inverse=True`` multiplies instead (IGDN).

    beta and gamma are kept non-negative by storing their square roots; a small off-diagonal start
    value keeps every gamma entry trainable.
    """

    def __init__(self, channels: int, inverse: bool = False, gamma_init: float = 0.1) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta_root = nn.Parameter(torch.ones(channels))
        # the roots of gamma_init * I + 1e-4, filled in without pointwise ops: under the meta
        # device (how model files are shape-checked) torch.eye or sqrt import torch._dynamo,
        # which cost a one-file call 1.7 s
        gamma_root = torch.full((channels, channels), 1e-2)
        gamma_root.diagonal().fill_(math.sqrt(gamma_init + 1e-4))
        self.gamma_root = nn.Parameter(gamma_root)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        beta = self.beta_root.square() + 1e-6
        gamma = self.gamma_root.square().view(c, c, 1, 1)
        norm = torch.nn.functional.conv2d(x * x, gamma, beta)
        if not torch.is_grad_enabled() and norm.dtype == x.dtype:
            # inference: in place, the same arithmetic with fewer buffers
            norm.sqrt_()
            return norm.mul_(x) if self.inverse else torch.div(x, norm, out=norm)
        norm = norm.sqrt()
        return x * norm if self.inverse else x / norm


def activation(kind: str, channels: int, inverse: bool) -> nn.Module:
    """The nonlinearity named in a model config: 'gdn' (IGDN on the decoder side) or 'leakyrelu'."""
    if kind == "gdn":
        return GDN(channels, inverse=inverse)
    if kind == "leakyrelu":
        return nn.LeakyReLU(0.01, inplace=False)
    raise ValueError(f"unknown activation {kind!r} (choose gdn or leakyrelu)")
