"""Shrink a training checkpoint for committing, expand it back for --resume, or take a model
file out of it (the weight average when the run keeps one) without stopping the run.

    python scripts/checkpoint.py compact runs/hp/hyperprior.pt.ckpt models/next/hyperprior.ckpt
    python scripts/checkpoint.py expand models/next/hyperprior.ckpt runs/hp/hyperprior.pt.ckpt
    python scripts/checkpoint.py model runs/hp/hyperprior.pt.ckpt /tmp/snapshot.pt [NAME]

A checkpoint holds float32 weights and Adam's two moments (12 bytes a parameter, 16 with a weight
average). The compact form keeps the weights (and the average) in float16, small tensors in
float32 as model files keep them; it drops Adam's first moment, which a resumed run rebuilds within
a few dozen steps (decay 0.9), and keeps the second moment, which takes about a thousand, as 8-bit
codes of its logarithm spread over each tensor's range (zero kept exact). Some tensors' moments span
100 octaves, so a value comes back within 16% (the stage-11b state at step 15,500), its square
root, which Adam divides by, within 8%: a one-off nudge to each step's size that the moment's own
averaging washes out. About 5 bytes a parameter (the stage-11b state: 46 MB -> 15 MB), so a
session can commit the states the next one resumes and the working tree still fits a GPU
machine's copy. Resuming from it is not bit-exact with the uncommitted run, but the step, the
schedule and the sample sequence continue where they stopped.
Compact files of the earlier form (both moments in bfloat16) still expand.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from aecompress.fileio import atomic_torch_save
from aecompress.modelfile import save_model, stored_form
from aecompress.nn import build


def _convert(value: Any, weights: torch.dtype) -> Any:
    """Every float tensor of a (nested) state in ``weights``: float16 as model files keep weights
    (small tensors, where rounding hurts, in float32), or float32 to resume from."""
    if isinstance(value, dict):
        return {k: _convert(v, weights) for k, v in value.items()}
    if isinstance(value, list):
        return [_convert(v, weights) for v in value]
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() > 1:
        return stored_form(value) if weights == torch.float16 else value.to(weights)
    return value


def _model_file(state: dict[str, Any], out: Path, name: str | None = None) -> None:
    """The run's weights (its average where it keeps one) as a model file, named ``name`` (a
    release beside an earlier member of the run's name, whose files name that one's weights) or
    as the run was."""
    cfg = state["config"]
    model = build(cfg["arch"], cfg["arch_config"])
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
    weights.update({k: v.float() for k, v in state.get("ema", {}).items()})
    model.load_state_dict(weights)
    name = name or cfg.get("name") or out.stem
    save_model(model.eval(), out, name, {"name": name, "steps": state["step"], "snapshot_of": cfg["output"]})


LOG_CODES = 254  # the second moment's log2 in codes 1..255 over each tensor's own range; 0 is zero


def _pack_moments(entry: dict[str, Any]) -> dict[str, Any]:
    """One parameter's Adam state, compact: the step, and the second moment as log2 codes."""
    v = entry["exp_avg_sq"].float()
    positive = v > 0
    log = v.clamp_min(torch.finfo(torch.float32).tiny).log2()
    lo = log[positive].min() if positive.any() else torch.tensor(0.0)
    hi = log[positive].max() if positive.any() else torch.tensor(0.0)
    span = (hi - lo).clamp_min(1e-6)
    codes = 1 + ((log - lo) / span * LOG_CODES).round().clamp(0, LOG_CODES)
    codes = torch.where(positive, codes, torch.zeros_like(codes)).to(torch.uint8)
    return {"step": entry["step"], "exp_avg_sq_log8": {"codes": codes, "lo": lo, "hi": hi}}


def _unpack_moments(entry: dict[str, Any]) -> dict[str, Any]:
    """The Adam state a run resumes from: a compact entry decoded (the first moment restarts at
    zero), or an entry of the earlier compact form in float32."""
    if "exp_avg_sq_log8" not in entry:
        return _convert(entry, torch.float32)
    packed = entry["exp_avg_sq_log8"]
    codes = packed["codes"].float()
    log = packed["lo"] + (codes - 1) / LOG_CODES * (packed["hi"] - packed["lo"])
    v = torch.where(codes > 0, torch.exp2(log), torch.zeros_like(log))
    return {"step": entry["step"], "exp_avg": torch.zeros_like(v), "exp_avg_sq": v}


def main(argv: list[str]) -> int:
    known = argv[:1] in (["compact"], ["expand"]) and len(argv) == 3
    if not known and not (argv[:1] == ["model"] and len(argv) in (3, 4)):
        print(__doc__)
        return 2
    state = torch.load(argv[1], map_location="cpu", weights_only=True)
    if argv[0] == "model":
        _model_file(state, Path(argv[2]), argv[3] if len(argv) == 4 else None)
        print(f"{argv[2]}: model at step {state['step']}{' (weight average)' if 'ema' in state else ''}")
        return 0
    compact = argv[0] == "compact"
    weights = torch.float16 if compact else torch.float32
    moments = _pack_moments if compact else _unpack_moments
    out = {**state, "model": _convert(state["model"], weights)}
    if "ema" in state:
        out["ema"] = _convert(state["ema"], weights)
    out["optimizer"] = {
        **state["optimizer"],
        "state": {k: moments(v) for k, v in state["optimizer"]["state"].items()},
    }
    atomic_torch_save(out, Path(argv[2]))
    print(f"{argv[2]}: step {state['step']}, {Path(argv[2]).stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
