"""The code's shape, checked: no import cycle in vt_core, no Prefect in vt_core, modules and
functions small, lint and types clean (issue "One module per stage")."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT

PACKAGES = ("vt_core", "tasks", "flows")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules(package: str) -> dict[str, ast.Module]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """vt_core modules that ``name`` imports anywhere (top level or inside functions)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            if t in known and t != name:
                found.add(t)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package):
    """No cycle between modules, function-level imports included (``flows/cli.py`` and
    ``flows/import_cli.py`` once imported each other)."""
    mods = _modules(package)
    known = set(mods)
    # a package imports its submodules' names through __init__; edges into a package count
    graph = {n: {m for m in _imports(n, t, known) if not n.startswith(m + ".")} for n, t in mods.items()}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_a_cycle_is_found():
    """The walker itself can fail: a planted cycle is reported."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_vt_core_never_imports_prefect():
    for name, tree in _modules("vt_core").items():
        for node in ast.walk(tree):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(m == "prefect" or m.startswith("prefect.") for m in mods), f"{name} imports prefect"


def test_modules_and_functions_are_small():
    too_long = []
    for package in PACKAGES:
        for name, tree in _modules(package).items():
            lines = max((getattr(n, "end_lineno", 0) or 0) for n in ast.walk(tree)) if tree.body else 0
            if lines > MAX_MODULE_LINES:
                too_long.append(f"module {name}: {lines} lines")
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        too_long.append(f"{name}.{node.name}: {n} lines")
    assert not too_long, "over the size limits:\n" + "\n".join(too_long)


def test_environment_switches_are_read_at_the_edge_only():
    """VT_* switches are read by vt_core.runtime alone and passed down as a Runtime."""
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "runtime.py":
                continue
            text = path.read_text()
            for switch in ("VT_WRITER", "VT_GROUP_ASYNC"):
                assert f'"{switch}' not in text, f"{path} reads {switch}; use vt_core.runtime.Runtime"


def _tool(name: str) -> list[str]:
    if shutil.which(name, path=str(ROOT / ".venv" / "bin")) or shutil.which(name):
        return [sys.executable, "-m", name]
    pytest.skip(f"{name} is not installed (make venv installs it with the test extras)")
    return []


def test_ruff_is_clean():
    cmd = _tool("ruff") + ["check", "vt_core", "tasks", "flows", "tests", "benchmarks", "deployments", "examples"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_mypy_is_clean():
    res = subprocess.run(_tool("mypy"), cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
