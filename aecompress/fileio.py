"""Safe output: write to a temporary file in the target folder, flush, then rename into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from aecompress.errors import OutputError, OutputExistsError

TEMP_SUFFIX = ".tmp"


def check_writable(path: Path, force: bool) -> None:
    """Fail early (before any work) when the output exists without force or its folder is unusable."""
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists (use -f to overwrite)")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {folder} is not writable")


def atomic_write(path: Path, data: bytes, force: bool = False) -> None:
    """Write data to path so that readers see the old file or the whole new one, never a part.

    Without force the final step is a hard link, which fails if the name appeared meanwhile, so
    a file created by someone else is never clobbered.
    """
    path = Path(path)
    check_writable(path, force)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644 & ~_umask())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError as exc:
                raise OutputExistsError(f"{path} already exists (use -f to overwrite)") from exc
            except OSError:
                if path.exists():
                    raise OutputExistsError(f"{path} already exists (use -f to overwrite)") from None
                os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def remove_stale_temps(path: Path) -> int:
    """Delete temporary files left beside path by writers that were killed (their process is gone).

    Temporary names carry the writer's process id, so a file another live process is still
    writing is never touched. Returns how many were removed.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    prefix = f".{path.name}."
    removed = 0
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(TEMP_SUFFIX)]
    except OSError:
        return 0
    for name in names:
        pid_text = name[len(prefix) :].split(".", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            with contextlib.suppress(OSError):
                os.unlink(folder / name)
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_torch_save(obj: object, path: Path) -> None:
    """torch.save streamed to a temporary file beside path, then renamed into place.

    Streaming (rather than atomic_write's bytes) keeps multi-gigabyte checkpoints out of memory.
    """
    import torch

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
