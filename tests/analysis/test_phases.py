"""vt_core.analysis.phases: the phase timeline when every seed climbs the states in one order."""

import numpy as np

from vt_core.analysis.phases import phase_timeline, phases_sentence


def test_ordered_paths_give_boundaries_with_median_and_range():
    paths = {0: np.array([0, 0, 1, 1, 2, 2]), 1: np.array([0, 1, 1, 1, 1, 2]), 2: np.array([0, 0, 0, 2, 2, 2]),
             3: np.array([0, 0, 1, 1, 1, 1]), **{s: np.array([0, 0, 1, 1, 2, 2]) for s in (4, 5, 6)}}
    steps = {s: np.arange(0, 60, 10) for s in paths}
    ph = phase_timeline(paths, steps, 3)
    assert ph["ordered"] and ph["order"] == [0, 1, 2]
    into1, into2 = ph["boundaries"]
    # seed 2 skips state 1 (one of the six seeds that go past it): it crosses into "1 or later" when it
    # enters 2, at step 30
    assert into1["steps"] == {"0": 20, "1": 10, "2": 30, "3": 20, "4": 20, "5": 20, "6": 20} and into1["median"] == 20
    assert into2["steps"] == {"0": 40, "1": 50, "2": 30, "4": 40, "5": 40, "6": 40}  # seed 3 never reaches 2
    assert into2["n_seeds"] == 6 and into2["median"] == 40
    assert into2["low"] == np.percentile([40, 50, 30, 40, 40, 40], 2.5)
    assert into2["high"] == np.percentile([40, 50, 30, 40, 40, 40], 97.5)
    assert "0→1 at 20 [" in phases_sentence(ph) and "progress along one path" in phases_sentence(ph)


def test_a_seed_that_goes_back_means_no_phases():
    paths = {0: np.array([0, 1, 2]), 5: np.array([0, 2, 1])}
    ph = phase_timeline(paths, {s: np.arange(3) for s in paths}, 3)
    assert not ph["ordered"] and ph["why_not"] == "seed 5 goes back from state 2 to state 1"
    assert phases_sentence(ph) is None


def test_states_that_many_seeds_skip_are_branches_not_phases():
    # seeds 0-2 go 0 -> 1 -> 3, seeds 3-5 go 0 -> 2 -> 3: two branches, no single path
    paths = {s: np.array([0, 1, 1, 3]) if s < 3 else np.array([0, 2, 2, 3]) for s in range(6)}
    ph = phase_timeline(paths, {s: np.arange(4) for s in paths}, 4)
    assert not ph["ordered"] and "state 1 is skipped by 3 of the 6 seeds that go past it" in ph["why_not"]
