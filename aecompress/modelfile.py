"""Model files: architecture name, config, float16 weights and a model card, loaded without code.

A model file is a ``torch.save`` of plain containers and tensors, read back with
``weights_only=True`` so that a hostile file cannot run code. The weights hash written into every
.aec header is computed here, over the stored float16 tensors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from aecompress.errors import ModelError, ModelMismatchError
from aecompress.fileio import atomic_torch_save

FILE_KIND = "aecompress-model"
FILE_VERSION = 1
SUFFIX = ".pt"
DEFAULT_MODEL = "default"


@dataclass
class ModelInfo:
    """What a model file holds besides its tensors."""

    name: str
    arch: str
    config: dict[str, Any]
    weights_hash: bytes
    path: Path | None = None
    card: dict[str, Any] = field(default_factory=dict)


def weights_hash(state: dict[str, Any]) -> bytes:
    """16-byte SHA-256 digest of a state dict, as stored (names, dtypes, shapes and bytes)."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key]
        if not isinstance(tensor, torch.Tensor):
            raise ModelError(f"model weights hold a non-tensor entry {key!r}")
        t = tensor.detach().cpu().contiguous()
        digest.update(key.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.digest()[:16]


FULL_PRECISION_UP_TO = 1 << 15  # elements: smaller float tensors are stored in float32


def storable_state(model: Any) -> dict[str, Any]:
    """The model's weights as they go into a file: large float tensors in float16 (they are nearly
    all of the bytes), small ones in float32, others unchanged. Small tensors are where rounding
    hurts: a hyperprior with its first convolution and its GDN matrices in float16 lost 0.13 dB
    on its validation images, and kept 0.12 dB of it with them in float32, for 0.26 MB more."""

    return {key: stored_form(value.detach().cpu()) for key, value in model.state_dict().items()}


def stored_form(value: Any) -> Any:
    """One weight tensor as files keep it: float16 when large, float32 when small, others as is."""
    if not value.is_floating_point():
        return value.clone()
    return value.float().clone() if value.numel() <= FULL_PRECISION_UP_TO else value.half()


def save_model(model: Any, path: Path, name: str, card: dict[str, Any] | None = None) -> ModelInfo:
    """Write a ready-to-use model file (mostly float16 weights) and return its info."""
    state = storable_state(model)
    info = ModelInfo(name=name, arch=model.arch, config=dict(model.config), weights_hash=weights_hash(state))
    payload = {
        "kind": FILE_KIND,
        "version": FILE_VERSION,
        "name": name,
        "arch": info.arch,
        "config_json": json.dumps(info.config, sort_keys=True),
        "card_json": json.dumps(card or {}, sort_keys=True),
        "weights_hash": info.weights_hash.hex(),
        "state_dict": state,
    }
    path = Path(path)
    atomic_torch_save(payload, path)
    info.path = path
    info.card = card or {}
    return info


def _read(path: Path) -> tuple[ModelInfo, dict[str, Any]]:
    import pickle

    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelError(f"model file not found: {path}") from exc
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a loadable aecompress model ({first[:200]})") from exc
    if not isinstance(payload, dict) or payload.get("kind") != FILE_KIND:
        raise ModelError(f"{path}: not an aecompress model file")
    if int(payload.get("version", 0)) > FILE_VERSION:
        raise ModelError(f"{path}: model file version {payload['version']} is newer than supported")
    try:
        state = payload["state_dict"]
        info = ModelInfo(
            name=str(payload["name"]),
            arch=str(payload["arch"]),
            config=json.loads(payload["config_json"]),
            weights_hash=bytes.fromhex(payload["weights_hash"]),
            path=path,
            card=json.loads(payload.get("card_json", "{}")),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"{path}: model file is missing or has bad fields ({exc})") from exc
    if weights_hash(state) != info.weights_hash:
        raise ModelError(f"{path}: weights do not match their recorded hash (corrupt model file)")
    info.card.update(_sidecar_card(path))
    return info, state


def _sidecar_card(path: Path) -> dict[str, Any]:
    """The model card JSON beside a model file (models/hyperprior.json), when there is one."""
    card_path = Path(path).with_suffix(".json")
    if not card_path.is_file():
        return {}
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float) -> tuple[Any, ModelInfo]:
    import torch

    from aecompress.nn import build

    info, state = _read(Path(path))
    with torch.device("meta"):  # shapes only: a config that lies about sizes allocates nothing
        skeleton = build(info.arch, info.config)
    expected = {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
    stored = {key: tuple(value.shape) for key, value in state.items()}
    if expected != stored:
        wrong = sorted(set(expected.items()) ^ set(stored.items()))[:3]
        raise ModelError(
            f"{path}: weights do not fit architecture {info.arch!r} (first differences: {wrong})"
        )
    model = build(info.arch, info.config)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"{path}: weights do not fit architecture {info.arch!r} ({first})") from exc
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    # channels-last convolutions run about 1.5x faster on CPUs (measured in benchmarks/kodak.py)
    return model.to(memory_format=torch.channels_last), info


