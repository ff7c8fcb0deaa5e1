"""Code never executed from a study directory (issue 17, security): payloads planted in a copy of a
finished study, each of which would create a marker file if it ran. vt's commands on that study
may succeed or refuse (an ``error:`` line, or `vt validate`'s ``problem:`` lines), never traceback,
and the marker must never appear. Markdown that vt writes escapes the names that came from a config."""

from __future__ import annotations

import base64
import json
import pickle
import re
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from .conftest import (
    STUDY_SEEDS,
    Run,
    assert_clean,
    assert_no_traceback_logged,
    config_for,
    result_records,
    tiny_dict,
    vt,
    with_logs,
    write_toml,
)

pytestmark = [pytest.mark.timeout(600), pytest.mark.minutes]

#: module names the payloads use; none is importable except from the study or working directory
EVIL_MODULES = ("evilplugin", "evilfactory")


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker appears."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


def evil_source(marker: Path) -> str:
    return (f"import pathlib\npathlib.Path({str(marker)!r}).write_text('executed: ' + __name__)\n"
            "def make(*args, **kwargs):\n    raise SystemExit('evil factory called')\n"
            "def decode(obj):\n    return obj\n"
            "class Thing:\n    pass\n")


def plant_modules(study: Path, cwd: Path, marker: Path) -> None:
    """``evilplugin.py`` and ``evilfactory.py`` in the study directory and in the working directory."""
    for where in (study, cwd):
        for mod in EVIL_MODULES:
            (where / f"{mod}.py").write_text(evil_source(marker))


def record(serializer: dict, result: str, path: Path) -> str:
    return json.dumps({"metadata": {"storage_key": str(path), "expiration": None, "serializer": serializer,
                                    "prefect_version": metadata.version("prefect"), "storage_block_id": None},
                       "result": result})


# --- the payloads -------------------------------------------------------------------------------------


def pickle_cache_record(study: Path, cwd: Path, marker: Path) -> None:
    """(a) Prefect result files that say ``pickle`` and carry a pickle that runs code."""
    blob = base64.encodebytes(pickled(marker)).decode()
    for rec in result_records(study):
        rec.write_text(record({"type": "pickle", "picklelib": "cloudpickle", "picklelib_version": None}, blob, rec))


def json_cache_record_imports(study: Path, cwd: Path, marker: Path) -> None:
    """JSON result files whose decoder, or whose ``__class__``, names a module planted beside them."""
    plant_modules(study, cwd, marker)
    recs = result_records(study)
    for i, rec in enumerate(recs):
        if i % 2 == 0:
            ser = {"type": "json", "jsonlib": "json", "object_encoder": "evilplugin.decode",
                   "object_decoder": "evilplugin.decode", "dumps_kwargs": {}, "loads_kwargs": {}}
            result = json.dumps({"seed": STUDY_SEEDS[i % len(STUDY_SEEDS)], "status": "complete"})
        else:
            ser = {"type": "json", "jsonlib": "json", "object_encoder": "prefect.serializers.prefect_json_object_encoder",
                   "object_decoder": "prefect.serializers.prefect_json_object_decoder", "dumps_kwargs": {},
                   "loads_kwargs": {}}
            result = json.dumps({"__class__": "evilfactory.Thing", "data": {}})
        rec.write_text(record(ser, result, rec))


def forge_study_json(study: Path, edit: Callable[[dict], None]) -> None:
    """Edit study.json the way an attacker with vt installed would: rewritten with vt's own JSON
    writer, so that any checksum it carries matches (a checksum is not a signature)."""
    p = study / "study.json"
    d = json.loads(p.read_text())
    edit(d["config"])
    for key in [k for k in d if k not in ("config", "training_hash", "versions", "created", "updated")]:
        d.pop(key)  # whatever vt added to guard the document
    try:
        from vt_core.storage.location import location, write_json_atomic
    except ImportError:
        p.write_text(json.dumps(d, indent=2))
    else:
        write_json_atomic(location(str(p)), d)


def plugin_in_study_json(study: Path, cwd: Path, marker: Path) -> None:
    """(b) study.json names a metric plugin that exists only in the study and working directories."""
    plant_modules(study, cwd, marker)
    forge_study_json(study, lambda c: c["metrics"].__setitem__("plugins", ["evilplugin"]))


def factory_in_study_json(study: Path, cwd: Path, marker: Path) -> None:
    """study.json names a model factory that exists only in the study and working directories."""
    plant_modules(study, cwd, marker)
    forge_study_json(study, lambda c: c.__setitem__("model", {"name": "custom", "factory": "evilfactory:make",
                                                              "kwargs": {}}))


