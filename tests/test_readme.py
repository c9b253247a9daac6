"""The README's examples run as written: every ``sh`` and ``python`` block, in order, in a fresh
folder holding a copy of samples/ (with the tiny test models standing in for the bundled ones).

Two things are left out, and only these: ``pip install ... &&`` prefixes (the package is already
installed here) and the block that runs the test suite itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BLOCK = re.compile(r"```(sh|python)\n(.*?)```", re.DOTALL)


def _blocks() -> list[tuple[str, str]]:
    return BLOCK.findall((REPO / "README.md").read_text(encoding="utf-8"))


def test_the_readme_has_the_examples_this_test_runs() -> None:
    kinds = [kind for kind, _ in _blocks()]
    assert kinds.count("sh") >= 3 and kinds.count("python") >= 2


@pytest.mark.slow
def test_readme_examples_run_as_written(tmp_path: Path) -> None:
    shutil.copytree(REPO / "samples", tmp_path / "samples")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    for kind, code in _blocks():
        if kind == "sh":
            if "pytest" in code:
                continue  # the test command itself
            code = re.sub(r"pip install [^&]*&& ", "", code)
            proc = subprocess.run(
                ["bash", "-e", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
            )
        else:
            proc = subprocess.run(
                [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
            )
        assert proc.returncode == 0, f"{kind} block failed:\n{code}\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "parrots.png").is_file() and (tmp_path / "parrots-grey.png").is_file()
    assert (tmp_path / "samples.aec" / "parrots.png.aec").is_file()
