"""A mean-and-scale hyperprior with channel-slice context (after Minnen & Singh 2020).

The scale hyperprior codes every latent with a zero-mean Gaussian whose scale h_s predicts from
the side information z. This architecture adds what the field found pays most on top of it:

- **means**: the hyper synthesis predicts a mean as well as a scale for every latent, and the
  latents are quantized around their means (the residual round(y - mu) is what gets coded);
- **context from what is decoded**: the 100 channels are coded in slices; each slice after the
  first refines its means and scales from the slices before it (their reconstructed values, in
  a 3x3 neighbourhood), so the decoder knows everything the encoder used;
- the analysis also sees the sign of the latents (h_a takes y next to |y|), which the means need.

Every network between the hyper-latents and a latent's mean and scale is a plain stack of
convolutions and ReLUs, so the coder can run an exact integer copy of it (``nn.integer``): the
parse of a file then depends on integers alone, on every machine. Training runs the float
networks; the warm start from a ``hyperprior`` model begins exactly where that model was (the new
outputs start at zero).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from aecompress.nn.base import LatentCodec, TrainOutput
from aecompress.nn.entropy import gaussian_bits
from aecompress.nn.integer import ACT_BITS, ACT_LIMIT, WEIGHT_BITS, IntegerNet
from aecompress.nn.models import LOG2_SCALE_MAX, LOG2_SCALE_MIN, HyperpriorCodec, _up
from aecompress.nn.registry import register

CONTEXT_LAMBDAS = (0.0018, 0.0048, 0.013, 0.035, 0.093, 0.25, 0.6)
CONTEXT_RATE_RANGE = (-1.5, 6.5)
ACC_BITS = WEIGHT_BITS + ACT_BITS  # fractional bits of an integer network's output accumulator
CONTEXT_INPUT_LIMIT = 1 << 24  # |fixed-point input| of a slice network (int16 latents at ACT_BITS)


def _slice_net(cin: int, width: int, cout: int) -> nn.Sequential:
    """One slice's context network: a 1x1 mix, a 3x3 look at the neighbourhood, a 1x1 out. The
    last layer starts at zero, so a new slice network changes nothing until it has learnt."""
    net = nn.Sequential(
        nn.Conv2d(cin, width, 1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, cout, 1),
    )  # fmt: skip
    last = net[-1]
    assert isinstance(last, nn.Conv2d) and last.bias is not None
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return net


@register("context")
class ContextCodec(HyperpriorCodec):
    """Mean and scale per latent, from the hyper-latents and the slices already decoded.

    ``slices`` equal groups of channels are coded in order; slice k's context network takes the
    hyper synthesis's means and log2-scales of slice k and the reconstructed latents of slices
    0..k-1 and returns corrections to both. Slice 0 uses the hyper synthesis alone.
    """

    coding = "slice-context"

    def __init__(
        self,
        channels: int = 128,
        latent_channels: int = 100,
        act: str = "gdn",
        downsamples: int = 3,
        hyper_channels: int = 64,
        hyper_latent_channels: int = 64,
        lambdas: tuple[float, ...] | list[float] = CONTEXT_LAMBDAS,
        rate_range: tuple[float, float] | list[float] = CONTEXT_RATE_RANGE,
        slices: int = 5,
        context_channels: int = 48,
        synthesis_channels: int | None = None,
    ) -> None:
        if slices < 1 or latent_channels % slices:
            raise ValueError(f"slices must divide the {latent_channels} latent channels, not {slices}")
        super().__init__(
            channels=channels, latent_channels=latent_channels, act=act, downsamples=downsamples,
            hyper_channels=hyper_channels, hyper_latent_channels=hyper_latent_channels, lambdas=lambdas,
            rate_range=rate_range, synthesis_channels=synthesis_channels,
        )  # fmt: skip
        self.config.update(slices=slices, context_channels=context_channels)
        m, h, zc, hs = latent_channels, hyper_channels, hyper_latent_channels, self.synthesis_channels
        self.slices = slices
        self.slice_width = m // slices
        # h_a sees y and |y|; h_s gives log2-scales (first m outputs) and means (last m)
        self.h_a[0] = nn.Conv2d(2 * m, h, 3, padding=1)
        self.h_s = nn.Sequential(_up(zc, hs), nn.ReLU(), _up(hs, hs), nn.ReLU(), nn.Conv2d(hs, 2 * m, 1))
        w = self.slice_width
        self.context = nn.ModuleList(
            [_slice_net(2 * w + k * w, context_channels, 2 * w) for k in range(1, slices)]
        )

    def adopt(self, other: LatentCodec, lmbda: float | None) -> int:
        """Warm start from a ``hyperprior`` model: its transforms, gains (the rows past its last
        lambda extrapolated), h_a on |y| and h_s's scales as they were; means and contexts at 0."""
        copied = LatentCodec.adopt(self, other, lmbda)
        theirs = other.state_dict()
        m = self.latent_channels
        first, last = self.h_a[0], self.h_s[4]
        assert isinstance(first, nn.Conv2d) and isinstance(last, nn.Conv2d)
        assert first.bias is not None and last.bias is not None
        with torch.no_grad():
            if "h_a.0.weight" in theirs and first.weight[:, :m].shape == theirs["h_a.0.weight"].shape:
                first.weight.zero_()
                first.weight[:, :m].copy_(theirs["h_a.0.weight"])
                first.bias.copy_(theirs["h_a.0.bias"])
                copied += 1
            if "h_s.4.weight" in theirs and last.weight[:m].shape == theirs["h_s.4.weight"].shape:
                last.weight.zero_()
                last.bias.zero_()
                last.weight[:m].copy_(theirs["h_s.4.weight"])
                last.bias[:m].copy_(theirs["h_s.4.bias"])
                copied += 1
            for name in ("log_gain", "log_igain"):
                table = theirs.get(name)
                mine = getattr(self, name)
                if table is None or table.shape[1] != m or table.shape[0] >= mine.shape[0]:
                    continue
                n = table.shape[0]
                mine[:n].copy_(table)
                lam = torch.tensor(self.lambdas).log()
                for i in range(n, mine.shape[0]):  # along the log-gain per log-lambda of the last two
                    slope = (mine[n - 1] - mine[n - 2]) / (lam[n - 1] - lam[n - 2])
                    mine[i].copy_(mine[n - 1] + slope * (lam[i] - lam[n - 1]))
                copied += 1
        return copied

    def hyper_analysis(self, y: Tensor) -> Tensor:
        """The float hyper-latents of gain-scaled latents y: h_a sees their signs too (the means
        need them)."""
        return self.h_a(torch.cat([y.abs(), y], dim=1))

    def integer_hyper(self, z: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The exact integer h_s: log2-scales and means of every latent at the accumulator's scale
        (2^ACC_BITS), cropped to ``shape``. What the parse uses; identical on every machine."""
        return self.integer_hyper_outputs(self.integer_hyper_features(z, range(shape[0]), range(shape[1])))

    def integer_hyper_features(self, z: np.ndarray, rows: range, cols: range) -> np.ndarray:
        """The integer h_s's last hidden activations (below ACT_LIMIT, at ACT_BITS) for the
        latents at ``rows`` and ``cols``, from the hyper-latents that reach them alone: what the
        last (1x1) layer turns into each latent's log2-scales and means. Large images keep these
        (hyper_channels int32 a position) rather than the outputs (two int64 a latent)."""
        body = self.h_s[:-1]
        assert isinstance(body, nn.Sequential)
        return IntegerNet(body).region(z, rows, cols)

    def integer_hyper_outputs(
        self, features: np.ndarray, k: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """log2-scales and means at the accumulator's scale from ``integer_hyper_features``: of
        every latent, or only of slice ``k``'s (its share of the work)."""
        head = IntegerNet(nn.Sequential(self.h_s[-1]), in_bits=ACT_BITS, input_limit=ACT_LIMIT)
        m, w = self.latent_channels, self.slice_width
        if k is None:
            acc = head(features)
            return acc[:m], acc[m:]
        acc = head.selecting([*range(k * w, (k + 1) * w), *range(m + k * w, m + (k + 1) * w)])(features)
        return acc[:w], acc[w:]

    def float_hyper_region(self, z: np.ndarray, rows: range, cols: range) -> tuple[Tensor, Tensor]:
        """``hyper_params`` (1, C, H, W) for the latents at ``rows`` and ``cols`` from the
        hyper-latents that reach them: the float networks, for estimates only."""
        window = IntegerNet(self.h_s).window(rows, cols, (z.shape[1], z.shape[2]))
        assert window is not None  # h_s is transposed convolutions and a 1x1: it runs in pieces
        in_rows, in_cols, top, left = window
        part = torch.from_numpy(z[:, in_rows, in_cols].astype(np.float32))[None].to(self.log_gain.device)
        log2, mean = self.hyper_params(part, (top + len(rows), left + len(cols)))
        return log2[:, :, top:, left:], mean[:, :, top:, left:]

    @property
    def context_reach(self) -> int:
        """Latent rows (and columns) on each side of a latent that its slice context reads."""
        if not len(self.context):
            return 0
        first = self.context[0]
        assert isinstance(first, nn.Sequential)
        return IntegerNet(first).halo()

    def integer_slice(
        self, k: int, log2: np.ndarray, mean: np.ndarray, decoded: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Slice k's log2-scales and means at the accumulator's scale, exactly: the integer copy
        of ``slice_params``, from the hyper synthesis's for the slice (``log2``, ``mean``) and the
        reconstructed slices 0..k-1 in fixed point (ACT_BITS)."""
        w = self.slice_width
        if k == 0:
            return log2, mean
        lo, hi = round(LOG2_SCALE_MIN * 2**ACC_BITS), round(LOG2_SCALE_MAX * 2**ACC_BITS)
        inputs = np.concatenate([mean >> WEIGHT_BITS, np.clip(log2, lo, hi) >> WEIGHT_BITS, *decoded])
        context = self.context[k - 1]
        assert isinstance(context, nn.Sequential)
        delta = IntegerNet(context, in_bits=ACT_BITS, input_limit=CONTEXT_INPUT_LIMIT)(inputs)
        return log2 + delta[w:], mean + delta[:w]

    def hyper_params(self, z: Tensor, shape: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """The hyper synthesis's log2-scales (clamped) and means, cropped to ``shape``."""
        out = self.h_s(z)[:, :, : shape[0], : shape[1]]
        m = self.latent_channels
        return out[:, :m].clamp(LOG2_SCALE_MIN, LOG2_SCALE_MAX), out[:, m:]

    def hyper_scales(self, z: Tensor, shape: tuple[int, int]) -> Tensor:
        return self.hyper_params(z, shape)[0]

    def slice_params(
        self, k: int, log2_h: Tensor, mean_h: Tensor, decoded: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Slice k's log2-scales and means from the hyper's and the reconstructed slices 0..k-1."""
        w = self.slice_width
        part = slice(k * w, (k + 1) * w)
        log2, mean = log2_h[:, part], mean_h[:, part]
        if k == 0:
            return log2, mean
        delta = self.context[k - 1](torch.cat([mean, log2, *decoded], dim=1)).float()
        return (log2 + delta[:, w:]).clamp(LOG2_SCALE_MIN, LOG2_SCALE_MAX), mean + delta[:, :w]

    def forward(self, x: Tensor) -> TrainOutput:
        """A random rate position per sample; the rates with noise around the predicted means, the
        reconstruction (and the later slices' context) with the residuals rounded straight-through."""
        t = self.sample_positions(x.shape[0], x.device)
        gain, igain, lam = self.gains(t)
        y = self.g_a(x).float() * gain[:, :, None, None]
        z = self.hyper_analysis(y).float()
        z_tilde = z + torch.empty_like(z).uniform_(-0.5, 0.5)
        log2_h, mean_h = self.hyper_params(z_tilde, (y.shape[2], y.shape[3]))
        log2_h, mean_h = log2_h.float(), mean_h.float()
        w = self.slice_width
        decoded: list[Tensor] = []
        bits = self.z_density.bits(z_tilde)
        for k in range(self.slices):
            log2, mean = self.slice_params(k, log2_h, mean_h, decoded)
            y_k = y[:, k * w : (k + 1) * w]
            noisy = y_k + torch.empty_like(y_k).uniform_(-0.5, 0.5)
            with torch.autocast(x.device.type, enabled=False):
                bits = bits + gaussian_bits(noisy - mean, torch.exp2(log2)).sum()
            decoded.append(y_k + (torch.round(y_k - mean) + mean - y_k).detach())
        y_hat = torch.cat(decoded, dim=1)
        return TrainOutput(self.g_s(y_hat * igain[:, :, None, None]), bits, lam)
