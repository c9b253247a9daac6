"""aecompress: a learned image codec whose latents are quantized and zstd-packed into .aec files.

    import aecompress
    data = aecompress.compress("photo.png", quality=60)        # .aec bytes
    image = aecompress.decompress(data)                         # a PIL image
    aecompress.info(data)                                       # header fields, no network
    Image.open("photo.aec"); image.save("copy.aec", quality=40) # through Pillow

Importing it registers .aec with Pillow and imports no torch; a network (and torch) is loaded
when the first image is compressed or decoded.
"""

from typing import TYPE_CHECKING, Any

from aecompress.errors import (
    AecError,
    ChecksumError,
    DeviceError,
    FormatError,
    ImageError,
    LimitError,
    ModelError,
    ModelMismatchError,
    TruncatedError,
    VersionError,
)
from aecompress.pillow_plugin import register as _register_pillow

__version__ = "0.8.0"  # a minor version per released file format or default codec (CHANGELOG.md)
__all__ = [
    "AecError",
    "ChecksumError",
    "DeviceError",
    "FormatError",
    "ImageError",
    "LimitError",
    "ModelError",
    "ModelMismatchError",
    "TruncatedError",
    "VersionError",
    "__version__",
    "compress",
    "compress_many",
    "decompress",
    "decompress_many",
    "decompress_tensor",
    "info",
]

if TYPE_CHECKING:
    from aecompress.api import compress, compress_many, decompress, decompress_many, decompress_tensor, info

_API = {"compress", "compress_many", "decompress", "decompress_many", "decompress_tensor", "info"}


def __getattr__(name: str) -> Any:
    """The API functions, imported on first use (their module needs numpy and Pillow only)."""
    if name in _API:
        from aecompress import api

        return getattr(api, name)
    raise AttributeError(f"module 'aecompress' has no attribute {name!r}")


_register_pillow()
