import json

import numpy as np
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterTags,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort
from prefect.task_runners import ThreadPoolTaskRunner
from typer.testing import CliRunner

from flows.cli import app
from flows.study import study_flow
from tests.helpers import tiny_dict, write_toml
from vt_core.stages.publish import artifact_key, location_tag
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import run_path

pytestmark = pytest.mark.flow  # runs a Prefect flow or the `vt` command

runner = CliRunner()


def _train_states(flow_run_id) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id])))
    return {r.name: r.state.name for r in runs if r.name.startswith("train-seed")}


def _weights(study, seed):
    store = RunStore(run_path(study, seed))
    return store.root["weights"]["layers.0.weight"][:]


def test_study_end_to_end_cached_rerun(tmp_path):
    study = tmp_path / "study"
    cfg = write_toml(tiny_dict(study, checkpoints={"every_epochs": None, "every_steps": 4},
                               hmm={"features": ["l2", "spectral", "var_w", "test_accuracy"]}), tmp_path / "tiny.toml")

    # 1. the CLI, as a user runs it
    res = runner.invoke(app, ["run", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "dashboard:" in res.output and "states: k = " in res.output
    assert (study / "dashboard" / "index.html").is_file()
    meta = json.loads((study / "study.json").read_text())
    assert meta["versions"]["prefect"].startswith("3.9") and meta["training_hash"]

    # the three artifacts, under keys of this study's location (tests/flows/test_prefect_ui.py: the rest)
    key = {k: artifact_key(study, "tiny", k) for k in ("dashboard", "summary", "model-selection")}
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(key.values()))),
                                     sort=ArtifactSort.CREATED_DESC)
    by_key = {}
    for a in arts:  # the newest of each key
        by_key.setdefault(a.key, a)
    assert set(by_key) == set(key.values())
    assert by_key[key["model-selection"]].type == "table"
    # issue 34, item 14: listed under the flow run, not under a task run with "Flow run: None"
    assert all(a.flow_run_id is not None and a.task_run_id is None for a in by_key.values())
    table = json.loads(by_key[key["model-selection"]].data) if isinstance(by_key[key["model-selection"]].data, str) \
        else by_key[key["model-selection"]].data
    chosen = [r for r in table if "← chosen" in r["k"]]
    assert len(chosen) == 1 and chosen[0]["k"].startswith(res.output.split("states: k = ")[1].split()[0])
    assert all(not isinstance(v, float) for r in table for v in r.values())  # rounded, as text
    assert sum(r["status"] == "not fitted" for r in table) <= 1  # infeasible k in one row, not a row each
    pointer = str(by_key[key["dashboard"]].data)  # not served: the path and the command that opens it
    assert str(study / "dashboard" / "index.html") in pointer and f"vt dashboard {study} --open" in pointer
    summary = str(by_key[key["summary"]].data)
    assert "Number of states: k = " in summary and "](data:image/png;base64," in summary

    # Prefect keeps no result files in the study (a result file there could be forged or unpickled)
    assert not (study / ".prefect").exists()

    # 2. running again trains nothing: no training task runs, stores untouched
    before = {s: (run_path(study, s) / "zarr.json").stat().st_mtime_ns for s in (0, 1, 2)}
    w1 = _weights(study, 1)
    state = study_flow.with_options(task_runner=ThreadPoolTaskRunner(2))(config_path=str(cfg), return_state=True)
    assert state.is_completed()
    assert _train_states(state.state_details.flow_run_id) == {}  # finished seeds are read from their stores
    assert before == {s: (run_path(study, s) / "zarr.json").stat().st_mtime_ns for s in (0, 1, 2)}

    # 3. rerun one seed: only that one trains; training is deterministic, so it comes out the same
    res = runner.invoke(app, ["rerun", str(study), "--seed", "1"])
    assert res.exit_code == 0, res.output
    after = {s: (run_path(study, s) / "zarr.json").stat().st_mtime_ns for s in (0, 1, 2)}
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]
    np.testing.assert_array_equal(_weights(study, 1), w1)
    with get_client(sync_client=True) as client:  # the Prefect UI's runs list: named by the study, tagged
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[location_tag(study)])),
                                     sort=FlowRunSort.START_TIME_ASC)
    assert [r.name for r in runs] == ["tiny · run 1", "tiny · run 2", "tiny · rerun 3 (seed 1)"]
    assert all({"vt", "study:tiny", f"training:{meta['training_hash']}"} <= set(r.tags) for r in runs)

    # 4. status
    res = runner.invoke(app, ["status", str(study)])
    assert res.exit_code == 0 and res.output.count("complete") == 4  # 3 seeds + "study: complete"


