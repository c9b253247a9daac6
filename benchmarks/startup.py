"""What a one-file call costs, step by step, and whole processes side by side with another checkout.

    python benchmarks/startup.py [--image ../shared/data/kodak/kodim05.png] [-q 50] [--runs 5]
        [--compare /path/to/other/checkout] [--threads 2]

Steps (one fresh process each time, medians over --runs): import torch; import the codec; load
the model; read the image; the analysis network; quantize and code the integers; write the .aec;
then for decoding: parse, decode the integers, the synthesis network, write the PNG. Then whole
`aecompress encode` and `aecompress decode` processes (wall clock, median), for this checkout and,
with --compare, for another one run the same way (PYTHONPATH pointing at it) in the same loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

STEPS = r"""
import json, sys, time
t = [time.perf_counter()]
import torch
torch.set_num_threads(int(sys.argv[4]))
t.append(time.perf_counter())
from pathlib import Path
from aecompress import codec, pack, passes, placement, format as aecformat
from aecompress.imageio import encode_image_bytes, read_image
from aecompress.latents import coder_for
t.append(time.perf_counter())
path, local = placement.pick_model("default", float(sys.argv[2]))
net, info = passes.model_on(path, torch.device("cpu"))
t.append(time.perf_counter())
image = read_image(Path(sys.argv[1]))
t.append(time.perf_counter())
y = passes.analyse(net, image.rgb, torch.device("cpu"))
t.append(time.perf_counter())
data, header = pack.pack_latents(net, info.name, info.weights_hash, image, y, local)
t.append(time.perf_counter())
Path(sys.argv[3]).write_bytes(data)
t.append(time.perf_counter())
aec = aecformat.unpack(Path(sys.argv[3]).read_bytes())
t.append(time.perf_counter())
latents = coder_for(net).restore(net, aec)
t.append(time.perf_counter())
rgb = passes.synthesize(net, latents, (aec.header.height, aec.header.width), torch.device("cpu"))
t.append(time.perf_counter())
Path(sys.argv[3] + ".png").write_bytes(encode_image_bytes(pack.decode_with(net, aec), "PNG"))
t.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(t, t[1:])]))
"""
NAMES = [
    "import torch", "import aecompress", "load the model", "read the image", "analysis network",
    "quantize and code", "write .aec", "parse", "decode the integers", "synthesis network",
    "decode and write PNG",
]  # fmt: skip


def _whole(root: Path, args: list[str], threads: int) -> float:
    """One ``python -m aecompress`` process of the checkout at ``root`` (run from there: -m puts the
    current folder first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "aecompress", *args], env=env, check=True, capture_output=True, cwd=root
    )
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", default=str(REPO.parent / "shared" / "data" / "kodak" / "kodim05.png"))
    parser.add_argument("-q", "--quality", type=float, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compare", default=None, help="another checkout to time the same way")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "x.aec")
        runs = []
        for _ in range(args.runs):
            proc = subprocess.run(
                [sys.executable, "-c", STEPS, args.image, str(args.quality), out, str(args.threads)],
                capture_output=True, text=True, check=True, cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )  # fmt: skip
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{args.image} at -q {args.quality:g}, {args.threads} threads, median of {args.runs} processes")
        print("| step | seconds |")
        print("|---|---:|")
        for i, name in enumerate(NAMES):
            print(f"| {name} | {statistics.median(r[i] for r in runs):.3f} |")
        checkouts = {"this checkout": REPO}
        if args.compare:
            checkouts["compared"] = Path(args.compare).resolve()
        times: dict[str, dict[str, list[float]]] = {k: {"encode": [], "decode": []} for k in checkouts}
        for _ in range(args.runs + 1):  # the first round warms the page cache and is dropped
            for label, root in checkouts.items():
                enc = ["encode", str(Path(args.image).resolve()), "-o", out, "-f", "-q", str(args.quality)]
                times[label]["encode"].append(_whole(root, enc, args.threads))
                times[label]["decode"].append(
                    _whole(root, ["decode", out, "-o", out + ".png", "-f"], args.threads)
                )
        print("\n| whole process | encode s | decode s |")
        print("|---|---:|---:|")
        for label, found in times.items():
            enc, dec = statistics.median(found["encode"][1:]), statistics.median(found["decode"][1:])
            print(f"| {label} ({checkouts[label]}) | {enc:.2f} | {dec:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
