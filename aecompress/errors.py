"""The errors a user can hit. The CLI turns each into one line on stderr and exit status 1."""

from __future__ import annotations


class AecError(Exception):
    """Base of every error aecompress reports to users (never a bug in aecompress itself)."""


class FormatError(AecError):
    """A .aec file that is not one, or whose structure is inconsistent."""


class TruncatedError(FormatError):
    """A .aec file that ends before its declared contents."""


class ChecksumError(FormatError):
    """A .aec file whose stored checksum does not match its contents (corruption)."""


class VersionError(FormatError):
    """A .aec file written by a newer format version than this aecompress reads."""


class ModelError(AecError):
    """A model that cannot be found, loaded or trusted."""


class ModelMismatchError(ModelError):
    """A .aec file that needs a model (weights) other than the one available."""


class ImageError(AecError):
    """An input that is not a readable image, or an image that cannot be written as asked."""


class LimitError(AecError):
    """An input over a safety limit (pixel count): refused before memory is committed to it."""


class OutputExistsError(AecError):
    """The output exists and overwriting was not asked for (-f)."""


class OutputError(AecError):
    """The output cannot be written (folder missing or not writable, disk full)."""


class TrainingError(AecError):
    """Training cannot start or continue (no usable images, bad options, bad checkpoint)."""


class DeviceError(AecError):
    """The compute device asked for does not exist on this machine."""
