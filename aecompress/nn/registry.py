"""Architectures by name: a model file names its architecture and config, and this builds it.

The architectures register themselves when ``aecompress.nn`` is imported (it imports every module
that defines one), so this module imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aecompress.errors import ModelError
from aecompress.nn.base import LatentCodec

ARCHITECTURES: dict[str, type[LatentCodec]] = {}


def register(name: str) -> Callable[[type[LatentCodec]], type[LatentCodec]]:
    """Class decorator that makes an architecture loadable by name from model files."""

    def wrap(cls: type[LatentCodec]) -> type[LatentCodec]:
        cls.arch = name
        ARCHITECTURES[name] = cls
        return cls

    return wrap


def build(arch: str, config: dict[str, Any]) -> LatentCodec:
    """Instantiate a registered architecture with its config, with a clear error when unknown."""
    cls = ARCHITECTURES.get(arch)
    if cls is None:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ModelError(f"unknown architecture {arch!r} (known: {known})")
    if not isinstance(config, dict):
        raise ModelError(f"config for architecture {arch!r} is not a mapping")
    try:
        return cls(**config)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"bad config for architecture {arch!r}: {exc}") from exc
