"""States of change (hmm.change_model): on data whose regimes are of the metrics' change (a drift, a
plateau, another drift, the plateau again at another level), the HMM on differences recovers the
planted regimes and their number and explains held-out seeds better, where the position HMM cannot
express them; on data planted in position (tests/planted.py) it does not claim to be better.

The change-planted generator is written here from the description above (numpy only)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from tests.planted import sample_study
from vt_core.analysis.trajectories import analyse_trajectories
from vt_core.report.narrative import k_notes

pytestmark = pytest.mark.minutes

HMM = {"max_states": 5, "restarts": 3, "covariance": "diag", "bootstrap": 0, "cv_folds": 0, "change_model": True,
       "seed": 0}


def change_study(n_seeds: int, rng: int, n_features: int = 4):
    """Regimes of velocity: 0 plateau (no change), 1 drift along u, 2 drift along w; every seed runs
    1 -> 0 -> 2 -> 0 -> 1 -> 0 with its own dwell times (4-14 checkpoints), its own start, noise on
    the change of 0.15 of a drift's size; features in units 1e-2..1e2 apart."""
    g = np.random.default_rng(rng)
    u, w = g.normal(size=n_features), g.normal(size=n_features)
    u, w = u / np.linalg.norm(u), w / np.linalg.norm(w)
    velocity = {0: np.zeros(n_features), 1: u, 2: w}
    scale = 10.0 ** g.uniform(-2, 2, size=n_features)
    rows, truth = [], {}
    for seed in range(n_seeds):
        regimes = np.concatenate([[r] * int(g.integers(4, 15)) for r in (1, 0, 2, 0, 1, 0)])
        x = g.normal(scale=3.0, size=n_features)
        path = [x.copy()]
        for r in regimes:
            x = x + velocity[int(r)] + g.normal(scale=0.15, size=n_features)
            path.append(x.copy())
        truth[seed] = regimes  # the regime of the change into steps 1..T
        for t, p in enumerate(path):
            rows.append({"seed": seed, "step": 10 * t, **{f"m{i}": p[i] * scale[i] for i in range(n_features)}})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=rng), truth


@pytest.mark.parametrize("rng", [0, 1, 2])
def test_the_change_model_recovers_regimes_of_change(rng):
    table, truth = change_study(14, rng)
    res = analyse_trajectories(table, features=[f"m{i}" for i in range(4)], hmm=HMM)
    change = res["selection"]["change"]
    assert change["k"] == 3, change["table"]
    seeds = sorted(truth)
    true = np.concatenate([truth[s] for s in seeds])
    got = np.concatenate([change["paths"][str(s)] for s in seeds])
    assert adjusted_rand_score(true, got) >= 0.95
    # the position HMM's states (after the first checkpoint) do not express the regimes
    pos = np.concatenate([np.asarray(res["paths"][str(s)]["states"])[1:] for s in seeds])
    assert adjusted_rand_score(true, pos) < 0.5
    c = change["comparison"]
    assert c["preferred"] == "change" and c["gain_per_checkpoint"] > 0, c
    assert any("the states of change explain the held-out seeds better" in n for n in k_notes(res))


@pytest.mark.parametrize("rng", [0, 2])
def test_on_position_planted_data_the_change_model_is_not_preferred(rng):
    p = sample_study(3, 20, rng=rng)
    res = analyse_trajectories(p.table, features=list(p.features), convergence="test_accuracy", hmm=HMM)
    c = res["selection"]["change"]["comparison"]
    assert c["n_heldout_seeds"] >= 3 and c["preferred"] == "position" and c["gain_per_checkpoint"] < 0, c
