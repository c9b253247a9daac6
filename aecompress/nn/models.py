"""The architectures themselves, each registered under the name that model files use."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import torch
from torch import Tensor, nn

from aecompress.nn.base import LatentCodec, TrainOutput
from aecompress.nn.entropy import FactorizedDensity, gaussian_bits
from aecompress.nn.integer import ACT_BITS, WEIGHT_BITS, IntegerNet
from aecompress.nn.layers import activation
from aecompress.nn.registry import register


def _down(cin: int, cout: int, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 5, stride=stride, padding=2)


def _up(cin: int, cout: int, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=stride, padding=2, output_padding=stride - 1)


def _analysis(n: int, m: int, act: str, downsamples: int) -> nn.Sequential:
    """g_a: four 5x5 convolutions, the first ``downsamples`` of them with stride 2."""
    s = [2 if i < downsamples else 1 for i in range(4)]
    return nn.Sequential(
        _down(3, n, s[0]), activation(act, n, False),
        _down(n, n, s[1]), activation(act, n, False),
        _down(n, n, s[2]), activation(act, n, False),
        _down(n, m, s[3]),
    )  # fmt: skip


def _synthesis(n: int, m: int, act: str, downsamples: int) -> nn.Sequential:
    """g_s: the mirror of ``_analysis`` with transposed convolutions and inverse GDN."""
    s = [2 if i < downsamples else 1 for i in range(4)]
    return nn.Sequential(
        _up(m, n, s[3]), activation(act, n, True),
        _up(n, n, s[2]), activation(act, n, True),
        _up(n, n, s[1]), activation(act, n, True),
        _up(n, 3, s[0]),
    )  # fmt: skip


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
        self.g_a = _analysis(n, m, act, downsamples)
        self.g_s = _synthesis(n, m, act, downsamples)
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
                    assert isinstance(layer, nn.ConvTranspose2d)
                    layer.weight.mul_(0.25 if before else 4.0)
        return model

    def encode(self, x: Tensor) -> Tensor:
        return self.g_a(x)

    def decode(self, y: Tensor) -> Tensor:
        return self.g_s(y)

    def forward(self, x: Tensor) -> TrainOutput:
        y = self.g_a(x)
        y_tilde = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        return TrainOutput(self.g_s(y_tilde), self.density.bits(y_tilde))


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

    code_scale: Tensor

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

    def forward(self, x: Tensor) -> TrainOutput:
        return TrainOutput(self.decoder(self.encoder(x)), x.new_zeros(()))


# Rate points a variable-rate hyperprior model is trained across (one run for the whole -q range).
HYPERPRIOR_LAMBDAS = (0.0018, 0.0048, 0.013, 0.035, 0.093, 0.25)
HYPERPRIOR_RATE_RANGE = (-1.5, 5.5)  # the rate positions of -q 0 and -q 100
LOG2_SCALE_MIN, LOG2_SCALE_MAX = -3.25, 7.0
SCALE_CLASSES = 20  # half an octave each from 2^LOG2_SCALE_MIN; the last takes everything above
HYPER_TILE = 32  # hyper-latent rows and columns of one tile of the integer h_s (a Kodak image: one)


@register("hyperprior")
class HyperpriorCodec(LatentCodec):
    """A variable-rate scale hyperprior (Ballé et al. 2018) around the factorized transforms.

    Side information z = h_a(|y|) is quantized and coded with a factorized density; h_s(z) predicts
    the scale of every latent, so the latents are coded by scale class instead of by channel alone.
    One network serves every rate: per-channel gain vectors (Cui et al. 2021), one pair per trained
    lambda, scale the latents before rounding and back after; a quality between two trained points
    interpolates their gains geometrically. ``hyper_scales`` gives log2 of the scales in floats for
    training; the parser never uses floats (the coding layer runs an integer copy of h_s).
    ``synthesis_channels`` (default: ``hyper_channels``) is h_s's width alone: the parser's cost
    grows with its square, so a narrower h_s parses faster (fitted at 32 channels to the stride-8
    member, its files came out smaller, not larger: docs/training.md, stage 15).
    """

    encoder_context = 64
    decoder_context = 4
    coding = "scale-classes"
    hyper_stride = 4  # latent positions per hyper-latent position
    scale_class_count = SCALE_CLASSES

    def __init__(
        self,
        channels: int = 128,
        latent_channels: int = 100,
        act: str = "gdn",
        downsamples: int = 3,
        hyper_channels: int = 64,
        hyper_latent_channels: int = 64,
        lambdas: tuple[float, ...] | list[float] = HYPERPRIOR_LAMBDAS,
        rate_range: tuple[float, float] | list[float] = HYPERPRIOR_RATE_RANGE,
        synthesis_channels: int | None = None,
    ) -> None:
        if not 1 <= downsamples <= 4:
            raise ValueError(f"downsamples must be 1..4, not {downsamples}")
        if synthesis_channels is not None and synthesis_channels < 1:
            raise ValueError(f"synthesis_channels must be positive, not {synthesis_channels}")
        lambdas = [float(v) for v in lambdas]
        if len(lambdas) < 2 or any(b <= a for a, b in pairwise(lambdas)):
            raise ValueError("lambdas must be two or more increasing values")
        rate_range = [float(v) for v in rate_range]
        if len(rate_range) != 2 or rate_range[1] <= rate_range[0]:
            raise ValueError("rate_range must be two increasing rate positions")
        super().__init__(
            channels=channels, latent_channels=latent_channels, act=act, downsamples=downsamples,
            hyper_channels=hyper_channels, hyper_latent_channels=hyper_latent_channels, lambdas=lambdas,
            rate_range=rate_range,
        )  # fmt: skip
        if synthesis_channels is not None:  # only where set, so older files' configs stay as they were
            self.config["synthesis_channels"] = synthesis_channels
        self.synthesis_channels = hs = synthesis_channels or hyper_channels
        self.rate_range = (rate_range[0], rate_range[1])
        self.training_positions: tuple[float, float] | None = None  # a trainer's setting, not config
        self.hyper_latent_channels = hyper_latent_channels
        n, m, h, zc = channels, latent_channels, hyper_channels, hyper_latent_channels
        self.latent_channels = m
        self.stride = 2**downsamples
        self.lambdas = lambdas
        self.g_a = _analysis(n, m, act, downsamples)
        self.g_s = _synthesis(n, m, act, downsamples)
        self.log_gain = nn.Parameter(torch.zeros(len(lambdas), m))
        self.log_igain = nn.Parameter(torch.zeros(len(lambdas), m))
        self.h_a = nn.Sequential(
            nn.Conv2d(m, h, 3, padding=1), nn.ReLU(),
            nn.Conv2d(h, h, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(h, zc, 5, stride=2, padding=2),
        )  # fmt: skip
        self.h_s = nn.Sequential(
            _up(zc, hs), nn.ReLU(),
            _up(hs, hs), nn.ReLU(),
            nn.Conv2d(hs, m, 1),
        )  # fmt: skip
        self.z_density = FactorizedDensity(zc)

    @property
    def levels(self) -> int:
        return len(self.lambdas)

    def gains(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Gain, inverse gain (B, M) and lambda (B,) at rate positions t in [0, levels - 1]."""
        lo = t.detach().floor().clamp(0, self.levels - 2).long()
        frac = (t - lo).unsqueeze(1)
        log_l = torch.tensor(self.lambdas, device=t.device).log()

        def mix(table: Tensor) -> Tensor:
            return table[lo] * (1 - frac) + table[lo + 1] * frac

        lam = mix(log_l.unsqueeze(1)).squeeze(1).exp()
        return mix(self.log_gain).exp(), mix(self.log_igain).exp(), lam

    def hyper_scales(self, z: Tensor, shape: tuple[int, int]) -> Tensor:
        """log2 of the latents' scales predicted from (noisy or rounded) z, cropped to ``shape``."""
        return self.h_s(z)[:, :, : shape[0], : shape[1]].clamp(LOG2_SCALE_MIN, LOG2_SCALE_MAX)

    def hyper_analysis(self, y: Tensor) -> Tensor:
        """The float hyper-latents of gain-scaled latents y (B, C, H, W): h_a sees their sizes."""
        return self.h_a(y.abs())

    def rate_position(self, quality: float) -> float:
        """Where -q 0..100 falls among the trained lambdas (0 .. levels - 1): linearly over
        ``rate_range``, which reaches past the trained ends. Below the first lambda the gains
        extrapolate smoothly (measured: 24.6 dB at position -1.5 on BSDS500 validation images);
        above the last the quality levels off near +0.5."""
        lo, hi = self.rate_range
        return lo + quality / 100.0 * (hi - lo)

    def scale_classes(self, z: np.ndarray, shape: tuple[int, int], exact: bool = True) -> np.ndarray:
        """The scale class (0 .. SCALE_CLASSES - 1) of every latent, from the integer hyper-latents,
        computed by the exact integer copy of h_s: identical on every machine. ``exact=False``
        runs h_s in floats, a few times faster, for estimates only: a class may differ by one
        where a scale lies on a boundary, so never for coding."""
        if not exact:
            with torch.inference_mode():
                zf = torch.from_numpy(z.astype(np.float32))[None].to(self.log_gain.device)
                log2 = self.hyper_scales(zf, shape)[0].cpu().numpy()
            return np.clip(np.floor((log2 - LOG2_SCALE_MIN) * 2), 0, SCALE_CLASSES - 1).astype(np.uint8)
        start = round(LOG2_SCALE_MIN * 2**WEIGHT_BITS * 2**ACT_BITS)
        width = 2 ** (WEIGHT_BITS + ACT_BITS - 1)  # half an octave at the accumulator's scale
        classes = np.zeros((self.latent_channels, *shape), dtype=np.uint8)
        for rows, cols, acc in IntegerNet(self.h_s).tiles(z, HYPER_TILE):
            part = classes[:, rows, cols]  # the tile's part inside ``shape`` (h_s may overhang it)
            acc = acc[:, : part.shape[1], : part.shape[2]]  # a fresh tile's: worked on in place
            # float64 integers: the shift by a power of two and the floor are exact
            acc -= start
            acc *= 1.0 / width
            np.floor(acc, out=acc)
            part[...] = np.clip(acc, 0, SCALE_CLASSES - 1, out=acc)
        return classes

    def adopt(self, other: LatentCodec, lmbda: float | None) -> int:
        """Warm start from a factorized model: its transforms, and gains set so each trained
        lambda starts from the step a factorized model would use there (gain ~ sqrt(lambda))."""
        copied = super().adopt(other, lmbda)
        if lmbda:
            with torch.no_grad():
                start = 0.5 * torch.tensor(self.lambdas).div(lmbda).log()
                self.log_gain.copy_(start.unsqueeze(1).expand_as(self.log_gain))
                self.log_igain.copy_(-self.log_gain)
        return copied

    def encode(self, x: Tensor) -> Tensor:
        return self.g_a(x)

    def decode(self, y: Tensor) -> Tensor:
        return self.g_s(y)

    def sample_positions(self, batch: int, device: torch.device) -> Tensor:
        """Each sample's rate position in training: uniform over the trained lambdas, or over
        ``training_positions`` where a trainer narrowed it (a member a family uses only at its top
        spends its steps there)."""
        lo, hi = self.training_positions or (0.0, self.levels - 1.0)
        return lo + torch.rand(batch, device=device) * (hi - lo)

    def forward(self, x: Tensor) -> TrainOutput:
        """A random rate position per sample; noise for the rates, straight-through rounding for
        the reconstruction (what the decoder will see)."""
        t = self.sample_positions(x.shape[0], x.device)
        gain, igain, lam = self.gains(t)
        y = self.g_a(x).float() * gain[:, :, None, None]
        z = self.h_a(y.abs()).float()
        z_tilde = z + torch.empty_like(z).uniform_(-0.5, 0.5)
        log_scales = self.hyper_scales(z_tilde, (y.shape[2], y.shape[3])).float()
        y_tilde = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        with torch.autocast(x.device.type, enabled=False):
            bits = gaussian_bits(y_tilde, torch.exp2(log_scales)).sum() + self.z_density.bits(z_tilde)
        y_hat = y + (torch.round(y) - y).detach()
        return TrainOutput(self.g_s(y_hat * igain[:, :, None, None]), bits, lam)
