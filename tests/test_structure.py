"""The package's shape, as docs/development.md describes it: no import cycles, short functions, typed
coder interfaces, every module named in the guide."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "aecompress"
MAX_BODY_LINES = 80


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports, at any depth of its code (lazy imports count:
    a cycle through a function-level import is still a cycle)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        out |= {t for t in targets if t in modules and t != name}
    return out


def test_no_import_cycles_inside_the_package() -> None:
    modules = _modules()
    graph = {
        name: _imports(path, name, modules) - _type_checking_only(path) for name, path in modules.items()
    }
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def _type_checking_only(path: Path) -> set[str]:
    """Modules imported only for annotations (under ``if TYPE_CHECKING:``): no run-time edge."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module:
                    out |= {inner.module, *(f"{inner.module}.{a.name}" for a in inner.names)}
    return out


def test_no_function_body_in_the_package_is_over_80_lines() -> None:
    """Counted from the first statement of the body to the last (a command's Typer option
    declarations sit in its signature, so they do not count)."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                body = node.body
                first = body[1] if len(body) > 1 and isinstance(body[0], ast.Expr) else body[0]  # docstring
                lines = (body[-1].end_lineno or 0) - first.lineno + 1
                if lines > MAX_BODY_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_coder_interfaces_are_typed_without_any() -> None:
    source = (PACKAGE / "latents.py").read_text(encoding="utf-8")
    assert not re.search(r"\bAny\b", source)
    tree = ast.parse(source)
    protocols = [n.name for n in tree.body if isinstance(n, ast.ClassDef) and "Protocol" in ast.unparse(n)]
    assert {"LatentCoder", "SideInformation"} <= set(protocols)


def test_the_development_guide_names_every_module() -> None:
    guide = (REPO / "docs" / "development.md").read_text(encoding="utf-8")
    for name, path in _modules().items():
        if path.name == "__init__.py" and name != "aecompress.nn":
            continue
        shown = str(path.relative_to(REPO)) if path.name != "__init__.py" else "aecompress/nn/"
        assert f"`{shown}`" in guide or f"`{path.name}`" in guide, f"{shown} is not in docs/development.md"
