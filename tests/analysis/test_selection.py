"""vt_core.analysis.selection: k chosen by BIC, cross-validated over seeds, extended at the edge, undetermined
when it cannot be decided, and bootstrapped."""

from __future__ import annotations

import numpy as np

from vt_core.analysis.selection import (
    agreement,
    bootstrap_sample,
    bootstrap_summary,
    choose,
    cv_folds,
    cv_support,
    feasible_ks,
    fit_jobs,
    job_name,
    run_job,
    state_stability,
)
from vt_core.config.study_config import HMMConfig


def _row(k, bic, kind="main", index=-1, restart=0, status="ok", heldout=None, n_held=10):
    return {"k": k, "restart": restart, "kind": kind, "index": index, "status": status, "reason": None,
            "random_state": 0, "train_ll": -bic, "heldout_ll": heldout, "aic": bic, "bic": bic, "n_params": k,
            "params_path": None, "n_heldout_obs": n_held}


def test_folds_are_over_seeds_and_seeded():
    folds = cv_folds([0, 1, 2, 3, 4, 5, 6], 3, seed=0)
    assert sorted(s for f in folds for s in f) == [0, 1, 2, 3, 4, 5, 6] and len(folds) == 3
    assert folds == cv_folds([6, 5, 4, 3, 2, 1, 0], 3, seed=0) and cv_folds([0], 3, 0) == []
    assert bootstrap_sample([0, 1, 2, 3], 2, 0) == bootstrap_sample([0, 1, 2, 3], 2, 0)
    assert len({job_name(j) for j in fit_jobs([1, 2], HMMConfig(restarts=2, cv_restarts=1), 3)}) == 2 * 2 + 2 * 3
    assert len(fit_jobs([1, 2], HMMConfig(restarts=2), 3)) == 2 * 2 + 2 * 3 * 2  # cv restarts as the main fits


def test_decided_in_the_interior():
    cfg = HMMConfig(max_states=5)
    rows = [_row(k, b) for k, b in zip(range(1, 6), [100, 80, 60, 70, 75])]
    rows += [_row(k, 0, "cv", f, heldout=-10.0 * abs(k - 3) - 5) for k in range(1, 6) for f in range(2)]
    sel = choose(rows, {}, cfg, feasible_max=10)
    assert sel["chosen_k"] == 3 and sel["status"] == "decided" and sel["runner_up_k"] == 4
    assert sel["bic_gap_to_next"] == 10 and sel["cv_best_k"] == 3 and sel["extend"] == []


def test_edge_of_the_grid_extends_then_is_undetermined_at_the_data_limit():
    cfg = HMMConfig(max_states=3)
    rows = [_row(k, 100 - 10 * k) for k in (1, 2, 3)]
    assert choose(rows, {}, cfg, feasible_max=10)["extend"] == [4, 5]
    sel = choose(rows, {4: "too many parameters"}, cfg, feasible_max=3)
    assert sel["extend"] == [] and sel["status"] == "undetermined" and "largest k this data" in sel["reasons"][0]
    assert [t["status"] for t in sel["table"]] == ["ok", "ok", "ok", "infeasible"]
    no_ext = choose(rows, {}, HMMConfig(max_states=3, extend=False), feasible_max=10)
    assert no_ext["status"] == "undetermined" and "still falling" in no_ext["reasons"][0]


def test_failed_larger_k_leave_the_choice_undetermined():
    rows = [_row(1, 100), _row(2, 90), _row(3, 0, status="failed")]
    rows[-1]["bic"] = None
    sel = choose(rows, {}, HMMConfig(max_states=3), feasible_max=10)
    assert sel["chosen_k"] == 2 and sel["status"] == "undetermined" and sel["k_failed"] == [3]


def test_bootstrap_distribution_and_stability():
    rows = [_row(k, b, "boot", i) for i, bics in enumerate([[50, 40, 45], [50, 45, 40], [50, 40, 41]])
            for k, b in zip((1, 2, 3), bics)]
    out = bootstrap_summary(rows, chosen=2)
    assert out["k_distribution"] == {2: 2 / 3, 3: 1 / 3} and out["chosen_k_support"] == 2 / 3
    assert len(out["fits_at_chosen"]) == 3
    paths = [np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])]
    same = [[np.array([5, 5, 7, 7]), np.array([5, 7, 7, 7])]]
    split = [[np.array([5, 6, 7, 8]), np.array([5, 7, 8, 9])]]
    assert state_stability(paths, same, 2) == [1.0, 1.0]
    assert state_stability(paths, split, 2)[0] < 0.5


def test_feasibility_and_a_real_fit():
    cfg = HMMConfig(covariance="full", restarts=1)
    ok, why = feasible_ks(60, 3, cfg, 8)
    assert ok and max(ok) < 8 and all(k not in ok for k in why) and "free parameters" in next(iter(why.values()))
    rng = np.random.default_rng(0)
    z = {s: np.concatenate([rng.normal(size=(10, 2)), rng.normal(loc=5, size=(10, 2))]) for s in range(4)}
    row = run_job({"kind": "cv", "k": 2, "restart": 0, "index": 0}, z, [0, 1, 2], [3], [[0], [1, 2]], cfg)
    assert row["status"] == "ok" and row["n_heldout_obs"] == 20 and "params" in row


