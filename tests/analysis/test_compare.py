"""vt_core.analysis.compare on planted data (tests/planted.py): two groups of seeds from known HMMs.

* **detour**: one planted study with a detour state taken by half its converging seeds; group
  ``direct`` is the seeds that skip it, group ``detour`` the seeds that take it. The two groups are
  the same HMM but for the detour state, which one group always visits and the other never. The
  comparison must find that state specific to ``detour``, attribute the detour to it, and give a
  convergence difference whose interval excludes 0 (and is positive).
* **same**: one planted study (with a detour that half the seeds take, so the null case is not
  trivial) split into two halves at random, each with half of the seeds that take the detour (each
  group from the same HMM, the detour taken with the same probability; an unstratified split of 28
  seeds put 4 detour seeds in one half and 10 in the other in one of five draws, a real difference
  between the halves): no study-specific state, and an interval that covers 0.

Several sampler seeds each, unequal dwell times (the generator's 4x spread), shuffled rows. The
joint fit uses fewer restarts and no bootstrap of k, to keep the test fast.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from tests.planted import Planted, sample_study
from vt_core.analysis.compare import (
    CompareError,
    compare_sequences,
    convergence_difference,
    joint_sequences,
    specific_states,
    visits,
)
from vt_core.analysis.hmm import Sequences, sequences_from_rows
from vt_core.config.study_config import HMMConfig
from vt_core.storage.layout import layout
from vt_core.storage.location import read_json

N_SEEDS, LENGTH = 24, 60
CFG = HMMConfig(max_states=5, restarts=2, bootstrap=0, cv_folds=0, covariance="full", seed=0)


def _groups(p: Planted, split: dict[str, list[int]]) -> tuple[dict[str, Sequences], dict[str, dict]]:
    groups, conv = {}, {}
    for name, seeds in split.items():
        rows = p.table[p.table["seed"].isin(seeds)]
        groups[name] = sequences_from_rows(rows["seed"].to_numpy(), rows["step"].to_numpy(),
                                           rows[p.features].to_numpy(), p.features)
        conv[name] = {s: p.convergence[s] for s in seeds}
    return groups, conv


@functools.cache
def detour_case(rng: int, root: str) -> tuple[Planted, dict]:
    p = sample_study(3, N_SEEDS, detour=True, rng=rng, length=LENGTH)
    direct = sorted(s for s in p.true_states if s not in p.detour_seeds)
    groups, conv = _groups(p, {"direct": direct, "detour": list(p.detour_seeds)})
    return p, compare_sequences(root, groups, conv, CFG, name="planted")


@functools.cache
def same_case(rng: int, root: str) -> tuple[Planted, dict]:
    p = sample_study(3, N_SEEDS, detour=True, rng=rng, length=LENGTH)
    g = np.random.default_rng(rng)
    took = g.permutation(p.detour_seeds).tolist()
    skipped = g.permutation([s for s in sorted(p.true_states) if s not in p.detour_seeds]).tolist()
    a = took[: len(took) // 2] + skipped[: len(skipped) // 2]
    groups, conv = _groups(p, {"a": sorted(a), "b": sorted(s for s in p.true_states if s not in a)})
    return p, compare_sequences(root, groups, conv, CFG, name="planted-null")


def _decoded_detour(p: Planted, result: dict, root: str) -> int:
    """The decoded state that most of the planted detour's checkpoints fall in."""
    stored = read_json(layout(root).paths)
    ids = {m["seed"]: m["id"] for m in result["comparison"]["members"] if m["study"] == "detour"}
    labels = np.concatenate([np.asarray(stored[str(ids[s])]["states"])[p.true_states[s] == p.detour_state]
                             for s in p.detour_seeds])
    return int(np.bincount(labels).argmax())


@pytest.mark.parametrize("rng", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)])
def test_a_detour_taken_by_one_group_is_attributed_to_it(rng, tmp_path_factory):
    root = str(tmp_path_factory.mktemp(f"detour{rng}"))
    p, result = detour_case(rng, root)
    c = result["comparison"]
    assert result["chosen_k"] == p.k
    specific = c["per_study"]["detour"]["specific_states"]
    assert len(specific) == 1 and c["per_study"]["direct"]["specific_states"] == []
    state = specific[0]
    assert state == _decoded_detour(p, result, root)
    assert c["per_study"]["detour"]["seeds_visiting"][state] == 1.0
    assert c["per_study"]["direct"]["seeds_visiting"][state] == 0.0
    assert [d["state"] for d in c["detours"]] == [state]
    assert c["detours"][0]["specific_to"] == "detour" and c["detours"][0]["studies"] == ["detour"]
    diff = c["convergence_difference"]["detour"]
    assert diff["against"] == "direct" and diff["excludes_zero"] and diff["interval"][0] > 0, diff
    assert diff["ratio"] > 1