def load_model(path: Path) -> tuple[Any, ModelInfo]:
    """Load a model file into an eval-mode network (cached per path and modification time)."""
    path = Path(path).resolve()
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise ModelError(f"model file not found: {path}") from exc
    return _load_cached(str(path), mtime)


def read_info(path: Path) -> ModelInfo:
    """A model file's name, architecture, hash and card, without building the network."""
    return _read(Path(path))[0]


def user_models_dir() -> Path:
    """Where user-trained models are listed from: $AECOMPRESS_MODELS or the per-user data dir."""
    env = os.environ.get("AECOMPRESS_MODELS")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "aecompress" / "models"


def bundled_models_dirs() -> list[Path]:
    """The models shipped with aecompress: the package's ``aecompress.models`` (the repository's
    models/ folder, mapped into the package by pyproject.toml), found the same way in an editable
    install and in a wheel."""
    from importlib.resources import files

    try:
        folder = Path(str(files("aecompress.models")))
    except ModuleNotFoundError:
        return []
    return [folder] if folder.is_dir() else []


def search_dirs() -> list[Path]:
    """Folders searched for a model given by name, first match wins."""
    dirs = [user_models_dir(), *bundled_models_dirs()]
    return [d for d in dirs if d.is_dir()]


def search_files(suffix: str) -> list[Path]:
    """Files ending in suffix in the search folders (names shadowed by earlier folders skipped)."""
    seen: dict[str, Path] = {}
    for folder in search_dirs():
        for path in sorted(folder.glob(f"*{suffix}")):
            seen.setdefault(path.name, path)
    return list(seen.values())


def available_models() -> list[Path]:
    """Every model file found in the search folders."""
    return search_files(SUFFIX)


def resolve(spec: str | os.PathLike[str] | None) -> Path:
    """A model given as a path or a name (None means the default) -> its file."""
    spec = DEFAULT_MODEL if spec is None else os.fspath(spec)
    direct = Path(spec).expanduser()
    if direct.is_file():
        return direct
    for folder in search_dirs():
        candidate = folder / f"{spec}{SUFFIX}"
        if candidate.is_file():
            return candidate
    names = ", ".join(p.stem for p in available_models()) or "none"
    raise ModelError(f"unknown model {spec!r} (available: {names})")


def find_for_file(name: str, digest: bytes, preferred: Path | None = None, near: Sequence[Path] = ()) -> Path:
    """The model a .aec file needs: by its recorded name, checked against its weights hash.

    Looked for where a user would have left it: ``NAME.pt`` beside the .aec file (``near``) and in
    the current folder, then the models folders (user, then bundled) by name, then any model
    there with the same weights. ``preferred`` (--model) is the only candidate when given.
    """
    candidates: list[Path] = []
    if preferred is not None:
        candidates.append(Path(preferred))
    else:
        if Path(name).name == name and name not in ("", ".", ".."):  # a bare name, no path tricks
            for folder in (*near, Path.cwd()):
                candidate = Path(folder) / f"{name}{SUFFIX}"
                if candidate.is_file() and candidate not in candidates:
                    candidates.append(candidate)
        with contextlib.suppress(ModelError):
            found = resolve(name) if Path(name).name == name else None
            if found is not None and found not in candidates:
                candidates.append(found)
        candidates += [p for p in available_models() if p not in candidates]
    for i, path in enumerate(candidates):
        # the first candidate is most likely the one: load it fully, since decoding needs it
        try:
            info = load_model(path)[1] if i == 0 else read_info(path)
        except ModelError:
            if preferred is not None:
                raise
            continue  # an unreadable file in a models folder must not stop other models
        if info.weights_hash == digest:
            return path
    if preferred is not None:
        raise ModelMismatchError(
            f"this file needs model {name!r} with weights {digest.hex()[:16]}; {preferred} has other weights"
        )
    places = [str(Path(f)) for f in (*near, Path.cwd())] + [str(d) for d in search_dirs()]
    raise ModelMismatchError(
        f"this file needs model {name!r} with weights {digest.hex()[:16]}; looked for {name}{SUFFIX} "
        f"in {', '.join(dict.fromkeys(places))} (pass it with --model PATH, or put it in one of them)"
    )