def pickle_in_npz(study: Path, cwd: Path, marker: Path) -> None:
    """The HMM's .npz files replaced by ones holding an object array (loading it unpickles)."""
    obj = np.empty(1, dtype=object)
    obj[0] = Payload(marker)
    for p in [study / "hmm" / "model.npz", study / "hmm" / "input.npz", *sorted((study / "hmm" / "fits").glob("*.npz"))]:
        with open(p, "wb") as f:
            np.savez(f, means=obj, X=obj, payload=obj)


def pickle_in_resume(study: Path, cwd: Path, marker: Path) -> None:
    """Resume files that unpickle a payload unless loaded with ``weights_only=True``."""
    import torch

    for seed in STUDY_SEEDS:
        torch.save({"model": Payload(marker), "optimizer": {}, "step": 0},
                   study / "runs" / f"seed={seed:04d}.resume.pt")


CHEAP = ["status", "validate", "report", "dashboard"]
FLOWS = ["analyze", "run"]
VECTORS: dict[str, tuple[Callable, list[str]]] = {
    "pickle-cache-record": (pickle_cache_record, CHEAP + FLOWS),
    "json-cache-record-names-a-module": (json_cache_record_imports, CHEAP + ["run"]),
    "plugin-in-study-json": (plugin_in_study_json, CHEAP + FLOWS),
    "factory-in-study-json": (factory_in_study_json, CHEAP),
    "pickle-in-hmm-npz": (pickle_in_npz, CHEAP),
    "pickle-in-resume-file": (pickle_in_resume, CHEAP),
}
CASES = [(v, c) for v, (_, cmds) in VECTORS.items() for c in cmds]


