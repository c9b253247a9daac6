"""Hostile input and faults: malformed .aec files, image bombs, malicious models, full disks, kills.

Every malformed input must end in aecompress's own error (one line, exit 1 at the CLI), quickly,
in bounded memory, without writing an output. The fuzz counts are printed in the pytest summary.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import resource
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from aecompress import codec
from aecompress import format as aecformat
from aecompress.cli import app
from aecompress.errors import AecError, LimitError, ModelError
from aecompress.imageio import ImageData, read_image
from aecompress.modelfile import load_model, weights_hash
from tests import conftest, fuzzing
from tests.conftest import FACTORIZED, REPO, make_model, photo_like

runner = CliRunner()


@pytest.fixture(scope="module")
def samples(models_dir: Path) -> list[bytes]:
    """Real files from the tiny test model (module-scoped, so the models folder is set here)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AECOMPRESS_MODELS", str(models_dir))
        return fuzzing.sample_files()


def _only_own_errors(data: bytes) -> None:
    report = fuzzing.Report()
    fuzzing.check("hypothesis", data, report)
    assert not report.bugs, report.bugs


# --- malformed .aec files --------------------------------------------------------------------------


def test_seeded_fuzz_suite_ends_every_case_in_our_own_errors():
    report = fuzzing.run(fuzzing.standard_cases(seed=1, random_count=400, flips=300, havoc=1000))
    conftest.FUZZ_REPORTS.append("seeded suite: " + report.line())
    assert not report.bugs, report.bugs[:10]
    assert report.cases > 5000
    for kind in ("truncated", "header bit flip", "payload bit flip", "havoc", "random bytes"):
        assert report.kinds[kind] > 0
    assert report.outcomes["BUG"] == 0
    assert report.peak_bytes < fuzzing.MEMORY_LIMIT_B


def test_the_long_fuzz_command_runs_from_a_fresh_process(tmp_path: Path):
    """``python -m tests.fuzzing`` (docs/development.md) makes its own tiny models, the hyperprior
    that the sample files need included, and exits 0 when no case is a bug."""
    env = {k: v for k, v in os.environ.items() if k != "AECOMPRESS_MODELS"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzzing", "--cases", "30", "--seed", "3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "0 bugs" in proc.stdout and "havoc" in proc.stdout


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=4096))
def test_hypothesis_random_bytes(data: bytes):
    _only_own_errors(data)
    _only_own_errors(aecformat.SIGNATURE + data)


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(0, 2), position=st.integers(0, 10**6), value=st.integers(0, 255), fix_crc=st.booleans()
)
def test_hypothesis_byte_edits(which: int, position: int, value: int, fix_crc: bool):
    sample = _SAMPLES[which]
    data = bytearray(sample)
    data[position % len(data)] = value
    out = bytes(data)
    if fix_crc and position % len(data) < fuzzing.header_end(sample) - 4:
        out = fuzzing.with_header(out, lambda head: None)
    _only_own_errors(out)


_SAMPLES: list[bytes] = []


@pytest.fixture(autouse=True, scope="module")
def _samples_for_hypothesis(samples: list[bytes]) -> None:
    _SAMPLES[:] = samples


def _hostile_files(samples: list[bytes]) -> dict[str, bytes]:
    sample = samples[1]
    cases = {f"cut{cut}": sample[:cut] for cut in range(0, len(sample), 7)}
    cases |= {f"lie{i}": data for i, (_, data) in enumerate(fuzzing.lying_headers(sample))}
    cases |= {f"bomb{i}": data for i, (_, data) in enumerate(fuzzing.zstd_bombs(samples[0]))}
    return cases


def test_cli_decode_and_info_fail_in_one_line_without_output(tmp_path: Path, samples: list[bytes]):
    cases = _hostile_files(samples)
    for name, data in cases.items():
        bad = tmp_path / f"{name}.aec"
        bad.write_bytes(data)
        out = tmp_path / f"{name}.png"
        for args in (["decode", str(bad), "-o", str(out)], ["info", str(bad)]):
            result = runner.invoke(app, args)
            if args[0] == "info" and result.exit_code == 0:
                aecformat.unpack(data)  # info may describe a parseable header; it inflates nothing
                continue
            assert result.exit_code == 1, (name, args, result.output)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("aecompress: error:"), (name, result.stderr)
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".aec")]
    conftest.FUZZ_REPORTS.append(f"CLI decode + info: {len(cases)} hostile files, each exit 1 in one line")


