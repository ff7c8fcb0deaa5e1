"""vt_core.analysis.detours: detours only from a regression that can support them."""

from __future__ import annotations

import numpy as np

from vt_core.analysis.detours import detour_regression, visits_before


def _seeds(n: int, rng, detour_delay: float, post_state: bool):
    """Main path 0 -> 1 -> 2; half the seeds pass through 3 between 1 and 2 (delaying convergence by
    ``detour_delay`` steps); with ``post_state`` every seed enters 4 after converging."""
    paths, steps, conv = {}, {}, {}
    for s in range(n):
        dwell = rng.integers(5, 15, size=3)
        seq = [0] * dwell[0] + [1] * dwell[1]
        if s % 2:
            seq += [3] * int(detour_delay)
        c = len(seq) + 2  # converges early in state 2
        seq += [2] * dwell[2]
        if post_state:
            seq += [4] * int(rng.integers(3, 10))
        paths[s], steps[s], conv[s] = np.array(seq), np.arange(len(seq)), c
    return conv, paths, steps


def test_a_planted_detour_is_flagged_and_a_post_convergence_state_is_not():
    conv, paths, steps = _seeds(20, np.random.default_rng(0), detour_delay=8, post_state=True)
    out = detour_regression(conv, paths, steps, k=5)
    assert out["determined"] and out["detours"] == [3]
    assert out["states"] == [3]  # 4 is never visited before converging: no column, never flagged
    lo, hi = out["intervals"]["3"]
    assert 0 < lo < out["coefficients"]["3"] < hi


def test_no_effect_no_detour():
    """A state half the seeds visit without delaying convergence is not a detour."""
    rng = np.random.default_rng(1)
    conv, paths, steps = _seeds(30, rng, detour_delay=3, post_state=False)
    for s in paths:  # the visit takes the place of main-path steps: convergence is not delayed
        conv[s] = int(rng.integers(20, 30))
    out = detour_regression(conv, paths, steps, k=4)
    assert out["determined"] and out["detours"] == []


def test_too_few_seeds_concludes_nothing():
    conv, paths, steps = _seeds(4, np.random.default_rng(2), detour_delay=8, post_state=False)
    out = detour_regression(conv, paths, steps, k=4)
    assert not out["determined"] and out["detours"] == [] and "too few" in out["conclusion"]


def test_seeds_that_never_converge_are_left_out():
    conv, paths, steps = _seeds(12, np.random.default_rng(3), detour_delay=8, post_state=False)
    conv[0] = conv[2] = None
    out = detour_regression(conv, paths, steps, k=4)
    assert 0 not in out["seeds"] and 2 not in out["seeds"] and out["n"] == 10
    assert list(visits_before(np.array([0, 0, 1, 2, 5]), np.arange(5), 3)) == [0, 1]


def test_seeds_without_accuracy_are_not_said_to_have_never_converged():
    paths = {s: np.array([0, 0, 1, 1]) for s in range(3)}
    steps = {s: np.array([0, 10, 20, 30]) for s in range(3)}
    none = {s: None for s in range(3)}
    assert "no held-out accuracy was recorded" in detour_regression(none, paths, steps, k=2, unmeasured=[0, 1, 2])["conclusion"]
    # some seeds measured and none converged: that is what is said
    assert detour_regression(none, paths, steps, k=2, unmeasured=[0])["conclusion"].startswith("no seed converged")