def test_last_bit_differences_between_runners_never_change_the_choice():
    """Runners differ in the last bits (BLAS threads, processes): perturbing every likelihood and
    BIC by a relative 1e-13 changes neither the best restarts nor the chosen k, even at exact ties."""
    rng = np.random.default_rng(0)
    base = []
    for k in range(1, 7):
        for r in range(4):
            bic = 1000.0 - 10 * min(k, 4) + (0.0 if r == 0 else 5.0 * r)  # k = 4, 5, 6 tie at best
            base.append(_row(k, bic, restart=r))
    cfg = HMMConfig(max_states=6, extend=False)
    ref = choose(base, {}, cfg, feasible_max=6)
    assert ref["chosen_k"] == 4
    for _ in range(200):
        noisy = []
        for row in base:
            row = dict(row)
            eps = 1 + rng.normal() * 1e-13
            row["bic"] *= eps
            row["train_ll"] *= 1 + rng.normal() * 1e-13
            noisy.append(row)
        sel = choose(noisy, {}, cfg, feasible_max=6)
        assert sel["chosen_k"] == ref["chosen_k"]
        assert [t["restart"] for t in sel["table"]] == [t["restart"] for t in ref["table"]]


def _cv(per_k: dict[int, list[float]]) -> dict:
    return {k: {"cv_ll": float(np.mean(v)), "cv_fold_ll": list(v)} for k, v in per_k.items()}


def test_cross_validation_takes_the_smallest_k_within_one_paired_standard_error():
    # k = 4 is highest on average, but on the same folds it beats k = 3 by less than the noise of
    # the difference: the one-standard-error rule keeps 3 (the argmax alone said 4)
    per_k = {2: [-7.0, -7.1, -6.9, -7.2, -7.0], 3: [-6.30, -6.45, -6.35, -6.50, -6.33],
             4: [-6.38, -6.33, -6.44, -6.36, -6.40]}
    assert cv_support(_cv(per_k)) == (4, [3, 4])
    # a deficit consistent over folds is not within noise, however small
    per_k[3] = [v - 0.02 for v in per_k[4]]
    assert cv_support(_cv(per_k)) == (4, [4])
    assert cv_support({}) == (None, [])
    # a fold where a k failed is left out of the paired difference
    per_k = {1: [-9.0, -9.1, None, -8.9], 2: [-6.0, -6.1, -6.05, -5.9]}
    best, ks = cv_support({kk: {"cv_ll": float(np.mean([x for x in v if x is not None])), "cv_fold_ll": v}
                           for kk, v in per_k.items()})
    assert (best, ks) == (2, [2])


def test_decided_only_when_the_criteria_agree():
    boot = {"n": 20, "k_distribution": {5: 0.8, 6: 0.2}}
    # BIC's k among those cross-validation supports (not necessarily its smallest) agrees
    crit, why = agreement({"chosen_k": 5, "cv_k": 4, "cv_best_k": 6, "cv_supported": [4, 5, 6]}, boot)
    assert crit == {"bic": 5, "cv": 4, "bootstrap": 5, "paper": None} and why == []
    crit, why = agreement({"chosen_k": 8, "cv_k": 2, "cv_best_k": 2, "cv_supported": [2]},
                          {"n": 10, "k_distribution": {6: 0.6, 8: 0.4}})
    assert crit == {"bic": 8, "cv": 2, "bootstrap": 6, "paper": None} and len(why) == 1
    assert ("BIC k = 8; cross-validated likelihood supports k = 2 (highest at 2); bootstrap picks 6: 60%, 8: 40% "
            "of 10 resamples") in why[0]
    assert "More seeds would settle it" in why[0]
    # a tie between two modes is no answer from the bootstrap
    crit, why = agreement({"chosen_k": 5, "cv_k": 5, "cv_supported": [5]}, {"n": 10, "k_distribution": {5: 0.5, 6: 0.5}})
    assert crit["bootstrap"] is None and why
    # criteria that did not run (no folds, no resamples) neither agree nor disagree
    assert agreement({"chosen_k": 3, "cv_k": None}, {"n": 0, "k_distribution": {}}) == (
        {"bic": 3, "cv": None, "bootstrap": None, "paper": None}, [])


def test_density_check_refits_and_says_when_k_follows_the_data():
    from vt_core.analysis.selection import density_table, follows_density, job_data

    cfg = HMMConfig(restarts=2, density_check=True)
    jobs = fit_jobs([1, 2], cfg, 0)
    assert sorted({(j["kind"], j["index"]) for j in jobs if j["kind"] != "main"}) == [("few", 2), ("thin", 2), ("thin", 4)]
    z = {s: np.arange(10.0)[:, None] + s for s in range(6)}
    fit, score = job_data({"kind": "thin", "index": 4, "k": 1}, z, [0, 1, 2, 3], [4, 5], [], cfg)
    assert [len(x) for x in fit] == [3, 3, 3, 3] and fit[1][:, 0].tolist() == [1.0, 5.0, 9.0] and score == []
    fit, _ = job_data({"kind": "few", "index": 2, "k": 1}, z, [3, 0, 2, 1], [4, 5], [], cfg)
    assert [x[0, 0] for x in fit] == [0.0, 1.0]  # the first half of the training seeds, in seed order
    rows = [_row(k, b, kind, i) for kind, i, bics in [("thin", 2, [50, 40, 45]), ("thin", 4, [30, 35, 36]),
                                                      ("few", 2, [20, 10, 15])] for k, b in zip((1, 2, 3), bics)]
    table = density_table(rows, chosen=3)
    assert [t["k"] for t in table] == [3, 2, 1, 2]
    assert "k follows the amount of data (all checkpoints and training seeds: k = 3; every 2nd checkpoint: k = 2" \
        in follows_density(table)
    assert follows_density([{"data": "all", "k": 3}, {"data": "every 2nd checkpoint", "k": 3}]) is None
