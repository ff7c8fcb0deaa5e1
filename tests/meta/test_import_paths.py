"""Every ``vt_core`` import in the tree resolves, and so does every dotted ``vt_core.…`` name that
code, tests, docs and examples spell out (monkeypatch targets, ``:mod:`` references, the README's
documented import paths): a module moved without its references fails here, not in a user's hands."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess

import pytest

from tests.helpers import ROOT

TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml"}
# a dotted name that starts at vt_core (not inside a longer identifier or a path), e.g. in
# "vt_core.storage.run_store.direct" or ":func:`~vt_core.storage.layout.layout`"
DOTTED = re.compile(r"(?<![\w./-])vt_core(?:\.[A-Za-z_]\w*)+")
#: the import paths the README documents to users, kept working by short re-exports
DOCUMENTED = ["vt_core.hooks.HookPoint", "vt_core.hooks.capture", "vt_core.callbacks.pick",
              "vt_core.trajectories.analyse_trajectories", "vt_core.metrics.registry.register_metric",
              "vt_core.errors.VtError", "vt_core.open_study", "vt_core.Recorder"]


def _tracked() -> list:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / f for f in out if (ROOT / f).suffix in TEXT_SUFFIXES and (ROOT / f).exists()]


def resolves(dotted: str) -> bool:
    """Whether ``dotted`` names a module, or an attribute reachable from the longest importable
    module prefix."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        except ImportError:  # an optional framework (lightning, transformers) missing: the module exists
            return True
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                try:
                    obj = importlib.import_module(f"{obj.__name__}.{attr}")
                except (ModuleNotFoundError, AttributeError):
                    return False
            else:
                obj = getattr(obj, attr)
        return True
    return False


def _import_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] == "vt_core")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "vt_core":
            names.update(f"{node.module}.{a.name}" for a in node.names if a.name != "*")
    return names


def test_every_vt_core_import_in_the_tree_resolves():
    broken = []
    for path in _tracked():
        if path.suffix != ".py":
            continue
        for name in sorted(_import_names(ast.parse(path.read_text(), str(path)))):
            if not resolves(name):
                broken.append(f"{path.relative_to(ROOT)}: {name}")
    assert not broken, "imports that do not resolve:\n" + "\n".join(broken)


def test_every_dotted_vt_core_name_in_code_tests_and_docs_resolves():
    broken = []
    for path in _tracked():
        for name in sorted(set(DOTTED.findall(path.read_text()))):
            name = name.rstrip(".")
            if not resolves(name):
                broken.append(f"{path.relative_to(ROOT)}: {name}")
    assert not broken, "names that do not resolve:\n" + "\n".join(broken)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_documented_import_paths_keep_working(name):
    assert resolves(name), name


def test_the_resolver_can_fail():
    assert not resolves("vt_core." + "no_such_module")
    assert not resolves("vt_core.storage.layout." + "no_such_function")
    assert resolves("vt_core.storage.layout.layout")


def test_what_users_read_cites_nothing_outside_the_repository():
    """The examples, the README and docs/ name the paper or a README section, never the team's
    notes beside the checkout (REFERENCE.md, DESIGN.md), which a user does not have (issue 34)."""
    found = []
    for path in _tracked():
        rel = path.relative_to(ROOT).as_posix()
        if rel == "README.md" or rel.startswith(("examples/", "docs/")) or path.suffix == ".toml":
            for name in ("REFERENCE.md", "DESIGN.md", "STYLE.md", "../shared"):
                if name in path.read_text():
                    found.append(f"{rel}: {name}")
    assert not found, found
