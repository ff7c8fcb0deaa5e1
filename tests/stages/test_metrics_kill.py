"""SIGKILL the analysis at random points during the metric stage; running it again gives exactly
the metrics (and the analysis) of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from tests.helpers import ROOT, tiny_dict
from vt_core import stages
from vt_core.config.study_config import parse_config
from vt_core.stages.train import train_seed
from vt_core.storage.study import prepare_study

METRICS_ZARR, NEW_SUFFIX = "metrics.zarr", ".new"

pytestmark = pytest.mark.integration

ANALYSE = """
import sys
from vt_core import stages
stages.analyse(sys.argv[1])
"""


def _study(path):
    d = tiny_dict(path, seeds=[0, 1, 2], model={"name": "mlp", "hidden": [96]}, training={"epochs": 40},
                  checkpoints={"every_epochs": None, "every_steps": 2}, hooks={"activations": ["*"], "probe_size": 16},
                  hmm={"features": ["l2", "spectral", "var_w", "test_accuracy"], "max_states": 3, "restarts": 2})
    study = prepare_study(parse_config(d))
    for seed in (0, 1, 2):
        train_seed(study, seed)
    return study


def test_sigkill_during_the_metric_stage_then_rerun_equals_an_uninterrupted_run(tmp_path):
    clean, killed = _study(tmp_path / "clean"), _study(tmp_path / "killed")
    stages.analyse(clean)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = np.random.default_rng(7)
    landed = 0
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", ANALYSE, str(killed)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        new = killed / (METRICS_ZARR + NEW_SUFFIX)
        deadline = time.time() + 120
        while not new.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)  # the metric stage has planned its new store: it is computing now
        time.sleep(float(rng.uniform(0, 0.6)))
        if proc.poll() is None:
            in_metrics = new.exists()
            proc.send_signal(signal.SIGKILL)
            landed += in_metrics
        proc.wait()
        if (killed / "analysis.json").exists():
            break  # a trial ran to the end: nothing left to interrupt
    assert landed >= 2, "no kill landed inside the metric stage; make the study larger"
    stages.analyse(killed)
    a = xr.open_zarr(str(killed / METRICS_ZARR), consolidated=False).load()
    b = xr.open_zarr(str(clean / METRICS_ZARR), consolidated=False).load()
    for name in ("value", "computed", "per_layer", "nonfinite"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    ja, jb = (json.loads((s / "analysis.json").read_text()) for s in (killed, clean))
    assert ja["chosen_k"] == jb["chosen_k"] and ja["states"] == jb["states"]
    assert not (killed / (METRICS_ZARR + NEW_SUFFIX)).exists()


def test_a_half_imported_distributed_is_no_worker(monkeypatch):
    """`vt import` streams each seed's metrics in its own thread; another thread importing dask's
    `distributed` left it half initialised in sys.modules, and the check for a Dask worker raised
    AttributeError ("partially initialized module 'distributed' has no attribute 'get_worker'")."""
    import types

    from vt_core.stages import metrics as stage

    monkeypatch.setitem(sys.modules, "distributed", types.ModuleType("distributed"))  # no get_worker yet
    assert stage._seed_slot() is stage._ONE_SEED_AT_A_TIME