_HWM_PROBE = """
import os, sys
from aecompress.cli import app
try:
    app()  # the app, not main(): main() leaves through os._exit, past this finally
finally:
    with open("/proc/self/status") as status:
        peak = next(line for line in status if line.startswith("VmHWM")).split()[1]
    with open(os.environ["AEC_HWM_FILE"], "w") as out:
        out.write(peak)
"""


def _peak_rss_kb(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[int, int, bytes]:
    """Exit status, peak RSS (VmHWM, KB) and stderr of one CLI run in a fresh process.

    VmHWM belongs to the process's own address space; ru_maxrss would also count the pytest
    process it was forked from.
    """
    hwm = tmp_path / "hwm.txt"
    proc = subprocess.run(
        [sys.executable, "-c", _HWM_PROBE, *args], env={**env, "AEC_HWM_FILE": str(hwm)}, capture_output=True
    )
    return proc.returncode, int(hwm.read_text()), proc.stderr


@pytest.mark.slow
def test_bombs_do_not_raise_peak_memory(tmp_path: Path, samples: list[bytes], models_dir: Path):
    env = {**os.environ, "AECOMPRESS_MODELS": str(models_dir)}
    good = tmp_path / "good.aec"
    good.write_bytes(samples[0])
    code, baseline, _ = _peak_rss_kb(["decode", str(good), "-o", str(tmp_path / "good.png")], env, tmp_path)
    assert code == 0
    for i, (kind, data) in enumerate(fuzzing.zstd_bombs(samples[0])):
        bomb = tmp_path / f"bomb{i}.aec"
        bomb.write_bytes(data)
        code, peak, err = _peak_rss_kb(
            ["decode", str(bomb), "-o", str(tmp_path / f"bomb{i}.png")], env, tmp_path
        )
        assert code == 1 and err.startswith(b"aecompress: error:"), (kind, err)
        assert peak - baseline < 32 * 1024, (kind, peak, baseline)
        conftest.FUZZ_REPORTS.append(
            f"{kind}: peak RSS {peak / 1024:.0f} MB (normal decode {baseline / 1024:.0f} MB)"
        )


def test_decode_bomb_is_refused_until_the_limit_is_raised(tmp_path: Path, samples: list[bytes]):
    bomb = dict(fuzzing.zstd_bombs(samples[0]))["valid header of 2^30 pixels (a decode bomb)"]
    with pytest.raises(LimitError):
        codec.decode(bomb, "cpu")
    path = tmp_path / "bomb.aec"
    path.write_bytes(bomb)
    result = runner.invoke(app, ["decode", str(path), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "--max-pixels" in result.stderr
    raised = runner.invoke(
        app, ["decode", str(path), "-o", str(tmp_path / "x.png"), "--max-pixels", str(2**31)]
    )
    assert raised.exit_code == 1 and "--max-pixels" not in raised.stderr  # now it fails on the payload
    assert not (tmp_path / "x.png").exists()


# --- hostile images --------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels, with almost no data behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def test_image_bomb_is_refused_with_a_flag_to_raise_the_limit(tmp_path: Path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_bomb(100_000, 100_000))
    with pytest.raises(LimitError):
        read_image(bomb)
    result = runner.invoke(app, ["encode", str(bomb)])
    assert result.exit_code == 1 and "--max-pixels" in result.stderr and "10,000,000,000" in result.stderr
    small = tmp_path / "small.png"
    Image.fromarray(photo_like(20, 30), "RGB").save(small)
    refused = runner.invoke(app, ["encode", str(small), "--max-pixels", "500"])
    assert refused.exit_code == 1 and "over the limit of 500" in refused.stderr
    allowed = runner.invoke(app, ["encode", str(small), "--max-pixels", "600"])
    assert allowed.exit_code == 0, allowed.output
    assert not (tmp_path / "bomb.png.aec").exists()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_and_corrupt_images_give_a_clear_error(tmp_path: Path, fmt: str):
    buf = io.BytesIO()
    Image.fromarray(photo_like(64, 64), "RGB").save(buf, format=fmt)
    whole = buf.getvalue()
    rng = random.Random(0)
    cases = {"truncated": whole[: len(whole) // 2], "header only": whole[:40]}
    garbled = bytearray(whole)
    for _ in range(200):
        garbled[rng.randrange(16, len(garbled))] = rng.randrange(256)
    cases["garbled"] = bytes(garbled)
    for name, data in cases.items():
        path = tmp_path / f"{name}.{fmt.lower()}"
        path.write_bytes(data)
        result = runner.invoke(app, ["encode", str(path)])
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            fmt,
            name,
            result.exception,
        )
        if name != "garbled":  # a decoder may accept garbled pixel data: that is an image, not an error
            assert result.exit_code == 1, (fmt, name, result.output)
        if result.exit_code != 0:
            assert result.stderr.startswith("aecompress: error:") and len(result.stderr.splitlines()) == 1
            assert not Path(str(path) + ".aec").exists()
    with pytest.raises(AecError, match=r"damaged|not an image"):
        read_image(cases["truncated"])


# --- hostile model files ---------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(photo_like(32, 32), "RGB").save(path)
    return path


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_model_file_that_would_run_code_is_refused(tmp_path: Path):
    marker = tmp_path / "pwned"
    evil_zip = tmp_path / "evil.pt"
    torch.save({"kind": "aecompress-model", "version": 1, "payload": _Evil(marker)}, evil_zip)
    evil_pickle = tmp_path / "evil2.pt"
    evil_pickle.write_bytes(pickle.dumps({"kind": "aecompress-model", "payload": _Evil(marker)}))
    for path in (evil_zip, evil_pickle):
        with pytest.raises(ModelError):
            load_model(path)
        result = runner.invoke(app, ["encode", str(_image(tmp_path)), "--model", str(path), "-f"])
        assert result.exit_code == 1 and "not a loadable aecompress model" in result.stderr
    assert not marker.exists()


def _doctored_model(path: Path, edit) -> Path:
    """A model file written the way save_model does, after an edit to its payload."""
    make_model(path, "doctored")
    payload = torch.load(path, weights_only=True)
    edit(payload)
    payload["weights_hash"] = weights_hash(payload["state_dict"]).hex()
    torch.save(payload, path)
    return path


def test_models_with_wrong_shapes_unknown_arch_or_lying_config_are_refused(tmp_path: Path):
    def wrong_shape(payload):
        key = next(iter(payload["state_dict"]))
        payload["state_dict"][key] = torch.zeros(3, 3, dtype=torch.float16)

    def unknown_arch(payload):
        payload["arch"] = "nonesuch"

    def giant_config(payload):
        payload["config_json"] = json.dumps({"channels": 10**7, "latent_channels": 100})

    def config_not_a_dict(payload):
        payload["config_json"] = json.dumps([1, 2, 3])

    for edit, message in [
        (wrong_shape, "do not fit"),
        (unknown_arch, "unknown architecture"),
        (giant_config, "do not fit"),
        (config_not_a_dict, "not a mapping"),
    ]:
        path = _doctored_model(tmp_path / f"{edit.__name__}.pt", edit)
        with pytest.raises(ModelError, match=message):
            load_model(path)
        result = runner.invoke(app, ["encode", str(_image(tmp_path)), "--model", str(path), "-f"])
        assert result.exit_code == 1 and message in result.stderr, result.stderr


def test_a_bad_file_among_the_models_does_not_stop_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "models"
    folder.mkdir()
    make_model(folder / "default.pt", "default")
    good = codec.encode(ImageData(photo_like(24, 24), None, "RGB"), device="cpu").data
    (folder / "aaa-broken.pt").write_bytes(b"garbage")
    monkeypatch.setenv("AECOMPRESS_MODELS", str(folder))
    shutil.move(folder / "default.pt", folder / "renamed.pt")  # found by hash, after the broken one
    assert codec.decode(good, "cpu").width == 24
    listing = runner.invoke(app, ["models"])
    assert listing.exit_code == 0 and "unreadable" in listing.stdout and "renamed" in listing.stdout


# --- faults: full disk, read-only folder, concurrent runs -------------------------------------------


def _limited_encode(src: Path, out: Path, models: Path, limit: int) -> subprocess.CompletedProcess[bytes]:
    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "AECOMPRESS_MODELS": str(models), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "aecompress", "encode", str(src), "-o", str(out), "-f", "-q", "100"],
        env=env,
        capture_output=True,
        preexec_fn=limit_file_size,
        timeout=120,
    )


def test_full_disk_keeps_the_old_output_and_the_input(tmp_path: Path, models_dir: Path):
    src = tmp_path / "big.png"
    Image.fromarray(photo_like(256, 256), "RGB").save(src)
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    probe = tmp_path / "probe.aec"
    assert _limited_encode(src, probe, models_dir, 10**9).returncode == 0
    size = probe.stat().st_size
    probe.unlink()
    out = tmp_path / "big.aec"
    out.write_bytes(b"old contents")
    result = _limited_encode(src, out, models_dir, size // 2)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "cannot write" in lines[0] and "too large" in lines[0], lines
    assert out.read_bytes() == b"old contents"
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.aec", "big.png"]
    assert _limited_encode(src, out, models_dir, 10**9).returncode == 0
    assert out.read_bytes().startswith(aecformat.SIGNATURE)


def _make_read_only(folder: Path) -> bool:
    """Read-only even for root (chattr +i); False where that cannot be done here."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return True
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


def _undo_read_only(folder: Path) -> None:
    if os.geteuid() != 0:
        folder.chmod(0o755)
    else:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)


def test_read_only_folder_gives_a_clear_error_and_keeps_files(tmp_path: Path):
    src = _image(tmp_path)
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "img.png.aec").write_bytes(b"old")
    if not _make_read_only(folder):
        pytest.skip("cannot make a read-only folder here (root without chattr)")
    try:
        for args in (
            ["encode", str(src), "-o", str(folder / "new.aec")],
            ["encode", str(src), "-o", str(folder / "img.png.aec"), "-f"],
        ):
            result = runner.invoke(app, args)
            assert result.exit_code == 1, result.output
            assert result.stderr.startswith("aecompress: error:") and len(result.stderr.splitlines()) == 1
        assert sorted(p.name for p in folder.iterdir()) == ["img.png.aec"]
        assert (folder / "img.png.aec").read_bytes() == b"old"
    finally:
        _undo_read_only(folder)


@pytest.mark.slow
def test_two_batch_runs_on_one_destination_leave_whole_files(tmp_path: Path, models_dir: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(24):
        path = src / f"d{i % 4}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo_like(96, 128, seed=i), "RGB").save(path)
    env = {**os.environ, "AECOMPRESS_MODELS": str(models_dir)}
    cmd = [sys.executable, "-m", "aecompress", "--quiet", "batch", str(src), str(dst), "-j", "1", "-f"]
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    outputs = sorted(dst.rglob("*.aec"))
    assert len(outputs) == 24
    for path in outputs:
        codec.decode(path.read_bytes(), "cpu")
    assert not [p for p in dst.rglob("*") if p.is_file() and not p.name.endswith(".aec")]


# --- determinism -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny", "bundled"])
def test_same_input_gives_identical_bytes_across_runs_and_thread_counts(model: str):
    chosen = None if model == "tiny" else FACTORIZED
    images = [ImageData(photo_like(120, 200, seed=s), None, "RGB") for s in range(2)]
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, max(2, threads), 1):
            torch.set_num_threads(n)
            runs.append([codec.encode(im, chosen, 75, "cpu").data for im in images])
    finally:
        torch.set_num_threads(threads)
    assert runs[0] == runs[1] == runs[2]
    if model == "bundled":  # a trained model codes different images differently: the check has teeth
        assert len({hashlib.sha256(d).digest() for d in runs[0]}) == len(images)


def test_fuzz_generators_make_what_they_claim(samples: list[bytes]):
    import zstandard

    sample = samples[0]
    fixed = aecformat._FIXED
    start = len(aecformat.SIGNATURE) + 5
    lied = fuzzing.set_field(sample, "height", 700)
    before, after = fixed.unpack_from(sample, start), fixed.unpack_from(lied, start)
    assert after[1] == 700 and before[:1] + before[2:] == after[:1] + after[2:]
    with pytest.raises(aecformat.FormatError, match="latent grid"):
        aecformat.unpack(lied)  # the CRC was recomputed: the lie reaches the geometry check
    legacy = samples[-1]
    assert aecformat.unpack(legacy).header.version < aecformat.TENSOR_VERSION
    bombs = dict(fuzzing.zstd_bombs(legacy))
    latn = aecformat.unpack(bombs["zstd bomb declaring the expected size"]).latents
    assert zstandard.frame_content_size(latn) == aecformat.unpack(legacy).header.latent_bytes
    assert len(latn) < 64 << 10  # a few KB that hold 64 MB
    bombs = dict(fuzzing.zstd_bombs(sample))
    real = aecformat.unpack(sample).tensors[0]
    bomb = aecformat.unpack(bombs["stream bomb declaring its stream's size"]).tensors[0]
    assert bomb.raw_sizes == real.raw_sizes and bomb.frames[1:] == real.frames[1:]
    inflated = zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS).decompressobj()
    assert len(inflated.decompress(bomb.frames[0])) == 64 << 20 and len(bomb.frames[0]) < 64 << 10
    lies = dict(fuzzing.tensor_table_lies(sample))
    assert (
        aecformat.unpack(lies["unknown scheme"]).tensors[0].scheme == 9
    )  # the table parses; decoding refuses
