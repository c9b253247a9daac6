"""Every benchmark and script runs, on tiny inputs (two small images, tiny models), so that a
format or API change that breaks one fails here rather than on the day someone needs its figures.
They print tables; what is checked is that they run to the end and print the rows they promise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from aecompress import synthetic
from aecompress.modelfile import save_model
from tests.conftest import REPO, photo_like, tiny_hyperprior


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> dict[str, Path]:
    """Two small photos (and a third for validation), the tiny models and a family of two."""
    root = tmp_path_factory.mktemp("tools")
    data = root / "images"
    data.mkdir()
    for i, (h, w) in enumerate([(64, 96), (80, 64)]):
        Image.fromarray(photo_like(h, w, seed=30 + i)).save(data / f"img{i}.png")
    low = root / "hyper-low.pt"
    save_model(tiny_hyperprior(seed=1), low, "hyper-low", {"note": "test model"})
    return {"data": data, "root": root, "models": models_dir, "low": low, "high": models_dir / "hyper.pt"}


def _run(tiny: dict[str, Path], *args: str, timeout: int = 600) -> str:
    env = {**os.environ, "AECOMPRESS_MODELS": str(tiny["models"]), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, *args], cwd=tiny["root"], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _table_rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("|") and "---" not in line]


def test_entropy_reports_the_gap_for_both_coding_schemes(tiny: dict[str, Path]) -> None:
    for model in ("default", str(tiny["high"])):  # channel-context (scheme 1) and scale classes (3)
        out = _run(tiny, str(REPO / "benchmarks/entropy.py"), "--data", str(tiny["data"]), "--model", model,
                   "-q", "30", "90", "--threads", "1", "--streams")  # fmt: skip
        rows = _table_rows(out)
        assert len(rows) == 3, out  # the header and one row per -q
        assert all(cell.strip() for cell in rows[1].split("|")[1:-1]), out
        assert rows[1].rstrip(" |").endswith("%")


def test_kodak_speed_precision_effort_smoothness_and_zstd_settings_run(tiny: dict[str, Path]) -> None:
    data = str(tiny["data"])
    card = tiny["root"] / "card.json"
    card.write_text("{}")
    out = _run(tiny, str(REPO / "benchmarks/kodak.py"), "--data", data, "-q", "40", "80", "--threads", "1",
               "--card", str(card))  # fmt: skip
    assert len(_table_rows(out)) >= 3 and "kodak" in json.loads(card.read_text())
    out = _run(tiny, str(REPO / "benchmarks/speed.py"), "--data", data, "--threads", "1", "--batch", "2",
               "--workers", "2")  # fmt: skip
    assert _table_rows(out)
    out = _run(tiny, str(REPO / "benchmarks/precision.py"), "--data", data, "-q", "50", "--threads", "1")
    assert _table_rows(out)
    for model in ("default", str(tiny["high"])):  # a channel-context codec and a hyperprior
        out = _run(tiny, str(REPO / "benchmarks/parse.py"), "--data", data, "-q", "60", "--images", "2",
                   "--repeats", "1", "--model", model)  # fmt: skip
        rows = _table_rows(out)
        assert len(rows) == 2 and rows[1].count("|") == 7, out
        assert (rows[1].split("|")[5].strip() != "") == (model != "default"), out  # the split, where one is
    out = _run(tiny, str(REPO / "benchmarks/effort.py"), "--data", data, "--every", "1", "-q", "20", "40",
               "60", "80", "--efforts", "0", "2", "--model", str(tiny["high"]), "--threads", "1")  # fmt: skip
    assert len(_table_rows(out)) == 9 and "BD-rate of effort 2 against effort 0" in out, out
    out = _run(tiny, str(REPO / "benchmarks/smoothness.py"), "--data", data, "--threads", "1")
    assert "2 images (2 as photo)" in out and "largest growth" in out and "200 steps" in out, out
    out = _run(tiny, str(REPO / "benchmarks/smoothness.py"), "--data", data, "--threads", "1", "--from", "91",
               "--per-q")  # fmt: skip
    rows = _table_rows(out)
    swept = [row.split("|")[1].strip() for row in rows[1:]]
    assert "20 steps" in out and swept == [str(q) for q in range(91, 101)], out
    out = _run(tiny, str(REPO / "benchmarks/zstd_settings.py"), "--data", data, "-q", "40", "60", "20",
               "--every", "1", "--levels", "3")  # fmt: skip
    assert out.strip()
    out = _run(tiny, str(REPO / "benchmarks/ceiling.py"), "--models", str(tiny["models"] / "default.pt"),
               "--folder", data, "--images", "2", "--threads", "1")  # fmt: skip
    assert out.strip()


def test_batch_dataloading_startup_and_large_image_run(tiny: dict[str, Path]) -> None:
    data = str(tiny["data"])
    out = _run(tiny, str(REPO / "benchmarks/batch.py"), "--kodak", data, "--bsds", data, "--count", "4",
               "--loop-files", "2", "--jobs", "1")  # fmt: skip
    assert out.strip()
    out = _run(tiny, str(REPO / "benchmarks/dataloading.py"), "--data", data, "--workers", "0",
               "--batch", "2", "--rounds", "1")  # fmt: skip
    assert out.strip()
    out = _run(tiny, str(REPO / "benchmarks/startup.py"), "--image", str(tiny["data"] / "img0.png"),
               "--runs", "1", "--threads", "1")  # fmt: skip
    assert _table_rows(out)
    out = _run(tiny, str(REPO / "benchmarks/large_image.py"), "--size", "200x150", "96x64",
               "--quality", "30", "100", "--threads", "1")  # fmt: skip
    assert _table_rows(out)


def test_family_and_dictionary_scripts_build_what_they_promise(tiny: dict[str, Path]) -> None:
    family = tiny["root"] / "tiny.family.json"
    drawn = tiny["root"] / "drawn"  # two graphics and a photo: the variant calibrates on the two
    drawn.mkdir(exist_ok=True)
    for i, kind in enumerate(("comic", "screen")):
        Image.fromarray(synthetic.render(kind, 5, 96, 64)).save(drawn / f"g{i}.png")
    Image.fromarray(photo_like(64, 96, seed=9)).save(drawn / "photo.png")
    for seed, name in ((6, "hyper-g"), (7, "hyper-low-g")):
        save_model(tiny_hyperprior(seed=seed), tiny["root"] / f"{name}.pt", name, {"note": "test model"})
    _run(tiny, str(REPO / "scripts/make_family.py"), "--name", "tiny", "--members", str(tiny["low"]),
         str(tiny["high"]), "--calibration", str(tiny["data"]), "--images", "2", "--qualities", "0,50,100",
         "--threads", "1", "--variant", "graphics:0.6:hyper-low=hyper-low-g,hyper=hyper-g",
         "--variant-calibration", f"graphics={drawn}", "--out", str(family))  # fmt: skip
    built = json.loads(family.read_text())
    assert built["kind"] == "aecompress-family" and len(built["members"]) >= 1
    standins = {"hyper-low": "hyper-low-g", "hyper": "hyper-g"}  # for the members the family kept
    variant = built["variants"][0]
    assert variant["models"] == {m["model"]: standins[m["model"]] for m in built["members"]}
    own = variant["members"]
    assert own and {m["model"] for m in own} <= set(variant["models"].values())
    assert (own[0]["quality"][0], own[-1]["quality"][1]) == (0, 100)
    measured = json.loads((tiny["root"] / "tiny.graphics.calibration.json").read_text())
    assert sorted(measured) == sorted(variant["models"].values())
    assert [len(runs) for runs in measured["hyper-g"].values()] == [2, 2, 2]  # the photo left out
    # a rebuild from stored measurements (two members that both pay), the upper one fixed
    per_image = {
        "low": {"0": [[0.1, 25.0], [0.2, 26.0]], "100": [[0.5, 30.0], [0.8, 31.0]]},
        "high": {
            "0": [[0.3, 27.0], [0.4, 28.0]],
            "50": [[0.6, 31.0], [1.0, 32.0]],
            "100": [[1.2, 34.0], [2.0, 35.0]],
        },
    }
    curves = {name: [[float(q), sum(r[0] for r in runs) / 2, sum(r[1] for r in runs) / 2]
                     for q, runs in table.items()] for name, table in per_image.items()}  # fmt: skip
    stored = tiny["root"] / "two.family.json"
    stored.write_text(json.dumps({**built, "card": {"curves": curves}}))
    (tiny["root"] / "two.calibration.json").write_text(json.dumps(per_image))
    _run(tiny, str(REPO / "scripts/make_family.py"), "--name", "two", "--remeasure", "no", "--match", "1.03",
         "--fixed", "high=1.0", "--variant", "graphics:0.6:high=high-g", "--out", str(stored))  # fmt: skip
    rebuilt = json.loads(stored.read_text())
    pinned = [(m["model"], m.get("fixed_start", False)) for m in rebuilt["members"]]
    assert pinned == [("low", False), ("high", True)]
    assert rebuilt["variants"] == [{"kind": "graphics", "flat_share": 0.6, "models": {"high": "high-g"}}]
    (tiny["root"] / "two.graphics.calibration.json").write_text(json.dumps({"high-g": per_image["high"]}))
    _run(tiny, str(REPO / "scripts/make_family.py"), "--name", "two", "--remeasure", "no", "--match", "1.03",
         "--variant", "graphics:0.6:high=high-g", "--variant-calibration", "graphics=unread",
         "--out", str(stored))  # fmt: skip
    untailed = json.loads(stored.read_text())
    own = untailed["variants"][0]["members"]
    assert [(m["model"], m["quality"], m["local_quality"]) for m in own] == [("high-g", [0, 100], [0, 100])]
    _run(tiny, str(REPO / "scripts/make_family.py"), "--name", "two", "--remeasure", "no", "--match", "1.03",
         "--variant", "graphics:0.6:high=high-g", "--variant-calibration", "graphics=unread",
         "--residual-tail", "graphics=80:90-95:128-6", "--residual-tail", "95:100-100:64-4",
         "--variant-fade", "graphics=1.0", "--out", str(stored))  # fmt: skip
    tailed = json.loads(stored.read_text())
    assert tailed["variants"][0]["fade"] == 1.0 and "fade" not in tailed  # the variant's alone
    ends = [
        (m["model"], m["quality"], m["local_quality"], m.get("residual"))
        for m in tailed["variants"][0]["members"]
    ]
    assert ends == [("high-g", [0, 80], [0, 90], None), ("high-g", [80, 100], [90, 95], [128, 6])]
    _run(tiny, str(REPO / "scripts/make_family.py"), "--name", "two", "--remeasure", "no", "--match", "1.03",
         "--variant", "graphics:0.6:high=high-g", "--variant-calibration", "graphics=unread",
         "--residual-tail", "graphics=80:90-95:128-6", "--variant-handover", "graphics=70",
         "--out", str(stored))  # fmt: skip
    moved = json.loads(stored.read_text())["variants"][0]["members"]
    assert [(m["quality"], m["local_quality"]) for m in moved] == [([0, 70], [0, 90]), ([70, 100], [90, 95])]
    photo = tailed["members"]
    assert (
        photo[-1]["quality"] == [95, 100]
        and photo[-1]["residual"] == [64, 4]
        and photo[-2]["quality"][1] == 95
    )
    _run(tiny, str(REPO / "scripts/make_family.py"), "--name", "two", "--remeasure", "no", "--match", "1.03",
         "--variant", "graphics:0.6:high=high-g", "--variant-calibration", "graphics=unread",
         "--residual-tail", "95:100-100:64-16-4:last", "--out", str(stored))  # fmt: skip
    below, shrunk, *tail = json.loads(stored.read_text())["members"]
    assert below == untailed["members"][0]  # every -q below the last member's as without the tail
    assert shrunk["quality"] == [untailed["members"][1]["quality"][0], 95]
    assert [(m["quality"], m["residual"]) for m in tail] == [([95, 97.5], [64, 16]), ([97.5, 100], [16, 4])]
    high = untailed["members"][1]
    knee = round((high["quality"][0] + 95) / 2, 2)
    _run(tiny, str(REPO / "scripts/make_family.py"), "--name", "two", "--remeasure", "no", "--match", "1.03",
         "--residual-tail", f"95:100-100:64-4:last@{knee}", "--out", str(stored))  # fmt: skip
    _, kept, faster, _ = json.loads(stored.read_text())["members"]
    pace = (high["local_quality"][1] - high["local_quality"][0]) / (high["quality"][1] - high["quality"][0])
    assert kept["quality"] == [high["quality"][0], knee] and faster["quality"] == [knee, 95]
    assert (
        kept["local_quality"][1]
        == faster["local_quality"][0]
        == pytest.approx(high["local_quality"][0] + pace * (knee - high["quality"][0]))
    )  # its own pace up to the knee, then faster to its top
    out = _run(tiny, str(REPO / "benchmarks/residual.py"), "--model", str(tiny["high"]), "--data",
               str(tiny["data"]), "-q", "20", "80", "--steps", "64", "8", "--threads", "1")  # fmt: skip
    rows = _table_rows(out)[1:]
    assert len(rows) == 6  # each -q alone and with each step
    psnrs = [float(row.split("|")[4]) for row in rows]
    assert psnrs[2] > psnrs[0] and psnrs[5] > psnrs[3]  # the finer residual restores more
    tailed = json.loads(family.read_text()) | {"name": "tail"}  # the built family, a residual on its top
    tailed["members"][-1]["residual"] = [64, 4]
    tail = tiny["root"] / "tail.family.json"
    tail.write_text(json.dumps(tailed))
    out = _run(tiny, str(REPO / "benchmarks/residual_coding.py"), "--model", str(tail), "--data",
               str(tiny["data"]), "-q", "100", "--threads", "1")  # fmt: skip
    (row,) = [row.split("|") for row in _table_rows(out)[1:]]
    assert int(row[2]) == 2 and float(row[3]) > 0 and float(row[4]) > 0  # both images' residuals, each way
    assert rebuilt["match"] == 1.03 and "--fixed high=1.0" in rebuilt["card"]["rebuilt"]
    dictionaries = tiny["root"] / "set.zdict"
    _run(tiny, str(REPO / "scripts/train_dictionaries.py"), "--data", str(tiny["data"]), "--every", "1",
         "--model", str(tiny["high"]), "--size", "256", "--out", str(dictionaries))  # fmt: skip
    assert dictionaries.is_file() and dictionaries.stat().st_size > 0


def test_dead_zone_benchmark_compares_both_quantizers(tiny: dict[str, Path]) -> None:
    """benchmarks/dead_zone.py on two small images: a row per -q with both quantizers' figures,
    and a BD-rate in each metric."""
    out = _run(tiny, str(REPO / "benchmarks/dead_zone.py"), "--data", str(tiny["data"]), "--model",
               str(tiny["high"]), "-q", "20", "40", "60", "80", "--threads", "1")  # fmt: skip
    rows = _table_rows(out)
    assert len(rows) == 5, out  # the header and one row per -q
    assert out.count("BD-rate of the dead zone") == 2, out


@pytest.mark.slow
def test_fine_tuning_benchmark_runs_a_few_steps(tiny: dict[str, Path]) -> None:
    out = _run(tiny, str(REPO / "benchmarks/finetune_domain.py"), "--steps", "2", "--threads", "1",
               "--work", str(tiny["root"] / "finetune"),
               "--model", str(tiny["models"] / "default.pt"))  # fmt: skip
    assert "BD" in out or _table_rows(out)


@pytest.mark.slow
def test_training_speed_benchmark_times_eager_and_compiled_steps_of_the_same_loss(
    tiny: dict[str, Path],
) -> None:
    script = str(REPO / "benchmarks/train_speed.py")
    out = _run(tiny, script, "--model", str(tiny["high"]), "--batch", "2", "--crop", "32", "--steps", "1",
               "--precision", "fp32", "--modes", "eager", "compile")  # fmt: skip
    rows = _table_rows(out)[1:]
    assert [r.split("|")[1].strip() for r in rows] == ["eager", "compile"], out
    eager, compiled = (float(r.split("|")[4]) for r in rows)
    assert compiled == pytest.approx(eager, rel=1e-3)  # the same step, compiled


def test_every_benchmark_and_script_is_run_by_a_test() -> None:
    """A new tool must come with its tiny run: each Python file of benchmarks/ and scripts/ is named
    by a test (checkpoint.py by tests/test_train.py); the GPU shell scripts at least parse."""
    tests_text = "".join(p.read_text(encoding="utf-8") for p in (REPO / "tests").glob("test_*.py"))
    for tool in sorted([*(REPO / "benchmarks").glob("*.py"), *(REPO / "scripts").glob("*.py")]):
        assert f"{tool.parent.name}/{tool.name}" in tests_text, f"{tool} is run by no test"
    for shell in sorted((REPO / "scripts").glob("*.sh")):
        subprocess.run(["bash", "-n", str(shell)], check=True)


@pytest.mark.parametrize("model", ["hyper.pt", "ctx.pt"])
def test_gpu_check_runs_on_the_cpu_at_tiny_scale(tiny: dict[str, Path], model: str) -> None:
    """scripts/gpu_check.py, the one GPU run of issue 26, on the CPU: the integers of the golden
    files and of fresh files match (the CPU against itself here), and every rate is reported."""
    out = _run(tiny, str(REPO / "scripts/gpu_check.py"), "--data", str(tiny["data"]), "--device", "cpu",
               "--model", str(tiny["models"] / model), "--repeat", "1", "--batch", "2")  # fmt: skip
    rows = _table_rows(out)
    assert "| files whose integers match on CPU and cpu | 4 of 4 |" in rows
    assert len(rows) == 6 and all(float(r.split("|")[2]) > 0 for r in rows[2:])
