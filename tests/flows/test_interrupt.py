"""Ctrl-C and SIGTERM sent to a real `vt run` in its own process group (as a terminal or a scheduler
would): training stops at the next checkpoint, running seeds end ``interrupted``, nothing new
starts, the command exits 130 saying how to resume; running it again finishes the study with
stores bit-identical to a run that was never interrupted."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import ROOT, committed_steps, store_arrays, tiny_dict, write_toml
from vt_core.config.study_config import parse_config
from vt_core.stages.train import train_seed
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import prepare_study, run_path

pytestmark = [pytest.mark.flow, pytest.mark.integration]


def _config(tmp_path, name):
    study = tmp_path / name
    # long enough (4,800 steps a seed) that the signal arrives while the seeds train
    d = tiny_dict(study, seeds=[0, 1, 2], training={"epochs": 600}, checkpoints={"every_epochs": 10},
                  hmm={"features": ["l2", "spectral", "test_accuracy"], "bootstrap": 0, "cv_folds": 0})
    return study, d, write_toml(d, tmp_path / f"{name}.toml")


def _start(cfg, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "prefect-home")}
    cmd = [sys.executable, "-m", "flows.cli", "run", str(cfg)]
    return cmd, env, subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True)


def _signal_during_training(proc, study, sig):
    deadline = time.time() + 240
    while committed_steps(run_path(study, 0)) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the signal"
    os.killpg(proc.pid, sig)  # the whole group, as a terminal's Ctrl-C reaches every process in it
    out, _ = proc.communicate(timeout=240)
    return out


def test_ctrl_c_stops_at_a_checkpoint_and_the_run_resumes_bit_identically(tmp_path):
    study, d, cfg = _config(tmp_path, "study")
    cmd, env, proc = _start(cfg, tmp_path)
    out = _signal_during_training(proc, study, signal.SIGINT)
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted:" in out and "Run the same command again" in out and "Traceback" not in out, out[-3000:]
    assert not (study / "analysis.json").exists()  # nothing analysed
    stopped = {s: RunStore(run_path(study, s)).attrs for s in (0, 1) if run_path(study, s).exists()}
    assert stopped and all(a["status"] == "interrupted" for a in stopped.values()), {s: (a["status"], a["committed_steps"], a.get("error")) for s, a in stopped.items()}
    assert all(0 < a["committed_steps"] < 61 for a in stopped.values())
    assert not run_path(study, 2).exists()  # queued behind the two workers: never started

    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "seed 0: resuming from step" in done.stdout, done.stdout[-3000:]

    ref = tmp_path / "reference"
    config = parse_config(tiny_dict(ref, **{k: v for k, v in d.items() if k not in ("output_dir",)}))
    prepare_study(config)
    for seed in d["seeds"]:
        train_seed(ref, seed)
        got, want = store_arrays(run_path(study, seed)), store_arrays(run_path(ref, seed))
        assert sorted(got) == sorted(want)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"seed {seed}: {name}")


def test_sigterm_behaves_like_the_first_ctrl_c(tmp_path):
    study, _, cfg = _config(tmp_path, "term")
    _, _, proc = _start(cfg, tmp_path)
    out = _signal_during_training(proc, study, signal.SIGTERM)
    assert proc.returncode == 130 and "interrupted:" in out and "Traceback" not in out, out[-3000:]
    assert RunStore(run_path(study, 0)).status == "interrupted"
