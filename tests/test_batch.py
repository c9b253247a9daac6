"""aecompress batch: whole trees, incremental re-runs, failures, manifests, shards and interruption."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aecompress import batch, codec
from aecompress.cli import app
from aecompress.imageio import ImageData, read_image
from aecompress.metrics import psnr
from tests.conftest import photo_like

runner = CliRunner()
IMAGES = {
    "top.png": (40, 56, "RGB"),
    "a/one.jpg": (64, 48, "RGB"),
    "a/b/odd.png": (17, 3, "RGB"),
    "a/b/dot.png": (1, 1, "RGB"),
    "a/b/c/grey.png": (33, 21, "L"),
    "alpha/clear.png": (24, 40, "RGBA"),
}


def _write_tree(root: Path) -> dict[str, str]:
    """The test tree; returns the sha256 of every file so that tests can check inputs are untouched."""
    for rel, (h, w, mode) in IMAGES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        rgb = photo_like(h, w, seed=len(rel))
        img = Image.fromarray(rgb, "RGB")
        if mode == "L":
            img = img.convert("L")
        elif mode == "RGBA":
            img.putalpha(Image.fromarray(np.tile(np.arange(w, dtype=np.uint8) * 6, (h, 1)), "L"))
        img.save(path)
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (root / "a" / "notes.txt").write_text("not an image")
    return _hashes(root)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    src = tmp_path / "src"
    return src, _write_tree(src)


def _summary(output: str) -> dict[str, str]:
    rows = {}
    for line in output.splitlines():
        key, _, value = line.partition("  ")
        if value:
            rows[key.strip()] = value.strip()
    return rows


def test_batch_mirrors_tree_counts_failures_and_keeps_inputs(
    tree: tuple[Path, dict[str, str]], tmp_path: Path
):
    src, before = tree
    dst = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(src), str(dst), "-j", "1"])
    assert result.exit_code == 2, result.output
    rows = _summary(result.stdout)
    assert rows["done"] == str(len(IMAGES))
    assert rows["failed"] == "1"
    assert rows["not images (skipped)"] == "1"
    assert "FAILED a/broken.png" in result.stdout
    made = sorted(str(p.relative_to(dst)) for p in dst.rglob("*.aec"))
    assert made == sorted(rel + ".aec" for rel in IMAGES)
    assert not list(dst.rglob("*.tmp")) and not (dst / "a" / "broken.png.aec").exists()
    assert _hashes(src) == before


def test_rerun_skips_up_to_date_and_redoes_changed_and_forced(
    tree: tuple[Path, dict[str, str]], tmp_path: Path
):
    src, _ = tree
    dst = tmp_path / "out"
    runner.invoke(app, ["batch", str(src), str(dst), "-j", "1"])
    stamps = {p: p.stat().st_mtime_ns for p in dst.rglob("*.aec")}
    again = runner.invoke(app, ["batch", str(src), str(dst), "-j", "1"])
    rows = _summary(again.stdout)
    assert rows["done"] == "0" and rows["skipped (up to date)"] == str(len(IMAGES))
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*.aec")} == stamps
    changed = src / "top.png"
    future = time.time() + 5
    os.utime(changed, (future, future))
    third = runner.invoke(app, ["batch", str(src), str(dst), "-j", "1"])
    assert _summary(third.stdout)["done"] == "1"
    forced = runner.invoke(app, ["batch", str(src), str(dst), "-j", "1", "-f"])
    assert _summary(forced.stdout)["done"] == str(len(IMAGES))


def test_decode_restores_every_image(tree: tuple[Path, dict[str, str]], tmp_path: Path):
    src, _ = tree
    packed, restored = tmp_path / "packed", tmp_path / "restored"
    runner.invoke(app, ["batch", str(src), str(packed), "-j", "1"])
    result = runner.invoke(app, ["batch", "--decode", str(packed), str(restored), "-j", "1"])
    assert result.exit_code == 0, result.output
    for rel, (h, w, mode) in IMAGES.items():
        with Image.open(restored / rel) as img:
            assert img.size == (w, h)
            assert img.mode == mode


def test_manifest_with_verify_has_a_line_per_file(tree: tuple[Path, dict[str, str]], tmp_path: Path):
    src, _ = tree
    manifest = tmp_path / "m.jsonl"
    result = runner.invoke(
        app, ["batch", str(src), str(tmp_path / "out"), "-j", "1", "--verify", "--manifest", str(manifest)]
    )
    assert result.exit_code == 2
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(lines) == len(IMAGES) + 2
    by_status: dict[str, list[dict]] = {}
    for line in lines:
        by_status.setdefault(line["status"], []).append(line)
    assert len(by_status["done"]) == len(IMAGES)
    for line in by_status["done"]:
        assert line["bytes_out"] == Path(line["target"]).stat().st_size
        assert line["bpp"] == pytest.approx(8 * line["bytes_out"] / line["pixels"], rel=1e-4)
        original = read_image(Path(line["source"]))
        restored = codec.decode(Path(line["target"]).read_bytes(), "cpu")
        assert line["psnr"] == pytest.approx(psnr(original.rgb, restored.rgb), abs=1e-6)
    assert by_status["failed"][0]["rel"] == "a/broken.png" and by_status["failed"][0]["reason"]
    assert by_status["ignored"][0]["rel"] == "a/notes.txt"


def test_parallel_workers_match_one_worker(tree: tuple[Path, dict[str, str]], tmp_path: Path):
    src, _ = tree
    one, two = tmp_path / "one", tmp_path / "two"
    runner.invoke(app, ["batch", str(src), str(one), "-j", "1"])
    result = runner.invoke(app, ["batch", str(src), str(two), "-j", "2"])
    assert result.exit_code == 2, result.output
    assert _hashes(one) == _hashes(two)


def test_nothing_done_exits_1_and_overlap_is_refused(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "bad.png").write_bytes(b"not a png at all")
    result = runner.invoke(app, ["batch", str(src), str(tmp_path / "out"), "-j", "1"])
    assert result.exit_code == 1
    inside = runner.invoke(app, ["batch", str(src), str(src / "out")])
    assert inside.exit_code == 1 and "overlap" in inside.output
    assert not (src / "out").exists()


def test_symlinks_out_of_the_tree_are_not_followed(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.fromarray(photo_like(16, 16), "RGB").save(outside / "secret.png")
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(photo_like(16, 16, seed=3), "RGB").save(src / "real.png")
    (src / "link.png").symlink_to(outside / "secret.png")
    (src / "inner.png").symlink_to(src / "real.png")
    (src / "dir").symlink_to(outside, target_is_directory=True)
    plan = batch.scan(src, tmp_path / "out", decode=False)
    assert sorted(job.rel for job in plan.todo) == ["inner.png", "real.png"]
    assert sorted(o.reason for o in plan.ignored) == [
        "symlink out of the input tree",
        "symlinked folder (not followed)",
    ]


def test_shards_cover_every_file_exactly_once(tmp_path: Path):
    src = tmp_path / "src"
    for i in range(60):
        path = src / f"d{i % 7}" / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    everything = {job.rel for job in batch.scan(src, tmp_path / "out", False).todo}
    assert len(everything) == 60
    for n in (1, 3, 8):
        shards = [
            {job.rel for job in batch.scan(src, tmp_path / "out", False, shard=(k, n)).todo} for k in range(n)
        ]
        assert set().union(*shards) == everything
        assert sum(len(s) for s in shards) == 60
    with pytest.raises(batch.AecError):
        batch.parse_shard("3/3")
    result = runner.invoke(app, ["batch", str(src), str(tmp_path / "out"), "--shard", "x"])
    assert result.exit_code == 1 and "K/N" in result.output


def test_encode_many_matches_single_encodes():
    images = [ImageData(photo_like(48, 64, seed=s), None, "RGB") for s in range(3)]
    images.append(ImageData(photo_like(20, 30, seed=9), None, "RGB"))
    many = codec.encode_many(images, quality=60, device="cpu", batch=2)
    for image, result in zip(images, many, strict=True):
        single = codec.decode(codec.encode(image, quality=60, device="cpu").data, "cpu")
        batched = codec.decode(result.data, "cpu")
        assert psnr(single.rgb, batched.rgb) > 45


def test_encode_many_packs_on_worker_threads_the_files_of_the_sequential_path():
    """The encode pipeline: with pack threads beside the batched analysis, the files are those
    of packing one image at a time after it, in the order given, whether an image was analysed
    in its batch or (larger than a tile) alone on a worker; at -q 60 the default family's
    hand-over runs both members' analyses, the wider one past the tile."""
    images = [ImageData(photo_like(48, 64, seed=s), None, "RGB") for s in range(5)]
    images.insert(2, ImageData(photo_like(20, 30, seed=9), None, "RGB"))
    images.insert(4, ImageData(photo_like(96, 128, seed=10), None, "RGB"))
    sequential = codec.encode_many(images, quality=60, device="cpu", batch=2, tile=8, workers=1)
    piped = codec.encode_many(images, quality=60, device="cpu", batch=2, tile=8, workers=3)
    assert [r.data for r in piped] == [r.data for r in sequential]
    assert [(r.header.width, r.header.height) for r in piped] == [(i.width, i.height) for i in images]
    assert len({r.header.model_name for r in piped}) == 1  # every image placed by the same family slot


