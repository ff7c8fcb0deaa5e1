"""vt_core.analysis.phases: the phase timeline when every seed climbs the states in one order."""

import numpy as np

from vt_core.analysis.phases import phase_timeline, phases_sentence


def test_ordered_paths_give_boundaries_with_median_and_range():
    paths = {0: np.array([0, 0, 1, 1, 2, 2]), 1: np.array([0, 1, 1, 1, 1, 2]), 2: np.array([0, 0, 0, 2, 2, 2]),
             3: np.array([0, 0, 1, 1, 1, 1])}
    steps = {s: np.arange(0, 60, 10) for s in paths}
    ph = phase_timeline(paths, steps, 3)
    assert ph["ordered"] and ph["order"] == [0, 1, 2]
    into1, into2 = ph["boundaries"]
    # seed 2 skips state 1: it crosses into "1 or later" when it enters 2, at step 30
    assert into1["steps"] == {"0": 20, "1": 10, "2": 30, "3": 20} and into1["median"] == 20
    assert into2["steps"] == {"0": 40, "1": 50, "2": 30} and into2["n_seeds"] == 3  # seed 3 never reaches 2
    assert into2["low"] == np.percentile([40, 50, 30], 2.5) and into2["high"] == np.percentile([40, 50, 30], 97.5)
    assert "0→1 at 20 [" in phases_sentence(ph) and "progress along one path" in phases_sentence(ph)


def test_a_seed_that_goes_back_means_no_phases():
    paths = {0: np.array([0, 1, 2]), 5: np.array([0, 2, 1])}
    ph = phase_timeline(paths, {s: np.arange(3) for s in paths}, 3)
    assert not ph["ordered"] and ph["why_not"] == "seed 5 goes back from state 2 to state 1"
    assert phases_sentence(ph) is None
