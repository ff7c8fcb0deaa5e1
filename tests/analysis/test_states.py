"""vt_core.analysis.states: the HMM pipeline on any directory; a small study degrades and finishes."""

from __future__ import annotations

import json

import numpy as np

from vt_core.analysis.hmm import Sequences
from vt_core.analysis.states import explain, finalize, prepare, run_fits
from vt_core.config.study_config import HMMConfig


def _seqs(n_seeds: int, T: int, F: int, seed: int = 0) -> Sequences:
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=3, size=(2, F))
    vals = [means[(np.arange(T) >= T // 2).astype(int)] + rng.normal(size=(T, F)) for _ in range(n_seeds)]
    return Sequences(list(range(n_seeds)), [np.arange(T) * 5 for _ in range(n_seeds)], vals,
                     [f"m{i}" for i in range(F)])


def test_a_study_too_small_for_the_settings_finishes_and_says_what_it_gave_up(tmp_path):
    """2 seeds x 20 checkpoints x 14 features cannot support one full-covariance state with a
    held-out seed: the analysis drops the held-out seed, then the covariance, and finishes, with
    k capped and the notes recorded."""
    cfg = HMMConfig(max_states=8, covariance="full", restarts=2, bootstrap=3)
    plan = prepare(tmp_path, _seqs(2, 20, 14), cfg)
    assert plan["degraded"] and "no seeds held out" in plan["degraded"][0]
    rows = run_fits(tmp_path, plan["jobs"], cfg)
    sel = finalize(tmp_path, rows, cfg)
    a = explain(tmp_path, cfg, {0: 50, 1: None}, "small")
    assert sel["chosen_k"] >= 1 and a["selection"]["reasons"][0].startswith("too few observations")
    assert a["selection"]["k_infeasible"] and max(a["selection"]["k_tried"]) < 8


def test_undetermined_when_the_data_cannot_test_larger_k(tmp_path):
    cfg = HMMConfig(max_states=2, restarts=2, covariance="diag", bootstrap=0, cv_folds=0, extend=False)
    plan = prepare(tmp_path, _seqs(6, 30, 3, seed=1), cfg)
    finalize(tmp_path, run_fits(tmp_path, plan["jobs"], cfg), cfg)
    a = explain(tmp_path, cfg, {s: 100 for s in range(6)}, "edge")
    assert a["chosen_k"] == 2 and a["selection"]["status"] == "undetermined"


def test_fits_from_the_same_inputs_and_settings_are_reused(analysed_study, tmp_path, monkeypatch):
    """Issue 34, item 4: `vt analyze` on an analysed, unchanged study refitted every HMM (51 s on
    the demo). A fit saved from the same standardised input, split and settings is reused, with
    the same selection; changed settings or a damaged saved fit are fitted again."""
    import shutil

    from vt_core import stages
    from vt_core.analysis import selection
    from vt_core.analysis.records import load_selection
    from vt_core.storage.layout import layout

    def choice(study):  # the selection, less where the parameters lie (the study is a copy)
        sel = load_selection(study)
        return sel | {"table": [{k: v for k, v in row.items() if k != "params_path"} for row in sel["table"]]}

    study = tmp_path / "study"
    shutil.copytree(analysed_study, study)
    before = choice(study)
    calls = []
    run_job = selection.run_job
    monkeypatch.setattr(selection, "run_job", lambda *a, **kw: calls.append(a[0]) or run_job(*a, **kw))
    stages.analyse(study)
    assert calls == [] and choice(study) == before  # nothing refitted, the same choice
    assert all(row["params_path"].startswith(str(study)) for row in load_selection(study)["table"]
               if row.get("params_path"))  # the copy's own files, not the original's

    fit = sorted(layout(study).hmm.glob("fits/main-*.json"))[0]
    doc = json.loads(fit.read_text())
    fit.write_text(json.dumps(doc | {"bic": doc["bic"] - 1000.0}))  # a better BIC, and its checksum fails
    stages.analyse(study)
    assert [selection.job_name(j) for j in calls] == [fit.stem] and choice(study) == before
