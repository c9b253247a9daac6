"""Throughput of `aecompress batch` against a shell loop of single `aecompress encode` calls.

    python benchmarks/batch.py [--kodak ../shared/data/kodak] [--bsds ../shared/data/bsds500]
                               [--count 300] [--loop-files 40] [--jobs 1 2]

Builds a tree of COUNT images (the 24 Kodak PNGs and BSDS500 JPEGs, in nested folders), then times,
each in fresh processes and from an empty output folder: `batch -j J` for every J asked for, the
default `-j`, and a loop that starts one `aecompress encode` per file (on LOOP_FILES of them,
evenly spread over the tree, since the rate is what matters). Prints images/s and input MB/s for
each. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def build_tree(root: Path, kodak: Path, bsds: Path, count: int) -> list[Path]:
    """Copy up to COUNT images into root/<set>/<group>/, 25 files per folder."""
    sources = sorted(kodak.glob("*.png")) + sorted(p for p in bsds.rglob("*") if p.suffix.lower() == ".jpg")
    files = []
    for index, source in enumerate(sources[:count]):
        target = root / source.parent.name / f"g{index // 25:02d}" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        files.append(target)
    return files


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--kodak", type=Path, default=SHARED / "kodak")
    parser.add_argument("--bsds", type=Path, default=SHARED / "bsds500")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--loop-files", type=int, default=40)
    parser.add_argument("--jobs", type=int, nargs="*", default=[1, 2])
    parser.add_argument("-q", "--quality", type=float, default=75)
    args = parser.parse_args(argv)

    aec = [sys.executable, "-m", "aecompress", "--quiet"]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        files = build_tree(src, args.kodak, args.bsds, args.count)
        if not files:
            raise SystemExit("no images found: pass --kodak and --bsds")
        total_mb = sum(f.stat().st_size for f in files) / 1e6
        rows = []
        settings: list[tuple[str, list[str]]] = [(f"batch -j {j}", ["-j", str(j)]) for j in args.jobs]
        settings.append(("batch (default -j)", []))
        for label, extra in settings:
            dst = Path(tmp) / "dst"
            shutil.rmtree(dst, ignore_errors=True)
            seconds = _timed([*aec, "batch", str(src), str(dst), "-q", str(args.quality), *extra])
            made = len(list(dst.rglob("*.aec")))
            if made != len(files):
                raise SystemExit(f"{label}: made {made} of {len(files)} files")
            rows.append((label, len(files), seconds, total_mb))
        subset = files[:: max(1, len(files) // args.loop_files)][: args.loop_files]
        loop_dir = Path(tmp) / "loop"
        loop_dir.mkdir()
        start = time.perf_counter()
        for index, path in enumerate(subset):
            out = loop_dir / f"{index}.aec"
            subprocess.run([*aec, "encode", str(path), "-o", str(out), "-q", str(args.quality)], check=True)
        seconds = time.perf_counter() - start
        subset_mb = sum(f.stat().st_size for f in subset) / 1e6
        rows.append(("shell loop of encode", len(subset), seconds, subset_mb))

    print(f"{len(files)} images ({total_mb:.1f} MB: Kodak PNG and BSDS500 JPEG), -q {args.quality:g}")
    print(f"{'run':24} {'files':>6} {'seconds':>8} {'images/s':>9} {'MB/s':>7}")
    for label, count, seconds, mb in rows:
        print(f"{label:24} {count:6d} {seconds:8.1f} {count / seconds:9.2f} {mb / seconds:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
