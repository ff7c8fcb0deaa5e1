"""Live states from the stores (vt_core/stages/live.py): the watcher computes each committed
checkpoint's features from the run store itself and decodes them; replaying a finished study its
posteriors are the offline forward (filtered) posteriors of the analysis's own inputs, and its
events those of the offline filter's argmax path. Killed between decoding and writing, with
``live.json`` damaged, and resumed: no event lost, none repeated. A reference the study cannot be
decoded under is refused in one line."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
from hmmlearn import _hmmc
from scipy.special import logsumexp

from vt_core.analysis import hmm
from vt_core.analysis.live import ReferenceError, load_reference
from vt_core.analysis.states import load_input
from vt_core.config.study_config import parse_config
from vt_core.report import live_page
from vt_core.stages import live
from vt_core.stages import train as train_stage
from vt_core.stages.train import train_seed
from vt_core.storage import run_store
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import load_study, prepare_study, reset_seed
from vt_core.storage.writer_thread import CheckpointWriter


def _offline(params: dict, z: np.ndarray) -> np.ndarray:
    model = hmm.load_model(params)
    _, fwd = _hmmc.forward_log(model.startprob_, model.transmat_, model._compute_log_likelihood(z))
    return np.exp(fwd - logsumexp(fwd, axis=1, keepdims=True))


@pytest.fixture
def running(analysed_study, tmp_path):
    """A copy of the finished study's run stores as a study being trained (nothing analysed yet)."""
    study = tmp_path / "live-study"
    study.mkdir()
    shutil.copy(analysed_study / "study.json", study / "study.json")
    shutil.copytree(analysed_study / "runs", study / "runs")
    return study


def test_the_watcher_decodes_the_stores_as_the_analysis_did(analysed_study, running):
    w = live.Watcher(running, analysed_study)
    new = w.poll()
    ref, data = load_reference(analysed_study), load_input(analysed_study)
    doc = live.read_live(running)
    expected = []
    for seed, z, steps in zip(data.seeds, data.z, data.steps):
        offline = _offline(ref.params, z)
        entry = doc["seeds"][str(seed)]
        assert entry["step"] == int(steps[-1]) and entry["checkpoints"] == len(steps)
        np.testing.assert_allclose(entry["posterior"], offline[-1], rtol=0, atol=1e-10)
        path = offline.argmax(axis=1)
        expected += [(seed, int(steps[t]), int(path[t])) for t in range(len(path)) if t == 0 or path[t] != path[t - 1]]
    got = [(e["seed"], e["step"], e["state"]) for e in new if e["kind"] == "entered"]
    assert sorted(got) == sorted(expected)
    assert [e["key"] for e in doc["events"]] == [e["key"] for e in new]
    assert w.poll() == []  # nothing committed since: nothing decoded, nothing repeated
    assert not (running / "dashboard" / "live.html").is_file()  # not drawn at once, unserved: `vt dashboard`
    assert "live-timeline" in live_page.draw_live_page(running).read_text()


