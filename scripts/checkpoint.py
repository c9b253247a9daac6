"""Shrink a training checkpoint for committing, expand it back for --resume, or take a model
file out of it (the weight average when the run keeps one) without stopping the run.

    python scripts/checkpoint.py compact runs/hp/hyperprior.pt.ckpt models/next/hyperprior.ckpt
    python scripts/checkpoint.py expand models/next/hyperprior.ckpt runs/hp/hyperprior.pt.ckpt
    python scripts/checkpoint.py model runs/hp/hyperprior.pt.ckpt /tmp/snapshot.pt

A checkpoint holds float32 weights and Adam's two moments (12 bytes a parameter). The compact form
keeps the weights in float16 (small tensors, as in model files, in float32) and the moments in
bfloat16 (whose range holds Adam's tiny second moments, where float16 would flush them to zero):
about 6 bytes a parameter, so a session can commit the state the next one resumes. Resuming from
it is not bit-exact with the uncommitted run, but the step, the schedule and the sample sequence
continue where they stopped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from aecompress.fileio import atomic_torch_save
from aecompress.modelfile import save_model, stored_form
from aecompress.nn import build


def _convert(value: Any, weights: torch.dtype, moments: torch.dtype) -> Any:
    if isinstance(value, dict):
        return {
            k: _convert(v, moments if k in ("exp_avg", "exp_avg_sq") else weights, moments)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_convert(v, weights, moments) for v in value]
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() > 1:
        # weights for committing: as model files keep them (small tensors, where rounding hurts,
        # in float32)
        return stored_form(value) if weights == torch.float16 else value.to(weights)
    return value


def _model_file(state: dict[str, Any], out: Path) -> None:
    cfg = state["config"]
    model = build(cfg["arch"], cfg["arch_config"])
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
    weights.update({k: v.float() for k, v in state.get("ema", {}).items()})
    model.load_state_dict(weights)
    name = cfg.get("name") or out.stem
    save_model(model.eval(), out, name, {"name": name, "steps": state["step"], "snapshot_of": cfg["output"]})


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("compact", "expand", "model"):
        print(__doc__)
        return 2
    state = torch.load(argv[1], map_location="cpu", weights_only=True)
    if argv[0] == "model":
        _model_file(state, Path(argv[2]))
        print(f"{argv[2]}: model at step {state['step']}{' (weight average)' if 'ema' in state else ''}")
        return 0
    if argv[0] == "compact":
        out = {**state, "model": _convert(state["model"], torch.float16, torch.bfloat16)}
        if "ema" in state:
            out["ema"] = _convert(state["ema"], torch.float16, torch.bfloat16)
        out["optimizer"] = {
            **state["optimizer"],
            "state": _convert(state["optimizer"]["state"], torch.float32, torch.bfloat16),
        }
    else:
        out = {**state, "model": _convert(state["model"], torch.float32, torch.float32)}
        if "ema" in state:
            out["ema"] = _convert(state["ema"], torch.float32, torch.float32)
        out["optimizer"] = {
            **state["optimizer"],
            "state": _convert(state["optimizer"]["state"], torch.float32, torch.float32),
        }
    atomic_torch_save(out, Path(argv[2]))
    print(f"{argv[2]}: step {state['step']}, {Path(argv[2]).stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
