"""Seconds per training step, eager and through torch.compile (`aecompress train --compile`).

    python benchmarks/train_speed.py [--model models/context.pt] [--batch 4] [--crop 256]
        [--threads 1] [--precision bf16] [--steps 4] [--modes eager compile]

Each mode starts from the same model file and runs the trainer's own loss and an Adam step on the
same random batch (the noise seeded alike), in this process, one mode after the other: the first
step (compiling included) and the mean of the next ``--steps``. The background trainings of
docs/training.md run on one thread beside a working session; give this the same conditions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from aecompress.modelfile import load_model
from aecompress.train import compiled, rd_loss

REPO = Path(__file__).resolve().parent.parent


def _timed(
    model_path: Path, mode: str, batch: torch.Tensor, precision: str, steps: int
) -> tuple[float, float, float]:
    """First step's seconds, the mean of the next ``steps``, and the last loss."""
    net, _ = load_model(model_path)
    net = net.to(memory_format=torch.channels_last).train().requires_grad_(True)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-6)
    run = compiled(net, torch.device("cpu")) if mode == "compile" else net
    loss_value = 0.0

    def step(index: int) -> None:
        nonlocal loss_value
        torch.manual_seed(index)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, _ = rd_loss(run, batch, 0.01, True, 0.3)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())

    start = time.perf_counter()
    step(0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for index in range(steps):
        step(index + 1)
    return first, (time.perf_counter() - start) / max(steps, 1), loss_value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(REPO / "models" / "context.pt"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--modes", nargs="+", choices=["eager", "compile"], default=["eager", "compile"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = torch.rand(args.batch, 3, args.crop, args.crop).contiguous(memory_format=torch.channels_last)
    name = Path(args.model).name
    print(f"{name}, batch {args.batch} of {args.crop}², {args.precision}, {args.threads} thread(s)")
    print("| mode | first step s | s/step | last loss |")
    print("|---|---:|---:|---:|")
    for mode in args.modes:
        first, per_step, loss = _timed(Path(args.model), mode, batch, args.precision, args.steps)
        print(f"| {mode} | {first:.2f} | {per_step:.3f} | {loss:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
