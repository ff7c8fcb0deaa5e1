"""SIGKILL the real `vt run` process during training, run it again: every checkpoint once."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import ROOT, committed_steps, tiny_dict, write_toml
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import run_path

pytestmark = [pytest.mark.flow, pytest.mark.integration]


def test_killed_study_completes_on_rerun(tmp_path):
    study = tmp_path / "study"
    d = tiny_dict(study, model={"name": "mlp", "hidden": [128]}, training={"epochs": 60},
                  hmm={"features": ["l2", "spectral", "var_w", "test_accuracy"]})
    cfg = write_toml(d, tmp_path / "kill.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "prefect-home")}
    cmd = [sys.executable, "-m", "flows.cli", "run", str(cfg)]
    # a session of its own, so the kill also takes Prefect's ephemeral server child with it
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 180
    while committed_steps(run_path(study, 0)) < 10 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = {s: committed_steps(run_path(study, s)) for s in d["seeds"]}
    assert 0 < partial[0] < 61

    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "states: k = " in done.stdout
    for seed in d["seeds"]:
        store = RunStore(run_path(study, seed))
        assert store.status == "complete"
        steps = store.root["step"][:]
        assert store.committed == 61 and len(steps) == 61
        np.testing.assert_array_equal(steps, np.arange(61) * 8)  # each checkpoint once, in order