def test_batched_path_encodes_and_decodes_the_tree(tree: tuple[Path, dict[str, str]], tmp_path: Path):
    """The path a GPU takes (same-sized images through the networks together), run on the CPU."""
    src, _ = tree
    for decode, source, target in [
        (False, src, tmp_path / "packed"),
        (True, tmp_path / "packed", tmp_path / "back"),
    ]:
        plan = batch.scan(source, target, decode)
        options = batch.Options(decode=decode, device="cpu", batched=True, verify=not decode)
        outcomes: list[batch.Outcome] = []
        summary = batch.run(plan, options, 1, outcomes.append)
        assert summary.done == len(IMAGES), [o.reason for o in outcomes if o.status == "failed"]
        assert summary.failed == (0 if decode else 1)
        if not decode:
            assert all(o.psnr is not None for o in outcomes if o.status == "done")
    for rel, (h, w, mode) in IMAGES.items():
        with Image.open(tmp_path / "back" / rel) as img:
            assert img.size == (w, h) and img.mode == mode


def test_decode_many_matches_single_decodes(tmp_path: Path):
    images = [ImageData(photo_like(48, 64, seed=s), None, "RGB") for s in range(3)]
    images.append(ImageData(photo_like(20, 30, seed=9), np.full((20, 30), 7, np.uint8), "RGBA"))
    datas = [codec.encode(image, quality=60, device="cpu").data for image in images] + [b"junk"]
    many = codec.decode_many(datas, "cpu", batch=2)
    assert isinstance(many[-1], batch.AecError)
    for data, restored in zip(datas[:-1], many[:-1], strict=True):
        single = codec.decode(data, "cpu")
        assert isinstance(restored, ImageData)
        assert psnr(single.rgb, restored.rgb) > 45
        assert restored.mode == single.mode
        assert (restored.alpha is None) == (single.alpha is None)


