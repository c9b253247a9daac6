"""The networks: layers, the learned density used for the rate term, and the architecture registry."""

from aecompress.nn.registry import ARCHITECTURES, LatentCodec, build, register

__all__ = ["ARCHITECTURES", "LatentCodec", "build", "register"]
