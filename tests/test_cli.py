"""The command line, through typer's CliRunner and as a real subprocess."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import aecompress
from aecompress import format as aecformat
from aecompress import precision
from aecompress.cli import app
from tests.conftest import REPO, make_model, photo_like

runner = CliRunner()


def _png(path: Path, h: int = 40, w: int = 56, seed: int = 0) -> Path:
    Image.fromarray(photo_like(h, w, seed)).save(path)
    return path


def _invoke(*args: str) -> object:
    return runner.invoke(app, list(args))


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_help_and_version() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    for command in ("encode", "decode", "info", "train", "models"):
        assert command in result.stdout
    version = _invoke("--version")
    assert version.exit_code == 0 and version.stdout.strip() == f"aecompress {aecompress.__version__}"
    # the version is the newest release in the changelog, and pip sees the same one
    newest = re.search(r"^## (\d+\.\d+\.\d+) ", (REPO / "CHANGELOG.md").read_text(encoding="utf-8"), re.M)
    assert newest is not None and newest.group(1) == aecompress.__version__
    assert importlib.metadata.version("aecompress") == aecompress.__version__


def test_encode_decode_default_names_keep_inputs(tmp_path: Path) -> None:
    src = _png(tmp_path / "a.png")
    before = src.read_bytes()
    assert _invoke("encode", str(src)).exit_code == 0
    assert src.read_bytes() == before
    assert (tmp_path / "a.png.aec").is_file()
    src.unlink()
    result = _invoke("decode", str(tmp_path / "a.png.aec"))
    assert result.exit_code == 0, result.stderr
    assert Image.open(tmp_path / "a.png").size == (56, 40)


def test_output_option_and_format_by_extension(tmp_path: Path) -> None:
    src = _png(tmp_path / "a.png")
    assert _invoke("encode", str(src), "-o", str(tmp_path / "x.aec"), "-q", "40").exit_code == 0
    assert _invoke("decode", str(tmp_path / "x.aec"), "-o", str(tmp_path / "x.webp")).exit_code == 0
    assert Image.open(tmp_path / "x.webp").format == "WEBP"
    assert _invoke("decode", str(tmp_path / "x.aec"), "-o", str(tmp_path / "x.jpg")).exit_code == 0
    assert Image.open(tmp_path / "x.jpg").format == "JPEG"


def test_several_inputs_into_a_folder(tmp_path: Path) -> None:
    srcs = [_png(tmp_path / f"img{i}.png", seed=i) for i in range(3)]
    out = tmp_path / "out"
    out.mkdir()
    assert _invoke("encode", *map(str, srcs), "-o", str(out)).exit_code == 0
    assert _files(out) == {"img0.png.aec", "img1.png.aec", "img2.png.aec"}
    restored = tmp_path / "restored"
    restored.mkdir()
    aecs = sorted(str(p) for p in out.iterdir())
    assert _invoke("decode", *aecs, "-o", str(restored)).exit_code == 0
    assert _files(restored) == {"img0.png", "img1.png", "img2.png"}


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    src = _png(tmp_path / "a.png")
    assert _invoke("encode", str(src)).exit_code == 0
    target = tmp_path / "a.png.aec"
    old = target.read_bytes()
    result = _invoke("encode", str(src), "-q", "10")
    assert result.exit_code == 1
    assert "already exists" in result.stderr and "-f" in result.stderr
    assert target.read_bytes() == old
    assert _invoke("encode", str(src), "-q", "10", "-f").exit_code == 0
    assert target.read_bytes() != old


def test_info_text_and_json(tmp_path: Path) -> None:
    src = _png(tmp_path / "a.png")
    _invoke("encode", str(src), "-q", "60")
    result = _invoke("info", "--json", str(tmp_path / "a.png.aec"))
    assert result.exit_code == 0
    (record,) = json.loads(result.stdout)
    assert record["width"] == 56 and record["height"] == 40
    assert record["quality"] == 60 and record["model"] == "default"
    assert record["latent_shape"] == [100, 3, 4]
    assert record["bytes"] == (tmp_path / "a.png.aec").stat().st_size
    text = _invoke("info", str(tmp_path / "a.png.aec"))
    assert "latent_shape" in text.stdout and "bpp" in text.stdout


def _corrupt_cases(good: bytes) -> dict[str, tuple[bytes, str]]:
    pos = len(aecformat.SIGNATURE)
    _, body_len = struct.unpack_from("<BI", good, pos)
    head = bytearray(good[pos : pos + 5 + body_len])
    head[0] = 9
    newer = good[:pos] + bytes(head) + struct.pack("<I", zlib.crc32(bytes(head))) + good[pos + 9 + body_len :]
    flipped = bytearray(good)
    flipped[-30] ^= 0xFF
    return {
        "truncated": (good[: len(good) // 2], "truncated"),
        "magic": (b"GIF89a" + good[6:], "magic"),
        "newer": (newer, "version 9"),
        "checksum": (bytes(flipped), "checksum"),
    }


def test_each_error_is_one_clear_line_and_exit_1_without_output(tmp_path: Path) -> None:
    src = _png(tmp_path / "a.png")
    _invoke("encode", str(src))
    good = (tmp_path / "a.png.aec").read_bytes()
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    cases: list[tuple[list[str], str]] = [
        (["encode", str(tmp_path / "text.png")], "not an image"),
        (["encode", str(tmp_path / "empty.png")], "empty"),
        (["encode", str(tmp_path / "missing.png")], "no such file"),
        (["encode", str(src), "-o", str(tmp_path / "new.aec"), "--model", "nonexistent"], "unknown model"),
        (["encode", str(src), "-o", str(tmp_path / "no" / "dir" / "x.aec")], "does not exist"),
        (["encode", str(src), "-o", str(tmp_path / "new.aec"), "--device", "tpu"], "unknown device"),
    ]
    for name, (data, message) in _corrupt_cases(good).items():
        bad = tmp_path / f"{name}.aec"
        bad.write_bytes(data)
        cases.append((["decode", str(bad)], message))
    impostor = make_model(tmp_path / "impostor.pt", "default", seed=11)
    cases.append(
        (
            ["decode", str(tmp_path / "a.png.aec"), "-o", str(tmp_path / "z.png"), "--model", str(impostor)],
            "needs model 'default'",
        )
    )
    cases.append(
        (["decode", str(tmp_path / "a.png.aec"), "-o", str(tmp_path / "z.xyz")], "cannot write .xyz")
    )
    before = _files(tmp_path)
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("aecompress: error:"), (args, result.stderr)
        assert message in lines[0], (args, lines[0])
        assert "Traceback" not in result.stderr
    assert _files(tmp_path) == before


def test_unwritable_output_folder_leaves_nothing(tmp_path: Path) -> None:
    src = _png(tmp_path / "a.png")
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    result = _invoke("encode", str(src), "-o", str(blocker / "out.aec"))
    assert result.exit_code == 1 and "does not exist" in result.stderr
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = _invoke("encode", str(src), "-o", str(locked / "out.aec"))
        assert result.exit_code == 1 and "not writable" in result.stderr
        assert list(locked.iterdir()) == []
    else:  # root may write in any folder with write permission bits: use one the kernel refuses
        sysfs = Path("/sys")
        if not sysfs.is_dir():
            pytest.skip("no /sys to refuse a write as root")
        before = set(os.listdir(sysfs))
        result = _invoke("encode", str(src), "-o", str(sysfs / "out.aec"))
        assert result.exit_code == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot write in /sys" in lines[0], result.stderr
        assert set(os.listdir(sysfs)) == before


def _run(
    *args: str, stdin: bytes | None = None, env_models: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    if env_models is not None:
        env["AECOMPRESS_MODELS"] = str(env_models)
    return subprocess.run(
        [sys.executable, "-m", "aecompress", *args], input=stdin, capture_output=True, env=env, timeout=120
    )


def test_subprocess_pipes_stdin_to_stdout(tmp_path: Path, models_dir: Path) -> None:
    png = _png(tmp_path / "a.png").read_bytes()
    enc = _run("--quiet", "encode", "-", stdin=png, env_models=models_dir)
    assert enc.returncode == 0, enc.stderr
    assert enc.stdout.startswith(aecformat.SIGNATURE) and enc.stderr == b""
    dec = _run("decode", "-", stdin=enc.stdout, env_models=models_dir)
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout.startswith(b"\x89PNG")


def test_subprocess_errors_and_debug_traceback(tmp_path: Path, models_dir: Path) -> None:
    bad = tmp_path / "bad.aec"
    bad.write_bytes(b"definitely not aec")
    plain = _run("decode", str(bad), env_models=models_dir)
    assert plain.returncode == 1
    assert plain.stderr.decode().strip() == "aecompress: error: not an .aec file (wrong magic bytes)"
    debug = _run("--debug", "decode", str(bad), env_models=models_dir)
    assert debug.returncode == 1 and b"Traceback" in debug.stderr
    assert not (tmp_path / "bad").exists()


def test_help_and_info_do_not_import_torch(tmp_path: Path, models_dir: Path) -> None:
    encoded = _invoke("encode", str(_png(tmp_path / "a.png")))
    assert encoded.exit_code == 0, encoded.stderr
    probe = (
        "import sys\n"
        "from aecompress.cli import app\n"
        "for args in (['--help'], ['info', sys.argv[1]]):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit as exc:\n"
        "        print('EXIT', exc.code or 0)\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "a.png.aec")], capture_output=True, text=True, timeout=60
    )
    lines = out.stdout.strip().splitlines()
    assert lines.count("EXIT 0") == 2 and "bpp" in out.stdout, out.stdout + out.stderr
    assert lines[-1] == "NO-TORCH", out.stdout + out.stderr
    help_run = _run("--help")
    assert help_run.returncode == 0 and b"encode" in help_run.stdout


@pytest.mark.parametrize("quality", ["-1", "101"])
def test_quality_range_is_enforced(tmp_path: Path, quality: str) -> None:
    result = _invoke("encode", str(_png(tmp_path / "a.png")), "-q", quality)
    assert result.exit_code == 2


def test_models_lists_user_models_with_their_figures(models_dir: Path) -> None:
    result = _invoke("models")
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "default" in lines and "other" in lines
    assert str(models_dir) in lines["other"]
    assert "not measured" in lines["other"]


def test_quality_is_continuous(tmp_path: Path) -> None:
    src = _png(tmp_path / "a.png")
    assert _invoke("encode", str(src), "-q", "72.5", "-o", str(tmp_path / "a.aec")).exit_code == 0
    header = aecformat.unpack((tmp_path / "a.aec").read_bytes()).header
    assert header.step == pytest.approx(2 ** ((75 - 72.5) / 25), rel=1e-6)


def test_a_custom_model_is_found_beside_the_file_without_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Encoded with --model ./mycodec.pt, decoded with no flags from another folder: the model
    beside the .aec file is found (and checked by its hash); moved away, the error says where it
    looked, in one line."""
    work = tmp_path / "work"
    work.mkdir()
    make_model(work / "mycodec.pt", "mycodec", seed=4)
    Image.fromarray(photo_like(40, 40)).save(work / "a.png")
    monkeypatch.chdir(work)
    assert runner.invoke(app, ["encode", "a.png", "--model", "./mycodec.pt"]).exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(app, ["decode", str(work / "a.png.aec"), "-o", "a.png"])
    assert result.exit_code == 0, result.output
    assert (elsewhere / "a.png").is_file()
    (work / "mycodec.pt").rename(tmp_path / "hidden.pt")
    result = runner.invoke(app, ["decode", str(work / "a.png.aec"), "-o", "b.png"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "mycodec.pt" in lines[0] and str(work) in lines[0], lines
    (tmp_path / "hidden.pt").rename(elsewhere / "mycodec.pt")  # the current folder is searched too
    assert runner.invoke(app, ["decode", str(work / "a.png.aec"), "-o", "c.png"]).exit_code == 0


@pytest.mark.parametrize(
    ("vendor", "flags", "pays"),
    [
        ("AuthenticAMD", "avx2 avx512f avx512_bf16", True),  # Zen 4: about twice float32's speed
        ("GenuineIntel", "avx512f avx512_bf16 amx_bf16 amx_tile", True),  # AMX tiles
        ("GenuineIntel", "avx512f avx512_bf16 avx512_fp16", False),  # AMX hidden: measured slower
        ("AuthenticAMD", "avx2 fma", False),  # no bfloat16 at all: emulated
        ("GenuineIntel", "avx2 avx512f", False),
    ],
)
def test_auto_precision_takes_bfloat16_only_where_it_runs_faster(vendor: str, flags: str, pays: bool) -> None:
    """'auto' follows what was measured: bfloat16 with AMX or on AMD's AVX512-BF16, float32 on
    Intel's AVX512-BF16 alone (a Kodak encode 0.36 s against 0.21 s), and wherever it is emulated."""
    from aecompress.device import _has_bf16, bf16_pays

    cpuinfo = f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: fpu {flags} sse\n"
    assert bf16_pays(cpuinfo) is pays
    assert _has_bf16(cpuinfo) is ("bf16" in flags)


def test_precision_setting_reaches_the_networks_and_both_decode_a_file_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fp32 and bf16 each run when asked for (on any one CPU 'auto' picks only one of them), and
    one file decodes under both to nearly the same pixels."""
    monkeypatch.setattr(precision, "_setting", precision._setting)  # the CLI sets it: restore it after
    src = _png(tmp_path / "a.png", 32, 48, seed=3)
    for setting, name in (("fp32", "float32"), ("bf16", "bfloat16")):
        out = tmp_path / f"{setting}.aec"
        result = _invoke("-v", "--precision", setting, "encode", str(src), "-o", str(out))
        assert result.exit_code == 0, result.stderr
        assert f"{name} (--precision {setting})" in result.stderr
    decoded = {}
    for setting in ("fp32", "bf16"):
        png = tmp_path / f"back-{setting}.png"
        result = _invoke("--precision", setting, "decode", str(tmp_path / "fp32.aec"), "-o", str(png))
        assert result.exit_code == 0, result.stderr
        decoded[setting] = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    assert np.abs(decoded["fp32"] - decoded["bf16"]).mean() < 2.0
    bad = _invoke("--precision", "fp16", "info", str(tmp_path / "fp32.aec"))
    assert bad.exit_code == 2
