"""A study directory given as an fsspec URL (memory://): the same commit protocol, resume, lock,
validation, analysis and flow as a local directory, and the same numbers."""

import json
import socket
import uuid

import fsspec
import numpy as np
import pytest
from prefect.task_runners import ThreadPoolTaskRunner
from typer.testing import CliRunner

from flows.cli import app
from flows.study import study_flow
from tests.helpers import store_arrays, tiny_dict, write_toml
from vt_core import stages
from vt_core.config.study_config import parse_config
from vt_core.metrics.store import load_features
from vt_core.stages.train import train_seed
from vt_core.storage.layout import layout
from vt_core.storage.location import location, url
from vt_core.storage.run_store import RunStore
from vt_core.storage.seed_status import seed_status
from vt_core.storage.study import (
    StudyLockedError,
    prepare_study,
    reset_seed,
    run_path,
    study_lock,
    validate_study,
)

pytestmark = pytest.mark.flow  # runs a Prefect flow or the `vt` command

runner = CliRunner()
SEEDS = [0, 1, 2]
HMM = {"features": ["l2", "spectral", "var_w", "test_accuracy"]}


@pytest.fixture
def mem_url():
    u = f"memory://vt-tests/{uuid.uuid4().hex}/study"
    yield u
    fs = fsspec.filesystem("memory")
    if fs.exists(u.removeprefix("memory://")):
        fs.rm(u.removeprefix("memory://"), recursive=True)


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    """The same tiny study in a local directory, trained and analysed without interruption."""
    study = prepare_study(parse_config(tiny_dict(tmp_path_factory.mktemp("ref") / "study", seeds=SEEDS, hmm=HMM)))
    for s in SEEDS:
        train_seed(study, s)
    stages.analyse(study)
    return study


def test_memory_study_equals_local_after_an_interruption(mem_url, local_reference):
    study = prepare_study(parse_config(tiny_dict(mem_url, seeds=SEEDS, hmm=HMM)))
    assert url(study) == mem_url and (study / "study.json").is_file()

    seen = []

    def die_after_five(p):  # a crash mid-run (after 5 checkpoints were handed to the writer)
        seen.append(p["step"])
        if len(seen) == 5:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        train_seed(mem_url, 0, progress=die_after_five)
    store = RunStore(run_path(mem_url, 0), mode="r")
    assert 0 < store.committed <= 5 and store.status == "failed"
    assert store.resume_path.is_file()
    for s in SEEDS:  # resumes seed 0 from its last commit
        assert train_seed(mem_url, s)["status"] == "complete"
    for s in SEEDS:
        got, want = store_arrays(url(run_path(mem_url, s))), store_arrays(run_path(local_reference, s))
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)

    assert stages.analyse(mem_url)["seeds"] == SEEDS
    a, b = (json.loads((location(x) / "analysis.json").read_text()) for x in (mem_url, local_reference))
    assert a["chosen_k"] == b["chosen_k"] and a["convergence_step"] == b["convergence_step"]
    m = load_features(mem_url, ["l2", "test_accuracy"])
    np.testing.assert_allclose(m.values, load_features(local_reference, ["l2", "test_accuracy"]).values,
                               rtol=1e-6)
    assert not (location(mem_url) / "metrics.zarr.new").exists()
    with pytest.raises(ValueError, match="memory:// study lives in this process only"):
        stages.analyse(mem_url, workers=2)


def test_memory_study_lock_validate_and_reset(mem_url):
    study = prepare_study(parse_config(tiny_dict(mem_url, seeds=SEEDS, training={"epochs": 4})))
    for s in SEEDS:
        train_seed(study, s)
    # the lock is an exclusive create: a live holder on another host is refused, by name
    layout(study).lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "then"}))
    with pytest.raises(StudyLockedError, match="pid 1 on elsewhere"):
        with study_lock(mem_url):
            pass
    layout(study).lock.write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname(), "since": "then"}))
    with study_lock(mem_url):  # a stale lock (its process is gone) is taken over
        assert json.loads(layout(study).lock.read_text())["pid"] != 2**22 + 7
    assert not layout(study).lock.exists()

    assert validate_study(mem_url) == []
    chunk = next(p for p in (run_path(study, 1) / "weights" / "layers.0.weight").rglob("c*") if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:10])  # a truncated chunk
    problems = validate_study(mem_url)
    assert all(p.startswith("seed 1:") for p in problems) and "weights/layers.0.weight" in problems[0]
    reset_seed(mem_url, 1)
    assert not run_path(study, 1).exists()
    assert [r["status"] for r in seed_status(mem_url)] == ["complete", "missing", "complete"]
    assert train_seed(mem_url, 1)["status"] == "complete" and validate_study(mem_url) == []


def test_memory_study_through_the_flow_and_cli(mem_url, tmp_path):
    cfg = write_toml(tiny_dict(mem_url, name="tiny_memory", seeds=SEEDS, hmm=HMM, training={"epochs": 6}), tmp_path / "tiny.toml")
    flow = study_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))
    first = flow(config_path=str(cfg))
    assert first["study"] == mem_url and sorted(first["runs"]) == SEEDS and not first["failed"]
    assert first["dashboard"] == f"{mem_url}/dashboard/index.html"
    assert "<html" in location(first["dashboard"]).read_text()[:500].lower()
    assert not (location(mem_url) / ".prefect").exists()  # no result files kept in the study
    second = flow(config_path=str(cfg))  # finished seeds: summaries read from their own stores
    def same(runs):
        return {s: {k: v for k, v in r.items() if k != "skipped"} for s, r in runs.items()}

    assert same(second["runs"]) == same(first["runs"]) and all(r["skipped"] for r in second["runs"].values())

    res = runner.invoke(app, ["status", mem_url])
    assert res.exit_code == 0 and "study: complete" in res.output, res.output
    res = runner.invoke(app, ["validate", mem_url])
    assert res.exit_code == 0 and "every store" in res.output, res.output
    res = runner.invoke(app, ["analyze", mem_url, "--runner", "dask"])
    assert res.exit_code == 2 and "Dask workers cannot see it" in res.output, res.output
    res = runner.invoke(app, ["dashboard", mem_url])
    assert res.exit_code == 0 and f"{mem_url}/dashboard/index.html" in res.output, res.output
    res = runner.invoke(app, ["report", mem_url])
    assert res.exit_code == 0 and f"written to {mem_url}/report.md" in res.output, res.output
    assert (location(mem_url) / "report.md").read_text().startswith("# vt report: `tiny_memory`")
