"""The wings of vt_core and the direction of their imports, as the map in ``vt_core/__init__.py``
draws them: a module imports only from its own wing, from the wings below it, and from the leaves
(checked on every import, top level or inside a function). The map is read from the docstring
itself, so the picture a newcomer reads and the rule the suite enforces cannot drift apart."""

from __future__ import annotations

import ast
import re

import pytest

from tests.helpers import ROOT
from tests.meta.test_structure import _modules

MAP = re.compile(r"^ {4}(\w+(?: \w+)*)\s{2,}", re.M)


def wing_rows() -> list[list[str]]:
    """The wings, top to bottom, from the map in vt_core's docstring (``public`` at the top,
    ``ground`` at the bottom)."""
    doc = ast.get_docstring(ast.parse((ROOT / "vt_core" / "__init__.py").read_text())) or ""
    table = doc.split("::", 1)[1].split("\n\n", 2)[1]
    return [m.group(1).split() for m in MAP.finditer(table)]


def leaves() -> set[str]:
    doc = ast.get_docstring(ast.parse((ROOT / "vt_core" / "__init__.py").read_text())) or ""
    found = re.search(r"^Leaves.*?(?:\n\n|\Z)", doc, re.M | re.S)
    assert found, "the map names the leaves"
    return {f"vt_core.{n}" for n in re.findall(r"``([\w.]+)``", found.group(0))}


def _rank(rows: list[list[str]]) -> dict[str, int]:
    return {wing: i for i, row in enumerate(rows) for wing in row}


def wing_of(module: str, rank: dict[str, int], ground: list[str]) -> str:
    """``vt_core.storage.study`` -> ``storage``; the package's own ``__init__`` and its top-level
    modules that are not ground (documented re-exports) -> ``public``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "public"
    if parts[1] in rank and parts[1] not in ground:
        return parts[1]
    return "ground" if parts[1] in ground else "public"


def _targets(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """Every vt_core module ``name`` imports, anywhere in it (``import vt_core`` included)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] == "vt_core" and t != name)
    return found


def violations(modules: dict[str, ast.Module], rows: list[list[str]], leaf_modules: set[str]) -> list[str]:
    rank = _rank(rows)
    ground = rows[-1][1:] if rows[-1][0] == "ground" else []
    rank.update({g: rank["ground"] for g in ground})
    known = set(modules)
    out = []
    for name, tree in modules.items():
        src = wing_of(name, rank, ground)
        for target in sorted(_targets(name, tree, known)):
            if target in leaf_modules:
                continue
            dst = wing_of(target, rank, ground)
            if dst == src:
                continue
            if rank[dst] < rank[src] or (rank[dst] == rank[src] and dst != src):
                out.append(f"{name} ({src}) imports {target} ({dst})")
    return out


def test_the_map_lists_every_wing_once():
    rows = wing_rows()
    flat = [w for row in rows for w in row]
    assert flat[0] == "public" and rows[-1][0] == "ground", rows
    assert len(flat) == len(set(flat)), flat
    packages = {p.name for p in (ROOT / "vt_core").iterdir() if (p / "__init__.py").exists()}
    packages -= {"callbacks"}  # a documented import path, re-exported (public)
    assert packages == set(flat) - {"public", "ground"} - set(rows[-1]), (packages, flat)
    ground = set(rows[-1][1:])
    top_modules = {p.stem for p in (ROOT / "vt_core").glob("*.py")} - {"__init__"}
    assert ground <= top_modules, ground - top_modules


def test_imports_point_down_the_wings():
    found = violations(_modules("vt_core"), wing_rows(), leaves())
    assert not found, "imports against the map in vt_core/__init__.py:\n" + "\n".join(found)


def test_leaves_import_only_ground():
    rows = wing_rows()
    ground = {f"vt_core.{g}" for g in rows[-1][1:]}
    mods = _modules("vt_core")
    for leaf in leaves():
        assert leaf in mods, leaf
        assert _targets(leaf, mods[leaf], set(mods)) <= ground | {"vt_core." + leaf.split(".")[1]}, leaf


def test_ground_imports_only_ground():
    rows = wing_rows()
    ground = {f"vt_core.{g}" for g in rows[-1][1:]}
    mods = _modules("vt_core")
    for g in ground:
        assert _targets(g, mods[g], set(mods)) <= ground, g


@pytest.mark.parametrize("source, target, bad", [
    ("vt_core.storage.study", "vt_core.analysis.hmm", True),     # up
    ("vt_core.analysis.hmm", "vt_core.storage.study", False),    # down
    ("vt_core.metrics.store", "vt_core", True),                  # the package root is public
    ("vt_core.config.study_config", "vt_core.metrics.registry", False),  # a leaf
    ("vt_core.models.registry", "vt_core.data", False),
    ("vt_core.data", "vt_core.models.registry", True),
    ("vt_core.errors", "vt_core.storage.layout", True),          # ground imports nothing above it
])
def test_the_rule_can_fail(source, target, bad):
    """The checker itself, on planted imports (function-level ones included)."""
    mods = {source: ast.parse(f"def f():\n    import {target}\n"), target: ast.parse("")}
    assert bool(violations(mods, wing_rows(), leaves())) is bad


def test_wings_are_small_enough_to_read():
    """At most 20 entries at the top of vt_core and 15 in any folder (issue 29: a newcomer finds a
    concern from the folder names)."""
    def entries(folder):
        return [p.name for p in folder.iterdir() if p.name != "__pycache__" and not p.name.endswith(".pyc")]

    top = ROOT / "vt_core"
    assert len(entries(top)) <= 20, sorted(entries(top))
    for folder in [p for p in top.rglob("*") if p.is_dir() and p.name != "__pycache__"]:
        assert len(entries(folder)) <= 15, (folder, sorted(entries(folder)))
