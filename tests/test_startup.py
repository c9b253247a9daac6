"""What a one-file call imports: nothing it does not use (the start-up cost a user waits for)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_loading_every_architecture_does_not_import_the_compiler_stack() -> None:
    """Building a model under the meta device once pulled in torch._dynamo (1.7 s of a 4 s call)
    through pointwise ops in GDN's and the density's initializers."""
    script = """
import sys, torch
from aecompress.modelfile import load_model, resolve
from aecompress.nn import build
load_model(resolve("default"))
with torch.device("meta"):
    for arch in ("factorized", "hyperprior", "tutorial"):
        build(arch, {})
print(sorted(k for k in ("torch._dynamo", "torchvision", "torch._inductor") if k in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
