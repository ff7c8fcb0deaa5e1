"""The live policy ``live.stop_if_predicted_beyond`` (issue 32): the watcher asks a seed to stop at
the first checkpoint where the reference's precedents put its convergence (their median) past the
policy's step, unless the seed has converged already; training stops it there, ``stopped-early``,
with everything committed. A run under the same policy leaves it; a run without it resumes the seed
and ends bitwise where an uninterrupted run ends. In a group, a stopped seed stops alone and the
group ends when all have.

The expected stops are derived here from the analysis's own inputs (the offline forward filter's
argmax path), the reference's Viterbi paths and convergence steps as the analysis wrote them, and
the stores' held-out accuracy, not from the watcher's code."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
from hmmlearn import _hmmc
from scipy.special import logsumexp

from vt_core.analysis import hmm
from vt_core.analysis.live import load_reference
from vt_core.analysis.states import load_input
from vt_core.config.study_config import ConfigError, parse_config
from vt_core.stages import live
from vt_core.stages import train as train_stage
from vt_core.stages.train import train_group, train_seed
from vt_core.storage.layout import layout
from vt_core.storage.run_store import RunStore
from vt_core.storage.seed_status import seed_status, study_state
from vt_core.storage.study import is_finished, load_study, prepare_study, reset_seed
from vt_core.storage.writer_thread import CheckpointWriter
from vt_core.training import early_stop


def _expected_stops(reference, beyond: int) -> dict[int, int]:
    """Per reference seed: the step at which the policy stops it when it is trained again (its
    filtered argmax path is the same run's), derived independently."""
    ref, data = load_reference(reference), load_input(reference)
    paths = json.loads((reference / "hmm" / "paths.json").read_text())
    conv = {int(s): c for s, c in json.loads((reference / "analysis.json").read_text())["convergence_step"].items()}
    threshold = json.loads((reference / "analysis.json").read_text())["convergence_threshold"]
    first = {int(s): {} for s in paths if s.isdigit()}
    for s, p in paths.items():
        if s.isdigit():
            for step, state in zip(p["steps"], p["states"]):
                first[int(s)].setdefault(int(state), int(step))
    out = {}
    for seed, z, steps in zip(data.seeds, data.z, data.steps):
        model = hmm.load_model(ref.params)
        _, fwd = _hmmc.forward_log(model.startprob_, model.transmat_, model._compute_log_likelihood(z))
        path = (fwd - logsumexp(fwd, axis=1, keepdims=True)).argmax(axis=1)
        store = RunStore(reference / "runs" / f"seed={seed:04d}.zarr", mode="r")
        acc = dict(zip(store.root["step"][: store.committed].tolist(), store.root["test_accuracy"][: store.committed]))
        entered, converged = None, False
        for t, step in enumerate(int(s) for s in steps):
            converged = converged or acc[step] >= threshold
            if t == 0 or path[t] != path[t - 1]:
                entered = step
            gaps = [conv[r] - f[path[t]] for r, f in first.items()
                    if path[t] in f and conv.get(r) is not None and f[path[t]] <= conv[r]]
            if converged or len(gaps) < 3:
                continue
            if np.median(np.maximum(entered + np.asarray(gaps), step)) > beyond:
                out[int(seed)] = step
                break
    return out


@pytest.fixture
def policy_study(analysed_study, tmp_path):
    """A new study of the reference's config, under the stop policy (``beyond``: set per test)."""

    def make(beyond: int | None, **over):
        d = load_study(analysed_study).model_dump(mode="json") | {"output_dir": str(tmp_path / f"policy-{beyond}")}
        d["live"] = {"reference": str(analysed_study), "stop_if_predicted_beyond": beyond}
        for k, v in over.items():
            d[k] = d[k] | v
        return prepare_study(parse_config(d))

    return make


def test_the_watcher_asks_each_seed_to_stop_where_the_precedents_say(analysed_study, policy_study):
    for beyond in (50, 61, 65):
        expected = _expected_stops(analysed_study, beyond)
        study = policy_study(beyond)
        shutil.rmtree(study / "runs")  # the reference's runs, as if just trained under the policy
        shutil.copytree(analysed_study / "runs", study / "runs")
        for seed in load_study(study).seeds:
            RunStore(study / "runs" / f"seed={seed:04d}.zarr").set_status("running")
        new = live.Watcher(study, analysed_study).poll()
        stops = {e["seed"]: e["step"] for e in new if e["kind"] == "stopped"}
        assert stops == expected, beyond
        for seed, step in expected.items():
            req = early_stop.requested(study, seed)
            assert req["step"] == step and req["run_id"] == RunStore(study / "runs" / f"seed={seed:04d}.zarr",
                                                                      mode="r").attrs["run_id"]
            assert f"live.stop_if_predicted_beyond = {beyond}" in req["reason"]
        said = [live.describe_event(e) for e in new if e["kind"] == "stopped"]
        for seed in load_study(study).seeds:  # a seed whose training has ended is not asked to stop
            RunStore(study / "runs" / f"seed={seed:04d}.zarr").set_status("complete")
            early_stop.clear(study, seed)
        (study / "live.json").unlink()
        assert [e for e in live.Watcher(study, analysed_study).poll() if e["kind"] == "stopped"] == []
        assert not any(early_stop.requested(study, seed) for seed in load_study(study).seeds)
        assert all("asked to stop at its next checkpoint, unless it converges first" in s for s in said)
    assert _expected_stops(analysed_study, 50) != _expected_stops(analysed_study, 65)  # the two differ


def _wait_committed(path, n: int) -> None:
    deadline = time.monotonic() + 30
    while RunStore(path, mode="r").committed < n:
        assert time.monotonic() < deadline, "the writer did not commit"
        time.sleep(0.01)


def test_a_seed_stopped_early_stays_stopped_under_the_policy_and_resumes_exactly_without_it(analysed_study,
                                                                                            policy_study, monkeypatch):
    # each checkpoint written and committed as it comes (the writers batch up to 2 s), so that the
    # watcher below can decode it before training goes on
    monkeypatch.setattr(train_stage, "make_writer", lambda store, capacity, runtime=None:
                        CheckpointWriter(store, capacity, max_pending_bytes=1))
    expected = _expected_stops(analysed_study, 50)
    assert 0 in expected
    study = policy_study(50)
    watcher = live.Watcher(study, analysed_study)
    path = study / "runs" / "seed=0000.zarr"
    seen = []

    def progress(info):  # the watcher decodes each checkpoint once it is committed, as its process does
        seen.append(info["step"])
        _wait_committed(path, len(seen))
        watcher.poll()

    summary = train_seed(study, 0, progress=progress)
    assert summary["status"] == "stopped-early" and summary["last_step"] == expected[0]
    assert seen[-1] == expected[0]  # stopped at the checkpoint where the watcher asked
    assert "stopped early at step" in summary["error"]
    watcher.poll()  # what `vt status` and the live page then say of it
    said = live.describe(0, live.read_live(study)["seeds"]["0"])
    assert said.endswith(f"; stopped early (the live policy asked it to stop at step {expected[0]:,})")
    store = RunStore(path, mode="r")
    assert store.committed == len(seen) and store.resume_path.is_file()
    rows = seed_status(study)
    assert rows[0]["status"] == "stopped-early"
    state, hints = study_state(rows)
    assert any("stopped early by the live policy" in h for h in hints)
    # under the same policy a run leaves it alone
    assert is_finished(study, 0)
    again = train_seed(study, 0)
    assert again["skipped"] and again["status"] == "stopped-early"
    # without the policy it resumes, and ends where a run never stopped ends
    d = load_study(study).model_dump(mode="json")
    d["live"] = {"reference": str(analysed_study)}
    prepare_study(parse_config(d))
    assert not is_finished(study, 0)
    done = train_seed(study, 0)
    assert done["status"] == "complete" and not layout(study).stop_request(0).is_file()
    mine, theirs = RunStore(path, mode="r"), RunStore(analysed_study / "runs" / "seed=0000.zarr", mode="r")
    assert mine.committed == theirs.committed
    for name in ("step", "test_accuracy", "weights/layers.0.weight"):
        np.testing.assert_array_equal(mine.root[name][: mine.committed], theirs.root[name][: theirs.committed])


def test_in_a_group_a_stopped_seed_stops_alone_and_the_group_ends_when_all_have(analysed_study, policy_study):
    study = policy_study(10**6, training={"seed_group_size": 2})
    at = {0: 10, 1: 20}
    reported: list[tuple[int, int]] = []

    def progress(info):  # the requests a watcher would write, at chosen checkpoints
        reported.append((info["seed"], info["step"]))
        if info["step"] == at.get(info["seed"]):
            run_id = RunStore(study / "runs" / f"seed={info['seed']:04d}.zarr", mode="r").attrs["run_id"]
            early_stop.request(study, info["seed"], run_id, info["step"], f"test stop at {info['step']}")

    out = {s["seed"]: s for s in train_group(study, [0, 1], progress=progress)}
    assert {s: (out[s]["status"], out[s]["last_step"]) for s in (0, 1)} == {0: ("stopped-early", 10),
                                                                            1: ("stopped-early", 20)}
    assert max(step for _, step in reported) == 20  # the group trained no further once both had stopped
    assert not [1 for seed, step in reported if seed == 0 and step > 10]


def test_a_request_for_another_training_run_or_damaged_stops_nothing(analysed_study, policy_study, caplog):
    study = policy_study(10**6)
    early_stop.request(study, 1, 12345, 4, "for a run that no longer exists")
    assert train_seed(study, 1)["status"] == "complete"
    early_stop.clear(study, 1)
    (study / "runs").mkdir(exist_ok=True)
    (study / "runs" / "seed=0002.stop.json").write_text('{"run_id": ')
    with caplog.at_level("WARNING", logger="vt"):
        assert train_seed(study, 2)["status"] == "complete"
    assert "seed=0002.stop.json" in caplog.text and caplog.text.count("seed=0002.stop.json") == 1

    def at_the_end(info):  # asked only once the last checkpoint is with the writer: nothing left to stop
        if info["step"] == 96:
            run_id = RunStore(study / "runs" / "seed=0000.zarr", mode="r").attrs["run_id"]
            early_stop.request(study, 0, run_id, 96, "too late to matter")

    assert train_seed(study, 0, progress=at_the_end)["status"] == "complete"

    def asked_at_80(above: float):
        """A request seen at step 80, naming a threshold ``above`` the best held-out accuracy so far."""
        best: list[float] = []

        def progress(info):
            best.append(info["test_accuracy"])
            if info["step"] == 80:
                run_id = RunStore(study / "runs" / "seed=0001.zarr", mode="r").attrs["run_id"]
                early_stop.request(study, 1, run_id, 40, "decided at step 40", threshold=max(best) + above)
        return progress

    for above, status, last in ((0.0, "complete", 96), (1e-6, "stopped-early", 80)):
        reset_seed(study, 1)  # converged meanwhile (the threshold reached by step 80): trains on; else stops
        summary = train_seed(study, 1, progress=asked_at_80(above))
        assert (summary["status"], summary["last_step"]) == (status, last)


def test_the_policy_without_a_reference_is_refused_in_one_line(analysed_study, tmp_path):
    d = load_study(analysed_study).model_dump(mode="json") | {"output_dir": str(tmp_path / "x"),
                                                             "live": {"stop_if_predicted_beyond": 100}}
    with pytest.raises(ConfigError, match="needs a reference study"):
        live.live_reference(parse_config(d))
    assert live.live_reference(parse_config(d), str(analysed_study)).endswith(analysed_study.name)
    with pytest.raises(ConfigError, match="stop_if_predicted_beyond"):
        parse_config(d | {"live": {"stop_if_predicted_beyond": 0}})
    with pytest.raises(ConfigError, match="stop_after"):
        parse_config(d | {"live": {"stop_after": 3}})


def test_every_event_the_watcher_decodes_has_a_prefect_name():
    from flows.live import EVENT_NAMES

    kinds = {"entered", "detour", "late", "stopped"}
    assert set(EVENT_NAMES) == kinds and EVENT_NAMES["stopped"] == "vt.seed.stopped-early"
    e = {"kind": "stopped", "seed": 3, "step": 40, "state": 2, "entered": 20, "beyond": 60,
         "prediction": {"state": 2, "precedents": 3, "never_converged": 0, "converged_before": 0, "predicted": 70,
                        "low": 50, "high": 90}}
    assert live.describe_event(e) == ("seed 3: asked to stop at its next checkpoint, unless it converges first "
                                      "(live.stop_if_predicted_beyond = 60): in state 2 since step 20, at step 40; "
                                      "converges near step 70 [50, 90] (3 reference seeds that entered state 2)")
