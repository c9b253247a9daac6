"""Choosing the torch device from the --device option."""

from __future__ import annotations

import torch

from aecompress.errors import DeviceError


def select_device(spec: str = "auto") -> torch.device:
    """'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N' -> a usable torch device."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} asked for, but CUDA is not available here")
        try:
            index = int(spec.split(":", 1)[1]) if ":" in spec else 0
        except ValueError as exc:
            raise DeviceError(f"bad device {spec!r} (use cuda:N)") from exc
        if not 0 <= index < torch.cuda.device_count():
            raise DeviceError(f"device {spec!r} does not exist ({torch.cuda.device_count()} GPUs)")
        return torch.device("cuda", index)
    raise DeviceError(f"unknown device {spec!r} (use auto, cpu, cuda or cuda:N)")
