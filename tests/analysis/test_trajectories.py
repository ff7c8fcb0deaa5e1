"""vt_core.analysis.trajectories and `vt states`: vt's analysis of a table of trajectories from anywhere."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from vt_core.analysis.trajectories import TrajectoryError, analyse_trajectories

HMM = {"max_states": 4, "restarts": 2, "covariance": "diag", "bootstrap": 3, "cv_folds": 2, "extend": False}


def _table(n_seeds: int = 8, seed: int = 0) -> pd.DataFrame:
    """Three well-separated states in order, dwell times differing between seeds, accuracy that
    passes 0.9 in the last state; rows shuffled."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=5, size=(3, 3))
    rows = []
    for s in range(n_seeds):
        states = np.repeat(np.arange(3), rng.integers(6, 20, size=3))
        for t, k in enumerate(states):
            rows.append({"run": s, "step": 10 * t, **{f"m{i}": v for i, v in enumerate(means[k] + rng.normal(size=3))},
                         "acc": 0.5 + 0.45 * (k == 2) + 0.01 * t / len(states)})
    return pd.DataFrame(rows).sample(frac=1, random_state=0)


def test_a_table_gets_the_analysis_a_study_gets():
    r = analyse_trajectories(_table(), seed="run", convergence="acc", hmm=HMM)
    assert r["chosen_k"] == 3 and r["selection"]["status"] in ("decided", "undetermined")
    assert sorted(r["paths"]) == [str(s) for s in range(8)] and r["bootstrap"]["n"] == 3
    assert r["features"] == ["m0", "m1", "m2"]  # the convergence column is not a feature
    assert all(c is not None for c in r["convergence_step"].values())
    steps = r["paths"]["0"]["steps"]
    assert steps == sorted(steps)  # sorted by the real step, whatever the row order


def test_bad_tables_are_named():
    with pytest.raises(TrajectoryError, match=r"columns \['seed'\] are not in the table"):
        analyse_trajectories(_table())
    with pytest.raises(TrajectoryError, match="pandas DataFrame or an xarray Dataset"):
        analyse_trajectories([1, 2])  # type: ignore[arg-type]


def test_vt_states_on_a_csv(tmp_path):
    from flows.cli import app

    path = tmp_path / "runs.csv"
    _table().to_csv(path, index=False)
    res = CliRunner().invoke(app, ["states", str(path), "--seed-col", "run", "--convergence", "acc",
                                   "--max-states", "4", "--covariance", "diag", "--bootstrap", "2",
                                   "--cv-folds", "2", "--no-extend"])
    assert res.exit_code == 0, res.output
    assert "states: k = 3" in res.output and "detours:" in res.output
    a = json.loads((tmp_path / "runs_states" / "analysis.json").read_text())
    assert a["chosen_k"] == 3
    bad = CliRunner().invoke(app, ["states", str(tmp_path / "nope.csv")])
    assert bad.exit_code == 2 and "not found" in bad.output and "Traceback" not in bad.output


def _wandb_export(n_runs: int = 8) -> pd.DataFrame:
    """The table as a W&B history export has it: runs named by strings, ``_step``, ``_runtime``
    and ``_timestamp`` bookkeeping, metric names with slashes."""
    t = _table(n_runs)
    return pd.DataFrame({
        "run": [f"sp-seed{r}" for r in t["run"]], "_step": t["step"], "_runtime": t["step"] * 0.37 + 3.0,
        "_timestamp": 1.7e9 + t["step"] * 0.37, "train/m0": t["m0"], "train/m1": t["m1"], "train/m2": t["m2"],
        "val/acc": t["acc"]})


def test_a_wandb_export_with_run_names_keeps_them(tmp_path):
    """Issue 34, item 5: string run names are seeds, kept as labels in every output; W&B's own
    bookkeeping columns are not features; a missing run or step column names the option to use."""
    from flows.cli import app

    path = tmp_path / "wandb.csv"
    _wandb_export().to_csv(path, index=False)
    res = CliRunner().invoke(app, ["states", str(path)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    flat = " ".join(res.output.split())
    assert "--seed-col" in flat and "perhaps 'run'" in flat, res.output
    res = CliRunner().invoke(app, ["states", str(path), "--seed-col", "run"])
    assert res.exit_code == 2 and "--step-col" in " ".join(res.output.split()) and "'_step'" in res.output
    res = CliRunner().invoke(app, ["states", str(path), "--seed-col", "run", "--step-col", "_step", "--convergence",
                                   "val/acc", "--max-states", "4", "--covariance", "diag", "--bootstrap", "2",
                                   "--cv-folds", "2", "--no-extend"])
    assert res.exit_code == 0, res.output
    assert "states: k = 3" in res.output and "not fitted (infeasible): at k = " not in res.output.replace(", ", ",")
    a = json.loads((tmp_path / "wandb_states" / "analysis.json").read_text())
    labels = [f"sp-seed{r}" for r in range(8)]
    # issue 34, item 7: the dashboard and the report a study gets, beside the analysis
    page = (tmp_path / "wandb_states" / "dashboard" / "index.html").read_text()
    report = (tmp_path / "wandb_states" / "report.md").read_text()
    assert "Bokeh" in page and "state-graph" in page and "train/m0" in page
    assert "**Number of states: k = 3" in report and "| 0 | sp-seed0 |" in report and "## Transitions" in report
    assert "dashboard:" in res.output and "report:" in res.output
    assert a["features"] == ["train/m0", "train/m1", "train/m2"]  # not _runtime, _timestamp, nor the accuracy
    assert sorted(a["seed_labels"].values()) == labels

    r = analyse_trajectories(_wandb_export(), seed="run", step="_step", convergence="val/acc", hmm=HMM)
    assert r["chosen_k"] == 3 and sorted(r["paths"]) == labels and sorted(r["convergence_step"]) == labels
    assert all(c is not None for c in r["convergence_step"].values())
    assert {s for st in r["states"] for s in st["seeds"]} == set(labels)
    assert all(set(t["first_step"]) <= set(labels) and set(t["seeds"]) <= set(labels) for t in r["transitions"])
    plain = analyse_trajectories(_table(), seed="run", convergence="acc", hmm=HMM)  # the same runs, numbered
    assert [plain["paths"][str(i)]["states"] for i in range(8)] == [r["paths"][lab]["states"] for lab in labels]


def test_every_k_left_out_says_why(tmp_path):
    """Issue 34, item 6: `vt states` printed "at k = 12, " with no reason (its lines were made from
    the whole selection record, which holds no summary of reasons)."""
    from flows.cli import app

    path = tmp_path / "short.csv"
    _table(4).to_csv(path, index=False)
    res = CliRunner().invoke(app, ["states", str(path), "--seed-col", "run", "--max-states", "8",
                                   "--covariance", "full", "--bootstrap", "0", "--cv-folds", "0"])
    assert res.exit_code == 0, res.output
    notes = [line for line in res.output.splitlines() if "not fitted" in line or "every fit failed" in line]
    assert notes, res.output
    for line in notes:
        assert not line.rstrip().endswith(",") and "no reason recorded" not in line and "()" not in line, line
        assert "free parameters" in line or "failed (" in line, line