def test_a_failing_seed_fails_alone_and_rerun_completes_it(tmp_path, monkeypatch):
    """An exception in one seed's training (injected): the others train and are analysed, the study
    is partial, `vt status` names the seed, `vt rerun --seed N` completes it without retraining
    the others."""
    from typer.testing import CliRunner

    from flows.cli import app
    from vt_core.storage.run_store import RunStore
    from vt_core.storage.study import run_path

    study = tmp_path / "study"
    d = tiny_dict(study, model={"factory": "tests.plugins.faulty:make_net", "kwargs": {"width": 32}},
                  hooks={"activations": ["layers.2"], "probe_size": 8},
                  hmm={"features": ["l2", "spectral", "var_w", "test_accuracy"]})
    cfg = write_toml(d, tmp_path / "faulty.toml")
    runner = CliRunner()
    monkeypatch.setenv("VT_TEST_FAIL_SEED", "1")
    res = runner.invoke(app, ["run", str(cfg)])
    assert res.exit_code == 1  # a clean message, not a traceback
    out = " ".join(res.output.split())
    assert "seed 1 failed (the others were analysed)" in out and "injected failure in seed 1" in out
    assert "Traceback" not in res.output
    a = json.loads((study / "analysis.json").read_text())
    assert sorted(int(s) for s in a["convergence_step"]) == [0, 2]  # analysed without seed 1
    assert (study / "dashboard" / "index.html").is_file()
    mtimes = {s: (run_path(study, s) / "zarr.json").stat().st_mtime_ns for s in (0, 2)}

    res = runner.invoke(app, ["status", str(study)])
    assert res.exit_code == 0
    out = " ".join(res.output.split())
    assert "study: failed" in out and "seeds 1 failed" in out and f"`vt rerun {study} --seed N`" in out
    from vt_core.storage.seed_status import seed_status

    row = {r["seed"]: r for r in seed_status(study)}[1]
    assert row["status"] == "failed" and "injected failure in seed 1" in row["error"]
    assert RunStore(run_path(study, 1)).status == "failed"

    monkeypatch.delenv("VT_TEST_FAIL_SEED")  # the fix
    res = runner.invoke(app, ["rerun", str(study), "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert RunStore(run_path(study, 1)).status == "complete"
    assert {s: (run_path(study, s) / "zarr.json").stat().st_mtime_ns for s in (0, 2)} == mtimes  # not retrained
    a = json.loads((study / "analysis.json").read_text())
    assert sorted(int(s) for s in a["convergence_step"]) == [0, 1, 2]
    res = runner.invoke(app, ["status", str(study)])
    assert "complete" in res.output.split("study:")[-1]


def test_seed_groups_through_the_flow(tmp_path):
    """seed_group_size = 2 with 3 seeds: one group task for seeds 0 and 1, a per-seed task for 2;
    a second run trains nothing and leaves every store untouched."""
    study = tmp_path / "study"
    cfg = write_toml(tiny_dict(study, training={"epochs": 6, "seed_group_size": 2},
                               hmm={"features": ["l2", "spectral", "var_w", "test_accuracy"]}), tmp_path / "g.toml")
    state = study_flow.with_options(task_runner=ThreadPoolTaskRunner(2))(config_path=str(cfg), return_state=True)
    assert state.is_completed()
    result = state.result()
    assert sorted(result["runs"]) == [0, 1, 2] and not result["failed"]
    with get_client(sync_client=True) as client:
        names = {t.name for t in client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[state.state_details.flow_run_id])))}
    assert "train-seeds-[0, 1]" in names and "train-seed-2" in names
    for seed in (0, 1, 2):
        assert RunStore(run_path(study, seed)).status == "complete"
    before = {s: (run_path(study, s) / "zarr.json").stat().st_mtime_ns for s in (0, 1, 2)}
    again = study_flow.with_options(task_runner=ThreadPoolTaskRunner(2))(config_path=str(cfg))
    assert sorted(again["runs"]) == [0, 1, 2] and not again["failed"]
    assert again["runs"][0]["skipped"] and again["runs"][1]["skipped"]  # seed 2's came from the cache
    assert {s: (run_path(study, s) / "zarr.json").stat().st_mtime_ns for s in (0, 1, 2)} == before
