"""`vt run --runner tcp://...` on a real Dask cluster: `dask scheduler` and two `dask worker`
processes started on 127.0.0.1, as a user would start them on their machines."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.helpers import ROOT, free_port, tiny_dict, write_toml
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import run_path

pytestmark = [pytest.mark.flow, pytest.mark.integration]
DASK = str(Path(sys.executable).with_name("dask"))


def test_study_runs_on_an_external_dask_cluster(tmp_path):
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for i in range(2):
            procs.append(subprocess.Popen(
                [DASK, "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard",
                 "--name", f"w{i}", "--local-directory", str(tmp_path / f"w{i}")],
                env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 90
        while True:  # the scheduler takes a moment to listen
            try:
                client = Client(address, timeout=5)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        with client:
            client.wait_for_workers(2, timeout=90)
            pids = set(client.run(os.getpid).values())
            study = tmp_path / "study"
            cfg = write_toml(tiny_dict(study, hmm={"features": ["l2", "spectral", "var_w", "test_accuracy"]}),
                             tmp_path / "tiny.toml")
            res = CliRunner().invoke(app, ["run", str(cfg), "--runner", address])
            assert res.exit_code == 0, res.output + repr(res.exception)
            assert "states: k = " in res.output
            # the tasks ran on the cluster's workers, not in this process
            prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
            assert {"train_seed_task", "compute_metrics_task", "fit_hmm_task"} <= set(prefixes), prefixes
            assert os.getpid() not in pids
        for seed in (0, 1, 2):
            assert RunStore(run_path(study, seed)).status == "complete"
        assert json.loads((study / "analysis.json").read_text())["chosen_k"] >= 1
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
