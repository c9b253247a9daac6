"""The architectures themselves, each registered under the name that model files use."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aecompress.nn.entropy import FactorizedDensity
from aecompress.nn.layers import activation
from aecompress.nn.registry import LatentCodec, register


def _down(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 5, stride=2, padding=2)


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)


@register("factorized")
class FactorizedCodec(LatentCodec):
    """The default: four stride-2 5x5 convolutions with GDN (stride 16), a mirrored decoder with
    inverse GDN, and a factorized density over the latents for rate-distortion training."""

    stride = 16
    encoder_context = 64
    decoder_context = 4

    def __init__(self, channels: int = 128, latent_channels: int = 100, act: str = "gdn") -> None:
        super().__init__(channels=channels, latent_channels=latent_channels, act=act)
        n, m = channels, latent_channels
        self.latent_channels = m
        self.g_a = nn.Sequential(
            _down(3, n), activation(act, n, False),
            _down(n, n), activation(act, n, False),
            _down(n, n), activation(act, n, False),
            _down(n, m),
        )  # fmt: skip
        self.g_s = nn.Sequential(
            _up(m, n), activation(act, n, True),
            _up(n, n), activation(act, n, True),
            _up(n, n), activation(act, n, True),
            _up(n, 3),
        )  # fmt: skip
        self.density = FactorizedDensity(m)

    def encode(self, x: Tensor) -> Tensor:
        return self.g_a(x)

    def decode(self, y: Tensor) -> Tensor:
        return self.g_s(y)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self.g_a(x)
        y_tilde = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        return self.g_s(y_tilde), self.density.bits(y_tilde)
