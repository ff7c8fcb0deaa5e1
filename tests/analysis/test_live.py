"""Live decoding's core (vt_core/analysis/live.py): replaying a finished study checkpoint by
checkpoint, the online posterior at every prefix equals the offline forward (filtered) posterior
of hmmlearn's own forward pass to 1e-10; the reference's inputs are rebuilt exactly; a detour event
fires at the first checkpoint whose filtered posterior puts the detour state highest; events are
keyed by seed and step."""

from __future__ import annotations

import numpy as np
import pytest
from hmmlearn import _hmmc
from scipy.special import logsumexp

from vt_core.analysis import hmm
from vt_core.analysis.live import OnlineFilter, ReferenceError, events, load_reference
from vt_core.analysis.states import load_input
from vt_core.storage.location import load_npz


def _offline_filtered(params: dict, z: np.ndarray) -> np.ndarray:
    """P(state_t | x_1..t) for every t from hmmlearn's forward lattice (its C++ forward pass)."""
    model = hmm.load_model(params)
    _, fwd = _hmmc.forward_log(model.startprob_, model.transmat_, model._compute_log_likelihood(z))
    return np.exp(fwd - logsumexp(fwd, axis=1, keepdims=True))


def test_replay_equals_the_offline_forward_filter_at_every_prefix(analysed_study):
    ref = load_reference(analysed_study)
    data = load_input(analysed_study)
    for raw, z in zip(data.raw, data.z):
        np.testing.assert_allclose(ref.transform(raw), z, rtol=0, atol=1e-12)  # the analysis's own inputs
        offline = _offline_filtered(ref.params, z)
        live = OnlineFilter(ref)
        for t, row in enumerate(raw):
            post = live.update(row)
            np.testing.assert_allclose(post, offline[t], rtol=0, atol=1e-10)
            if t in (1, len(raw) // 2):  # the forward pass over the prefix alone agrees too
                np.testing.assert_allclose(post, _offline_filtered(ref.params, z[:t + 1])[-1], rtol=0, atol=1e-10)
        total = hmm.load_model(ref.params).score(z)
        assert live.log_likelihood == pytest.approx(total, rel=1e-10)


def test_a_detour_event_fires_where_the_filter_first_favours_the_detour_state(analysed_study):
    ref = load_reference(analysed_study)
    data = load_input(analysed_study)
    raw, z, steps = data.raw[0], data.z[0], data.steps[0]
    offline = _offline_filtered(ref.params, z).argmax(axis=1)
    detour = int(offline[-1]) if len(set(offline.tolist())) == 1 else int(offline[np.argmax(offline != offline[0])])
    ref.detour_states = {detour}
    first = int(np.argmax(offline == detour))
    live, before, fired = OnlineFilter(ref), None, []
    for t, row in enumerate(raw):
        post = live.update(row)
        fired += events(0, int(steps[t]), before, post, ref)
        before = post
    detours = [e for e in fired if e["kind"] == "detour"]
    assert detours and detours[0]["step"] == int(steps[first]) and detours[0]["state"] == detour
    keys = [e["key"] for e in fired]
    assert len(keys) == len(set(keys))  # one event per seed, step and kind
    entered = [e["state"] for e in fired if e["kind"] == "entered"]
    assert entered == [int(s) for i, s in enumerate(offline) if i == 0 or s != offline[i - 1]]


def test_a_reference_standardised_per_seed_is_refused(analysed_study, tmp_path):
    import json
    import shutil

    from vt_core.storage.location import write_json_atomic

    study = tmp_path / "ref"
    shutil.copytree(analysed_study, study)
    split = json.loads((study / "hmm" / "split.json").read_text())
    split.pop("sha256")
    write_json_atomic(study / "hmm" / "split.json", split | {"standardize": "seed"})
    with pytest.raises(ReferenceError, match="standardi"):
        load_reference(study)
    assert load_npz(study / "hmm" / "model.npz")  # nothing else touched


def test_the_convergence_prediction_is_the_precedents_of_the_reference():
    from vt_core.analysis.live import Reference, describe_prediction, predict_convergence

    ref = Reference(features=["a"], mu=np.zeros(1), sd=np.ones(1), params={"means": np.zeros((3, 1))})
    ref.entries = {0: {0: 0, 2: 10}, 1: {0: 0, 2: 20}, 2: {0: 0, 2: 30}, 3: {0: 0}, 4: {0: 0, 1: 80}}
    ref.convergence = {0: 50, 1: 70, 2: 90, 3: None, 4: 60}
    p = predict_convergence(ref, 2, entered=15, now=15)  # 40, 50 and 60 steps after entering state 2
    assert (p["predicted"], p["low"], p["high"], p["precedents"]) == (65, 55, 75, 3)
    assert predict_convergence(ref, 2, entered=15, now=70)["low"] == 70  # not before now
    p0 = predict_convergence(ref, 0, entered=0, now=0)
    assert (p0["predicted"], p0["precedents"], p0["never_converged"]) == (65, 4, 1)  # 50, 60, 70, 90
    assert "1 never converged" in describe_prediction(p0)
    p1 = predict_convergence(ref, 1, entered=80, now=80)  # entered by one seed, after it converged
    assert p1["predicted"] is None and "after converging" in describe_prediction(p1)
    ref.entries[5] = {1: 10}
    ref.convergence[5] = 30
    assert "no convergence predicted: 1 reference seed" in describe_prediction(predict_convergence(ref, 1, 5, 5))