def test_killed_between_decoding_and_writing_then_resumed_loses_and_repeats_nothing(analysed_study, running,
                                                                                      monkeypatch, caplog):
    whole = [e["key"] for e in live.Watcher(running, analysed_study).poll()]
    (running / "live.json").unlink()
    n = RunStore(running / "runs" / "seed=0000.zarr", mode="r").committed
    cap = {"n": n // 3}
    real = RunStore.committed
    monkeypatch.setattr(RunStore, "committed", property(lambda self: min(real.fget(self), cap["n"])))
    first = live.Watcher(running, analysed_study)
    first.poll()  # a third of each seed's checkpoints decoded and written
    written = json.loads((running / "live.json").read_text())["events"]
    assert written and len(written) < len(whole)
    cap["n"] = 2 * n // 3
    second = live.Watcher(running, analysed_study)
    monkeypatch.setattr(live.Watcher, "write", lambda self: None)  # killed before it wrote what it decoded
    second.poll()
    assert json.loads((running / "live.json").read_text())["events"] == written
    monkeypatch.undo()
    resumed = live.Watcher(running, analysed_study)
    resumed.poll()
    keys = [e["key"] for e in live.read_live(running)["events"]]
    assert sorted(keys) == sorted(whole) and len(keys) == len(set(keys))
    # live.json damaged: named, and decoded again from the stores
    (running / "live.json").write_text('{"events": [')
    with caplog.at_level("WARNING", logger="vt"):
        again = live.Watcher(running, analysed_study)
    assert "live.json" in caplog.text
    again.poll()
    assert sorted(e["key"] for e in live.read_live(running)["events"]) == sorted(whole)


def test_a_seed_retrained_from_scratch_is_a_new_run_with_its_own_events(analysed_study, running):
    w = live.Watcher(running, analysed_study)
    w.poll()
    before = {e["key"] for e in live.read_live(running)["events"]}
    reset_seed(running, 1)
    train_seed(running, 1)  # `vt rerun --seed 1`: the same weights again, as a new training run
    new = w.poll()
    assert new and all(e["seed"] == 1 and e["key"] not in before for e in new)


def test_a_reference_the_study_cannot_be_decoded_under_is_refused(analysed_study, tmp_path):
    config = load_study(analysed_study)
    fewer = parse_config(config.model_dump(mode="json") | {"metrics": {"names": ["l2"]},
                                                           "hmm": {"features": ["l2"]}})
    with pytest.raises(ReferenceError, match=r"does not compute.*metrics.names"):
        live.check_reference(fewer, analysed_study)
    with pytest.raises(ReferenceError, match="no study there"):
        live.check_reference(config, tmp_path / "nowhere")
    with pytest.raises(ReferenceError, match=r"^live.reference .*nowhere: no study there"):
        live.check_reference(config, tmp_path / "nowhere", "live.reference")
    assert live.check_reference(config, analysed_study).k >= 1


def test_a_seed_predicted_past_the_end_of_training_gets_a_late_event(analysed_study, running):
    w = live.Watcher(running, analysed_study)
    assert live.training_budget(w.config) == 96  # 12 epochs of 8 batches
    assert RunStore(running / "runs" / "seed=0000.zarr", mode="r").attrs["total_steps"] == 96  # as training said
    ref = w.ref
    w.budget = 10  # a run that stops at step 10
    new = w.poll()
    late = [e for e in new if e["kind"] == "late"]
    entered = [e for e in new if e["kind"] == "entered"]
    expected = [(e["seed"], e["step"]) for e in entered
                if (p := live.predict_convergence(ref, e["state"], e["step"], e["step"]))["predicted"] is not None
                and p["predicted"] > 10]
    assert expected and [(e["seed"], e["step"]) for e in late] == expected
    assert all("predicted not to converge within training (step 10)" in live.describe_event(e) for e in late)


def test_decoded_commit_by_commit_as_the_arrays_grow_it_is_the_analysis_filter(analysed_study, tmp_path, monkeypatch):
    """The watcher keeps each store's arrays open between looks and reads only the new rows
    (:class:`vt_core.metrics.stream.WeightMetrics`); arrays that grow as they are written (a
    recorder's: doubled from one row here) are opened again when the rows asked for lie past them.
    Seed 0 retrained (bitwise the reference's run), decoded as each checkpoint commits: at every
    prefix the posterior is the analysis's offline forward posterior, and the events its argmax path's."""
    monkeypatch.setattr(run_store, "GROW_ROWS", 1)
    monkeypatch.setattr(train_stage, "make_writer", lambda store, capacity, runtime=None:
                        CheckpointWriter(store, 0, max_pending_bytes=1))  # no capacity known; each commit at once
    study = prepare_study(parse_config(load_study(analysed_study).model_dump(mode="json")
                                       | {"output_dir": str(tmp_path / "again")}))
    w, path = live.Watcher(study, analysed_study), study / "runs" / "seed=0000.zarr"
    posteriors, new, shapes = [], [], set()

    def progress(info):
        deadline = time.monotonic() + 30
        while RunStore(path, mode="r").committed < len(posteriors) + 1:
            assert time.monotonic() < deadline, "the writer did not commit"
            time.sleep(0.01)
        shapes.add(RunStore(path, mode="r").root["weights/layers.0.weight"].shape[0])
        new.extend(w.poll())
        posteriors.append(live.read_live(study)["seeds"]["0"]["posterior"])

    train_seed(study, 0, progress=progress)
    assert len(shapes) > 3  # the arrays grew under the watcher
    ref, data = load_reference(analysed_study), load_input(analysed_study)
    offline = _offline(ref.params, data.z[list(data.seeds).index(0)])
    np.testing.assert_allclose(np.array(posteriors), offline, rtol=0, atol=1e-10)
    steps, states = data.steps[list(data.seeds).index(0)], offline.argmax(axis=1)
    expected = [(int(steps[t]), int(states[t])) for t in range(len(states)) if t == 0 or states[t] != states[t - 1]]
    assert [(e["step"], e["state"]) for e in new if e["kind"] == "entered"] == expected


def test_the_watcher_decodes_without_torch_xarray_dask_or_bokeh(analysed_study, running):
    """The watcher shares the machine with training: what it imports is CPU taken from it (torch
    1 s, xarray with the dask it imports 0.8 s; benchmarks/live_overhead.py). Its page (bokeh) is
    drawn only when asked or served."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys\nfrom vt_core.stages.live import Watcher\n"
            "assert Watcher(sys.argv[1], sys.argv[2]).poll()\n"
            "print(sorted(m for m in ('torch', 'xarray', 'dask', 'pandas', 'sklearn', 'bokeh', 'prefect') "
            "if m in sys.modules))")
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", code, str(running), str(analysed_study)], capture_output=True,
                         text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout


def test_a_served_live_page_is_redrawn_by_the_server_as_live_json_changes(analysed_study, running, monkeypatch):
    """While `vt dashboard --serve` serves the live page, that process redraws it when live.json
    changes (live_page.redrawing); the watcher does not (its first draw imported bokeh at nice 10,
    beside training: the served page stood 20-25 s behind)."""
    from vt_core.report.serving import serving

    monkeypatch.setattr(live_page, "REFRESH_S", 0.05)
    page = running / "dashboard" / "live.html"
    real = RunStore.committed
    monkeypatch.setattr(RunStore, "committed", property(lambda self: min(real.fget(self), 5)))
    w = live.Watcher(running, analysed_study)
    w.page_written = -float("inf")  # due: unserved, the watcher would draw it now
    with serving(running, "http://127.0.0.1:1/live.html"), live_page.redrawing(running):
        w.poll()
        assert not page.is_file()  # served: not the watcher's to draw

        def drawn(text: str) -> bool:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if page.is_file() and text in page.read_text():
                    return True
                time.sleep(0.05)
            return False

        assert drawn("at step 8")  # the 5th checkpoint (every 2 steps from 0)
        monkeypatch.setattr(RunStore, "committed", real)
        w.poll()
        assert drawn("at step 96")  # the last one, once the watcher has decoded it
    w.poll()
    assert "at step 96" in page.read_text()
