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

    def __init__(
        self, channels: int, inverse: bool = False, gamma_init: float = 0.1, inplace: bool = False
    ) -> None:
        """``inplace``: at inference (no autograd) write the result over the input, as
        ``nn.ReLU(inplace=True)`` does; for a layer whose input nothing else reads, such as a
        convolution's output inside a Sequential."""
        super().__init__()
        self.inverse = inverse
        self.inplace = inplace
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
        if not torch.is_grad_enabled() and x.dim() == 4:
            return self._in_bands(x, gamma, beta)
        norm = torch.nn.functional.conv2d(x * x, gamma, beta).sqrt()
        return x * norm if self.inverse else x / norm

    def _in_bands(self, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        """Inference a band of rows at a time (channels-last input on the CPU, where a band is
        one block of memory and fits the cache), each band's square, norm and quotient written
        while it is in cache, over the input when ``inplace``: the same numbers as one pass over
        the whole tensor (bit for bit with this machine's oneDNN, 1 and 2 threads; tested). A
        whole pass streams four tensors the size of the input through memory and allocates two;
        on a Kodak image the stride-16 analysis and synthesis take 60 and 75 ms that way, 39 and
        50 ms in place in bands (2 threads, bfloat16)."""
        rows = max(1, BAND_ELEMENTS // max(1, x.shape[0] * x.shape[1] * x.shape[3]))
        if x.device.type != "cpu" or not x.is_contiguous(memory_format=torch.channels_last):
            # a GPU streams whole tensors fast and would launch four kernels a band; a row band
            # of NCHW is strided, and its sums may round otherwise
            rows = x.shape[2]
        out: Tensor | None = None
        for top in range(0, x.shape[2], rows):
            band = x[:, :, top : top + rows]
            norm = torch.nn.functional.conv2d(band * band, gamma, beta)
            if out is None:
                dtype = torch.promote_types(x.dtype, norm.dtype)
                out = x if self.inplace and dtype == x.dtype else torch.empty_like(x, dtype=dtype)
            target = out[:, :, top : top + rows]
            if norm.dtype != x.dtype:  # autocast gave the norm another precision
                target.copy_(band * norm.sqrt() if self.inverse else band / norm.sqrt())
                continue
            norm.sqrt_()
            if self.inverse:
                torch.mul(norm, band, out=target)
            else:
                torch.div(band, norm, out=target)
        return out if out is not None else x.clone()


BAND_ELEMENTS = 1 << 20  # values of one band of a GDN at inference (2 MB in bfloat16)


def activation(kind: str, channels: int, inverse: bool) -> nn.Module:
    """The nonlinearity named in a model config: 'gdn' (IGDN on the decoder side) or 'leakyrelu'."""
    if kind == "gdn":
        return GDN(channels, inverse=inverse, inplace=True)  # between convolutions: nothing rereads its input
    if kind == "leakyrelu":
        return nn.LeakyReLU(0.01, inplace=False)
    raise ValueError(f"unknown activation {kind!r} (choose gdn or leakyrelu)")
