"""The networks: layers, the learned densities used for the rate terms, the architectures and
the registry that builds them by name. Importing this package registers every architecture."""

from aecompress.nn import context, models  # noqa: F401  (each registers its architectures)
from aecompress.nn.base import LatentCodec, TrainOutput
from aecompress.nn.registry import ARCHITECTURES, build, register

__all__ = ["ARCHITECTURES", "LatentCodec", "TrainOutput", "build", "register"]
