"""The architectures themselves, each registered under the name that model files use."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aecompress.nn.entropy import FactorizedDensity
from aecompress.nn.layers import activation
from aecompress.nn.registry import LatentCodec, register


def _down(cin: int, cout: int, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 5, stride=stride, padding=2)


def _up(cin: int, cout: int, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=stride, padding=2, output_padding=stride - 1)


@register("factorized")
class FactorizedCodec(LatentCodec):
    """The default: four 5x5 convolutions with GDN, a mirrored decoder with inverse GDN, and a
    factorized density over the latents for rate-distortion training.

    ``downsamples`` of the four layers halve the resolution: 4 gives stride 16 (the default), 3
    gives stride 8, four times as many latent positions. With the channel count fixed at 100,
    that is how a model reaches high qualities: at stride 16 the transforms lose detail that no
    finer quantization brings back. The weights have the same shapes at every stride, so a model
    can be re-strided (``restrided``) and fine-tuned rather than trained from scratch.
    """

    encoder_context = 64
    decoder_context = 4

    def __init__(
        self, channels: int = 128, latent_channels: int = 100, act: str = "gdn", downsamples: int = 4
    ) -> None:
        if not 1 <= downsamples <= 4:
            raise ValueError(f"downsamples must be 1..4, not {downsamples}")
        super().__init__(channels=channels, latent_channels=latent_channels, act=act, downsamples=downsamples)
        n, m = channels, latent_channels
        self.latent_channels = m
        self.stride = 2**downsamples
        s = [2 if i < downsamples else 1 for i in range(4)]
        self.g_a = nn.Sequential(
            _down(3, n, s[0]), activation(act, n, False),
            _down(n, n, s[1]), activation(act, n, False),
            _down(n, n, s[2]), activation(act, n, False),
            _down(n, m, s[3]),
        )  # fmt: skip
        self.g_s = nn.Sequential(
            _up(m, n, s[3]), activation(act, n, True),
            _up(n, n, s[2]), activation(act, n, True),
            _up(n, n, s[1]), activation(act, n, True),
            _up(n, 3, s[0]),
        )  # fmt: skip
        self.density = FactorizedDensity(m)

    def restrided(self, downsamples: int) -> FactorizedCodec:
        """The same weights at another stride: a starting point for fine-tuning, not a codec yet.

        A decoder layer that goes from stride 2 to stride 1 sums four times as many inputs per
        output, so its weights are scaled by 1/4 (and by 4 the other way) to keep its output level.
        """
        config = {**self.config, "downsamples": downsamples}
        model = FactorizedCodec(**config)
        model.load_state_dict(self.state_dict())
        old = self.config.get("downsamples", 4)
        with torch.no_grad():
            for i in range(4):
                before, after = (i < old), (i < downsamples)
                if before != after:
                    layer = model.g_s[2 * (3 - i)]
                    layer.weight.mul_(0.25 if before else 4.0)
        return model

    def encode(self, x: Tensor) -> Tensor:
        return self.g_a(x)

    def decode(self, y: Tensor) -> Tensor:
        return self.g_s(y)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self.g_a(x)
        y_tilde = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        return self.g_s(y_tilde), self.density.bits(y_tilde)


@register("tutorial")
class TutorialAutoencoder(LatentCodec):
    """The original tutorial autoencoder, layer for layer: 32x32 RGB in, a 100-float code out.

    It has no rate term (trained on MSE alone); the codec applies it to an image tile by tile, one
    code per 32x32 tile, so its results can be compared with the default on the same files.
    """

    stride = 32
    input_size = 32
    rate_distortion = False
    weight_decay = 1e-5
    default_crop = 96
    tiles_per_pass = 256

    def __init__(self, latent_channels: int = 100, hidden: int = 1000) -> None:
        super().__init__(latent_channels=latent_channels, hidden=hidden)
        self.latent_channels = latent_channels
        flat = 32 * 32 * 128
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 16, 5, padding=2), nn.ReLU(), nn.BatchNorm2d(16),
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.BatchNorm2d(32),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.BatchNorm2d(64),
            nn.Conv2d(64, 128, 5, padding=2), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(flat, hidden), nn.ReLU(),
            nn.Linear(hidden, latent_channels),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Linear(latent_channels, hidden), nn.ReLU(),
            nn.Linear(hidden, flat), nn.ReLU(),
            nn.Unflatten(1, (128, 32, 32)),
            nn.ConvTranspose2d(128, 64, 5, padding=2), nn.ReLU(), nn.BatchNorm2d(64),
            nn.ConvTranspose2d(64, 32, 5, padding=2), nn.ReLU(), nn.BatchNorm2d(32),
            nn.ConvTranspose2d(32, 16, 5, padding=2), nn.ReLU(), nn.BatchNorm2d(16),
            nn.ConvTranspose2d(16, 3, 5, padding=2),
        )  # fmt: skip
        self.register_buffer("code_scale", torch.ones(latent_channels))

    def calibrate(self, batch: Tensor) -> None:
        """Scale each code dimension so that quantization step 1 is a quarter of its spread.

        The tutorial model was never trained for quantization, so its codes have arbitrary
        ranges; this makes -q mean the same thing for it as for rate-trained models.
        """
        with torch.no_grad():
            codes = self.encoder(batch)
            self.code_scale.copy_(codes.std(dim=0).clamp_min(1e-4) / 4)

    def encode(self, x: Tensor) -> Tensor:
        """(B, 3, 32h, 32w) -> (B, C, h, w): each 32x32 tile coded on its own."""
        b, _, h, w = x.shape
        th, tw = h // 32, w // 32
        tiles = x.reshape(b, 3, th, 32, tw, 32).permute(0, 2, 4, 1, 3, 5).reshape(-1, 3, 32, 32)
        codes = torch.cat([self.encoder(t) for t in tiles.split(self.tiles_per_pass)]) / self.code_scale
        return codes.reshape(b, th, tw, -1).permute(0, 3, 1, 2)

    def decode(self, y: Tensor) -> Tensor:
        b, c, th, tw = y.shape
        codes = y.permute(0, 2, 3, 1).reshape(-1, c) * self.code_scale
        tiles = torch.cat([self.decoder(t) for t in codes.split(self.tiles_per_pass)])
        return tiles.reshape(b, th, tw, 3, 32, 32).permute(0, 3, 1, 4, 2, 5).reshape(b, 3, th * 32, tw * 32)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.decoder(self.encoder(x)), x.new_zeros(())
