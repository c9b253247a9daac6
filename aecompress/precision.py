"""The precision the networks run in: one setting per process, given explicitly (``set``) by the
command line, the library or a batch worker; ``AECOMPRESS_PRECISION`` only seeds it.

No torch here, so the command line can set it before deciding whether torch is needed at all.
"""

from __future__ import annotations

import os

from aecompress.errors import DeviceError

PRECISIONS = ("auto", "bf16", "fp32")  # auto: bfloat16 on CPUs where it runs faster, else float32
ENV = "AECOMPRESS_PRECISION"  # the starting value, for benchmarks run from a shell

_setting: str | None = None


def set(precision: str) -> None:
    """Make ``precision`` the process's setting: 'auto', 'bf16' or 'fp32'. Only the networks
    change; the integers a file holds are parsed exactly whatever this says."""
    global _setting
    _setting = check(precision)


def current() -> str:
    """The setting in force: the last ``set``, else $AECOMPRESS_PRECISION, else 'auto'."""
    return _setting if _setting is not None else check(os.environ.get(ENV, "auto"), ENV)


def check(precision: str, where: str = "precision") -> str:
    """``precision`` when it is one of PRECISIONS, else a clear error."""
    if precision not in PRECISIONS:
        raise DeviceError(f"{where} {precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision
