"""What every architecture is: an image autoencoder whose latents go into .aec files, and what its
training pass returns. The registry (``nn.registry``) maps names to these classes."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from torch import Tensor, nn


class TrainOutput(NamedTuple):
    """A training pass: the reconstruction, the estimated total bits and, for a variable-rate
    model, the lambda each sample was coded at (None: the trainer's one lambda)."""

    x_hat: Tensor
    bits: Tensor
    lmbda: Tensor | None = None


class LatentCodec(nn.Module):
    """An image autoencoder whose latents are quantized and stored in .aec files.

    ``stride`` pixels map to one latent position. ``encoder_context`` (pixels) and
    ``decoder_context`` (latent positions) are how far a tile must extend past the part that is
    kept for tiled coding to match whole-image coding.
    """

    arch: ClassVar[str] = ""
    stride: int = 16
    latent_channels: int = 100
    encoder_context: int = 0
    decoder_context: int = 0
    input_size: ClassVar[int | None] = None  # fixed training input side (crops are scaled to it)
    rate_distortion: ClassVar[bool] = True  # False: trained on MSE alone
    weight_decay: ClassVar[float] = 0.0
    default_crop: ClassVar[int] = 256
    coding: ClassVar[str] = "channel-context"  # how its integers are coded (aecompress.latents)

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config = dict(config)

    def encode(self, x: Tensor) -> Tensor:
        """Image batch (B, 3, H, W) in [0, 1], H and W multiples of stride -> float latents."""
        raise NotImplementedError

    def decode(self, y: Tensor) -> Tensor:
        """Dequantized latents -> image batch in roughly [0, 1] (the caller clamps)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> TrainOutput:
        """Training pass: reconstruction and estimated total bits, with a proxy for rounding."""
        raise NotImplementedError

    def adopt(self, other: LatentCodec, lmbda: float | None) -> int:
        """Take the weights of another model whose names and shapes match (a warm start from a
        model of another architecture, trained at ``lmbda``); returns how many tensors were taken."""
        mine = self.state_dict()
        taken = {k: v for k, v in other.state_dict().items() if k in mine and mine[k].shape == v.shape}
        self.load_state_dict(taken, strict=False)
        return len(taken)

    def calibrate(self, batch: Tensor) -> None:
        """Called once after training with sample inputs; rate-trained models need nothing."""
