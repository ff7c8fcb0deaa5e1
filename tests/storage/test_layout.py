"""vt_core.storage.layout: every path under a study directory has one home."""

from __future__ import annotations

import ast

from tests.helpers import ROOT
from vt_core.storage.layout import layout, resume_path

NAMES = {"study.json", ".vt.lock", "metrics.zarr", "metrics.zarr.new", "analysis.json", "selection.json",
         "paths.json", "model.npz", "input.npz", "split.json", "index.html", "report.md", "runs", "fits",
         "dashboard/index.html", "figures", ".prefect", "results", "resume.pt", ".resume.pt"}


def test_paths_of_a_study(tmp_path):
    p = layout(tmp_path)
    assert p.study_json == tmp_path / "study.json" and p.lock == tmp_path / ".vt.lock"
    assert p.run(3) == tmp_path / "runs" / "seed=0003.zarr"
    assert p.resume(3) == tmp_path / "runs" / "seed=0003.resume.pt" == resume_path(p.run(3))
    assert p.metrics == tmp_path / "metrics.zarr" and p.metrics_rebuild == tmp_path / "metrics.zarr.new"
    assert p.fit("main-k=02-r=11", "npz") == tmp_path / "hmm" / "fits" / "main-k=02-r=11.npz"
    assert (p.hmm_input, p.hmm_split, p.selection, p.model, p.paths) == tuple(
        tmp_path / "hmm" / n for n in ("input.npz", "split.json", "selection.json", "model.npz", "paths.json"))
    assert p.analysis == tmp_path / "analysis.json" and p.dashboard == tmp_path / "dashboard" / "index.html"
    assert p.report == tmp_path / "report.md" and p.task_results == tmp_path / ".prefect" / "results"
    assert layout(p) is p and layout(str(tmp_path)).root == tmp_path


def test_urls_keep_their_scheme():
    p = layout("memory://studies/x")
    assert str(p.run(0)).endswith("studies/x/runs/seed=0000.zarr") and str(p.run(0)).startswith("memory:")


def _string_literals(tree: ast.Module):
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def test_no_other_module_spells_a_study_path():
    """File names of the study directory appear as string literals in layout.py only (messages may
    name them inside longer text)."""
    found = []
    for package in ("vt_core", "tasks", "flows"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "layout.py":
                continue
            for node in _string_literals(ast.parse(path.read_text())):
                if node.value.strip("/") in NAMES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "study paths spelled outside vt_core/storage/layout.py:\n" + "\n".join(found)