@pytest.fixture
def hostile_env(tmp_path, monkeypatch):
    """A working directory of its own, nothing of it on sys.path, no evil module imported yet."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(cwd))])
    for mod in EVIL_MODULES:
        sys.modules.pop(mod, None)
    yield cwd
    for mod in EVIL_MODULES:
        sys.modules.pop(mod, None)


def assert_refused_or_ok(run: Run) -> None:
    assert_clean(run)
    if run.exit_code != 0:
        lines = [ln for ln in run.output.splitlines() if ln.startswith(("error:", "problem:"))]
        assert lines, f"failed without an 'error:' (or 'problem:') line:\n{run.describe()}"


@pytest.mark.parametrize("vector,command", CASES, ids=[f"{v}-{c}" for v, c in CASES])
def test_nothing_in_a_study_directory_is_executed(vector, command, study, hostile_env, tmp_path, prefect_server,
                                                  capfd):
    marker = tmp_path / "MARKER-code-was-executed"
    plant, _ = VECTORS[vector]
    plant(study, hostile_env, marker)
    assert not marker.exists(), "test setup: planting the payload ran it"
    args = ["run", config_for(study, tmp_path)] if command == "run" else [command, study]
    capfd.readouterr()
    run = vt(*args)
    text = with_logs(run, capfd)
    assert not marker.exists(), (f"`vt {command}` executed code planted in the study directory "
                                 f"({marker.read_text()!r}):\n{run.describe()}")
    assert_refused_or_ok(run)
    assert_no_traceback_logged(run, text)


def test_the_payloads_work(tmp_path, hostile_env):
    """A test of the tests: each payload does create the marker when loaded the unsafe way."""
    marker = tmp_path / "m1"
    pickle.loads(pickled(marker))
    assert marker.exists()
    marker = tmp_path / "m2"
    obj = np.empty(1, dtype=object)
    obj[0] = Payload(marker)
    np.save(tmp_path / "x.npy", obj)
    np.load(tmp_path / "x.npy", allow_pickle=True)
    assert marker.exists()
    marker = tmp_path / "m3"
    (hostile_env / "evilplugin.py").write_text(evil_source(marker))
    sys.path.insert(0, str(hostile_env))
    try:
        __import__("evilplugin")
    finally:
        sys.path.remove(str(hostile_env))
    assert marker.exists()


# --- markdown injection ----------------------------------------------------------------------------

SVG = "<svg onload=alert(1)>"
SCRIPT = "<script>alert(2)"
METRIC = "<svg onload=alert(3)>"
EXCLUDE = "<script>alert(5)</script>*"

INJECT_MODULE = f'''
from collections import OrderedDict

from torch import nn

from vt_core.metrics.registry import register_metric


def make_net(input_shape, n_classes):
    d = 1
    for n in input_shape:
        d *= n
    return nn.Sequential(OrderedDict([("flat", nn.Flatten()), ({SVG!r}, nn.Linear(d, 16)), ({SCRIPT!r}, nn.ReLU()),
                                      ("out", nn.Linear(16, n_classes))]))


@register_metric({METRIC!r}, reads="matrix")
def evil(w, s):
    """sum of squares"""
    return (w * w).sum(axis=(-2, -1))
'''

_TAG = re.compile(r"(?<!\\)<\s*/?\s*(svg|script)\b", re.IGNORECASE)
_CODE = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def raw_tags(markdown: str) -> list[str]:
    """``<svg`` / ``<script`` tags that a markdown renderer would see as HTML: outside code spans
    and fences, not backslash-escaped (``&lt;svg`` is escaped too, and is not matched)."""
    text = _CODE.sub("", _FENCE.sub("", markdown))
    return [text[max(0, m.start() - 30): m.end() + 30] for m in _TAG.finditer(text)]


def test_raw_tags_finds_what_it_should():
    assert raw_tags(f"| {SVG} |") and raw_tags(f"x `a` {SCRIPT}") and raw_tags(f"`a`{SVG}`b`")
    assert not raw_tags(f"`{SVG}` &lt;svg \\<svg")


@pytest.fixture(scope="module")
def injected_study(tmp_path_factory, prefect_server):
    """A study whose parameter, hookpoint, metric and feature names are HTML, from a factory and a
    plugin on sys.path (an importable package, as the README documents)."""
    base = tmp_path_factory.mktemp("inject")
    pkg = base / "pkg"
    pkg.mkdir()
    (pkg / "vtfuzz_inject.py").write_text(INJECT_MODULE)
    sys.path.insert(0, str(pkg))
    try:
        # a checkpoint every 2 steps and 3 features: enough observations for k > 1, so that the
        # report explains transitions by feature; a low convergence threshold, so that it has them
        d = tiny_dict(base / "study", seeds=list(STUDY_SEEDS), training={"epochs": 8},
                      checkpoints={"every_epochs": None, "every_steps": 2})
        d["model"] = {"factory": "vtfuzz_inject:make_net"}
        d["hooks"] = {"activations": [SCRIPT], "probe_size": 8}
        d["metrics"] = {"plugins": ["vtfuzz_inject"], "names": ["l2", METRIC], "exclude": [EXCLUDE]}
        d["hmm"] = {**d["hmm"], "features": [METRIC, f"l2@{SVG}.weight", "train_loss"], "bootstrap": 0,
                    "cv_folds": 0, "convergence_threshold": 0.7}
        cfg = write_toml(d, base / "inject.toml")
        run = vt("run", cfg)
        yield base / "study", run
    finally:
        sys.path.remove(str(pkg))


def test_report_escapes_names_from_the_config(injected_study):
    study, run = injected_study
    assert_refused_or_ok(run)
    if run.exit_code != 0:
        pytest.skip(f"vt refused the HTML names with an error line: {run.output.splitlines()[-1][:200]}")
    rep = vt("report", study)
    assert_refused_or_ok(rep)
    assert not raw_tags(rep.output), f"`vt report` prints live HTML: {raw_tags(rep.output)}"
    md = study / "report.md"
    if md.exists():
        assert not raw_tags(md.read_text()), f"report.md holds live HTML: {raw_tags(md.read_text())}"
    assert rep.exit_code != 0 or md.exists()


def test_injected_names_reach_the_report(injected_study):
    """A test of the test: the hostile names do appear (escaped) in the report, so that the check
    above has something to check. Skipped when the study's analysis has no transition to explain."""
    study, run = injected_study
    if run.exit_code != 0 or not (study / "report.md").exists():
        pytest.skip("no report")
    analysis = json.loads((study / "analysis.json").read_text())
    converged = [s for s in (analysis.get("convergence_step") or {}).values() if s is not None]
    if not analysis.get("transitions") or not converged:
        pytest.skip("no converged seed or no transition: the report names no feature")
    text = (study / "report.md").read_text()
    assert "svg" in text.lower(), "the report names none of the hostile features"


def test_dashboard_does_not_break_out_of_its_scripts(injected_study):
    study, run = injected_study
    if run.exit_code != 0:
        pytest.skip("vt refused the HTML names")
    page = (study / "dashboard" / "index.html").read_text()
    for payload in ("alert(5)</script>", "</script><script>alert"):
        assert payload not in page, f"the dashboard carries {payload!r} raw: a script can be closed early"