@pytest.mark.parametrize("rng", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)])
def test_two_groups_from_one_hmm_differ_in_nothing(rng, tmp_path_factory):
    p, result = same_case(rng, str(tmp_path_factory.mktemp(f"same{rng}")))
    c = result["comparison"]
    assert result["chosen_k"] == p.k
    assert c["per_study"]["a"]["specific_states"] == [] and c["per_study"]["b"]["specific_states"] == []
    diff = c["convergence_difference"]["b"]
    lo, hi = diff["interval"]
    assert lo < 0 < hi and not diff["excludes_zero"], diff
    for d in c["detours"]:  # the planted detour, if found, is taken in both groups
        assert d["specific_to"] is None and d["studies"] == ["a", "b"]


def test_visits_need_two_checkpoints_in_a_row():
    assert visits(np.array([0, 0, 1, 0, 2, 2]), 3).tolist() == [True, False, True]
    assert visits(np.array([1]), 3).tolist() == [False, True, False]


def test_specific_states_need_two_seeds_and_none_elsewhere():
    occ = {"a": {"n_seeds_visiting": [10, 3, 1, 0]}, "b": {"n_seeds_visiting": [10, 0, 0, 0]}}
    assert specific_states(occ, {"a": 10, "b": 10}, 4) == {"a": [1], "b": []}


def test_convergence_difference_interval():
    rng = np.random.default_rng(0)
    a, b = rng.normal(100, 10, 20), rng.normal(150, 10, 20)
    d = convergence_difference(list(a), list(b))
    assert d["excludes_zero"] and d["interval"][0] < 50 < d["interval"][1] and 1.3 < d["ratio"] < 1.7
    d = convergence_difference(list(a), list(rng.normal(100, 10, 20)))
    assert d["interval"][0] < 0 < d["interval"][1]
    assert convergence_difference([1], [2, 3])["interval"] is None


def test_different_features_are_refused():
    s = Sequences([0], [np.arange(3)], [np.zeros((3, 2))], ["l2", "trace"])
    t = Sequences([0], [np.arange(3)], [np.zeros((3, 2))], ["l2", "spectral"])
    with pytest.raises(CompareError, match=r"only a has \['trace'\], only b has \['spectral'\]"):
        joint_sequences({"a": s, "b": t})
    with pytest.raises(CompareError, match="at least two studies"):
        joint_sequences({"a": s})


def test_a_study_that_never_converges_is_compared_as_censored():
    """Issue 34, item 13: a study whose seeds never converge against one whose seeds all do got
    "an interval needs at least 2 converged seeds in each study": the clearest difference went
    unquantified. Non-convergence is censoring: shares with Wilson intervals, their difference, a
    log-rank test; checked against values worked by hand."""
    import pytest

    from vt_core.analysis.compare import censored_difference, convergence_difference, survival
    from vt_core.report.compare_markdown import difference_sentence

    converges = ([10.0, 10.0, 10.0, 10.0], [True] * 4)
    never = ([100.0] * 4, [False] * 4)  # censored at their last checkpoint
    c = censored_difference(converges, never)
    assert c["converged"] == [4, 0] and c["seeds"] == [4, 4]
    # Wilson, 95%: 4 of 4 -> [n/(n+z^2), 1], 0 of 4 -> [0, z^2/(n+z^2)]
    z2 = 1.959964 ** 2
    assert c["share_interval"][0] == pytest.approx([4 / (4 + z2), 1.0]) and c["share_interval"][1] == pytest.approx([0.0, z2 / (4 + z2)])
    lo, hi = c["share_difference_interval"]
    assert c["share_difference"] == -1.0 and hi < 0 and lo >= -1.0 - 1e-12
    # log-rank by hand: at step 10, 8 at risk, 4 events, none in the second group: E = 2,
    # V = 4 * 1/2 * 1/2 * 4/7; chi^2 = 4 / V = 7, p = 0.00815
    assert c["log_rank_p"] == pytest.approx(0.0081509, rel=1e-4)
    assert survival(*converges) == {"step": [0.0, 10.0], "not_converged": [1.0, 0.0], "censored_at": []}
    assert survival(*never)["not_converged"] == [1.0] and survival(*never)["censored_at"] == [100.0] * 4
    d = convergence_difference([10, 10, 10, 10], []) | {"against": "a", "censored": c}
    text = difference_sentence("b", d)
    assert "b converged in 0 of 4 seeds (0–49%), a in 4 of 4 seeds" in text and "log-rank" in text, text
    assert "it excludes 0" in text and "Counting non-convergence as censoring" in text
