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
