"""Choosing the torch device (--device), and what the precision setting (``aecompress.precision``)
means on it: the dtype and autocast the networks run under."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import torch

from aecompress import precision
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


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


@cache
def native_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX512-BF16 or AMX); elsewhere autocast
    emulates bfloat16 and runs many times slower (training warns before it does)."""
    return _has_bf16(_cpuinfo())


def _has_bf16(cpuinfo: str) -> bool:
    return " avx512_bf16" in cpuinfo or " amx_bf16" in cpuinfo


def bf16_pays(cpuinfo: str) -> bool:
    """Whether bfloat16 networks run faster than float32 on the CPU ``cpuinfo`` describes: with
    AMX tiles, or on AMD's AVX512-BF16 (Zen 4 on: about twice float32's speed). Intel's
    AVX512-BF16 without AMX (Cooper Lake, or a virtual machine that hides AMX) ran slower than
    float32: a 128-channel 5x5 convolution at 158 against 266 GFLOPS on 2 threads of an Emerald
    Rapids VM, a Kodak encode at -q 50 in 0.36 s against 0.21 s."""
    if " amx_bf16" in cpuinfo:
        return True
    return " avx512_bf16" in cpuinfo and "AuthenticAMD" in cpuinfo


@cache
def fast_bf16() -> bool:
    """``bf16_pays`` for this CPU: what precision 'auto' runs the networks in on it."""
    return bf16_pays(_cpuinfo())


def compute_dtype(device: torch.device) -> torch.dtype:
    """The dtype the networks run in on ``device`` under the process's precision setting."""
    setting = precision.current()
    if setting == "bf16" or (setting == "auto" and device.type == "cpu" and fast_bf16()):
        return torch.bfloat16
    return torch.float32


def describe_precision(device: torch.device) -> str:
    """For -v: what the networks run in, and why."""
    dtype = compute_dtype(device)
    name = "bfloat16" if dtype == torch.bfloat16 else "float32"
    setting = precision.current()
    why = (
        f"--precision {setting}"
        if setting != "auto"
        else "auto: "
        + (
            "this CPU runs bfloat16 faster"
            if fast_bf16()
            else "bfloat16 is not faster on this CPU"
            if native_bf16()
            else "no native bfloat16 here"
        )
    )
    return f"{name} ({why})"


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """Run the networks inside in the chosen precision (a no-op for float32)."""
    if compute_dtype(device) == torch.float32:
        yield
        return
    with torch.autocast(device.type, dtype=torch.bfloat16):
        yield
