"""The typed records are the contract between the writers of ``analysis.json`` and
``hmm/selection.json`` and their readers: every key a written file holds is declared, with a value of
the declared kind, so that mypy's check of each reader's keys means something."""

from __future__ import annotations

import json
import types
import typing

import pytest

from vt_core.analysis import records
from vt_core.storage.layout import layout


def _problems(value, hint, where: str) -> list[str]:
    """Where ``value`` (read from JSON) does not fit the type ``hint``."""
    origin = typing.get_origin(hint)
    if hint is typing.Any:
        return []
    if origin in (typing.Union, types.UnionType):
        options = [_problems(value, h, where) for h in typing.get_args(hint)]
        return [] if any(not p for p in options) else options[0]
    if hint is type(None) or value is None:
        return [] if value is None and hint is type(None) else [f"{where}: {value!r} where {hint} is declared"]
    if typing.is_typeddict(hint):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__} where a {hint.__name__} is declared"]
        declared = typing.get_type_hints(hint)
        out = [f"{where}.{k}: not declared in {hint.__name__}" for k in value if k not in declared]
        for k, v in value.items():
            if k in declared:
                out += _problems(v, declared[k], f"{where}.{k}")
        return out
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__} where a list is declared"]
        return [p for i, v in enumerate(value[:5]) for p in _problems(v, item, f"{where}[{i}]")]
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__} where a dict is declared"]
        return [p for k, v in list(value.items())[:5] for p in _problems(v, item, f"{where}[{k!r}]")]
    if hint is float:
        return [] if isinstance(value, (int, float)) and not isinstance(value, bool) else [f"{where}: {value!r} is no number"]
    if hint is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{where}: {value!r} is no int"]
    return [] if isinstance(value, hint) else [f"{where}: {value!r} is no {hint.__name__}"]


def _without_integrity(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "sha256"}  # added by the atomic JSON writer


def test_analysis_json_holds_what_the_record_declares(analysed_study):
    doc = _without_integrity(json.loads(layout(analysed_study).analysis.read_text()))
    assert _problems(doc, records.Analysis, "analysis") == []
    assert doc == _without_integrity(dict(records.load_analysis(analysed_study)))


def test_selection_json_holds_what_the_record_declares(analysed_study):
    doc = _without_integrity(json.loads(layout(analysed_study).selection.read_text()))
    assert _problems(doc, records.Selection, "selection") == []


def test_the_summary_keeps_the_evidence_and_the_reasons(analysed_study):
    sel = records.load_selection(analysed_study)
    summary = records.selection_summary(sel)
    assert set(summary) == set(records.SUMMARY_KEYS) | {"why_not", "bootstrap"}
    assert summary == records.load_analysis(analysed_study)["selection"]
    assert set(summary["why_not"]) == {str(t["k"]) for t in sel["table"] if t["status"] != "ok"}


@pytest.mark.parametrize("doc, problem", [
    ({"chosen_k": 3, "sevral": 1}, "analysis.sevral: not declared in Analysis"),
    ({"chosen_k": "3"}, "analysis.chosen_k: '3' is no int"),
    ({"states": [{"state": 0, "occupancy": "most"}]}, "analysis.states[0].occupancy: 'most' is no number"),
    ({"selection": {"bootstrap": {"n": None}}}, "analysis.selection.bootstrap.n: None where"),
])
def test_the_check_can_fail(doc, problem):
    assert any(p.startswith(problem) for p in _problems(doc, records.Analysis, "analysis")), \
        _problems(doc, records.Analysis, "analysis")