def _big_tree(root: Path, count: int) -> None:
    for i in range(count):
        path = root / f"g{i % 3}" / f"p{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo_like(192, 256, seed=i), "RGB").save(path)


def _start(src: Path, dst: Path, models: Path, jobs: int = 1) -> subprocess.Popen:
    env = {**os.environ, "AECOMPRESS_MODELS": str(models)}
    cmd = [sys.executable, "-m", "aecompress", "batch", str(src), str(dst), "-j", str(jobs)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_outputs(dst: Path, proc: subprocess.Popen, at_least: int) -> None:
    deadline = time.time() + 120
    while len(list(dst.rglob("*.aec"))) < at_least:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.time() < deadline
        time.sleep(0.02)


def _all_whole(dst: Path) -> int:
    outputs = list(dst.rglob("*.aec"))
    for path in outputs:
        codec.decode(path.read_bytes(), "cpu")
    return len(outputs)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "jobs"), [(signal.SIGINT, 1), (signal.SIGINT, 2), (signal.SIGKILL, 1)])
def test_interrupted_run_leaves_whole_files_and_rerun_completes(
    tmp_path: Path, models_dir: Path, sig: int, jobs: int
):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _big_tree(src, 40)
    proc = _start(src, dst, models_dir, jobs)
    _wait_for_outputs(dst, proc, 3)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    written = _all_whole(dst)
    assert 3 <= written < 40
    if sig == signal.SIGINT:
        assert not list(dst.rglob("*.tmp"))
    rerun = _start(src, dst, models_dir)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()
    rows = _summary(out.decode())
    assert int(rows["done"]) == 40 - written and int(rows["skipped (up to date)"]) == written
    assert _all_whole(dst) == 40
    assert not list(dst.rglob("*.tmp"))
