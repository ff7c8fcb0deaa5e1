import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.helpers import ROOT, committed_steps, store_arrays, tiny_dict
from vt_core.config.study_config import parse_config
from vt_core.data import build_task
from vt_core.models import build_model
from vt_core.stages.train import train_seed
from vt_core.storage.run_store import RunStore
from vt_core.storage.seed_status import seed_status
from vt_core.storage.study import prepare_study, run_path
from vt_core.training.loop import DivergedError, Trainer


def weights_of(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_initialisation_follows_the_seed(tiny_config):
    a, b, c = Trainer(tiny_config, 0), Trainer(tiny_config, 0), Trainer(tiny_config, 1)
    wa, wb, wc = weights_of(a), weights_of(b), weights_of(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["layers.0.weight"], wc["layers.0.weight"])
    # the seed is set *before* the model is built: same init as seeding then building by hand
    torch.manual_seed(0)
    task = build_task(tiny_config.data, 0)
    ref = build_model(tiny_config.model, task, 1)
    assert torch.equal(ref.state_dict()["layers.0.weight"], wa["layers.0.weight"])


def test_schedule_and_scalars(tiny_config):
    t = Trainer(tiny_config, 0)
    ckpts = list(t.run())
    assert [c.index for c in ckpts] == list(range(13))  # init + 12 epochs
    assert t.expected_checkpoints == 13
    assert [c.step for c in ckpts] == [8 * e for e in range(13)]  # 256 / 32 = 8 steps per epoch
    assert set(ckpts[0].scalars) == {"train_loss", "train_accuracy", "test_loss", "test_accuracy", "grad_norm"}
    assert np.isnan(ckpts[0].scalars["grad_norm"]) and ckpts[1].scalars["grad_norm"] > 0  # no step before init
    assert ckpts[-1].activations["layers.1"].shape == (8, 32)


def test_every_steps_schedule(tmp_path):
    cfg = parse_config(tiny_dict(tmp_path, checkpoints={"every_epochs": None, "every_steps": 5}, training={"epochs": 2}))
    steps = [c.step for c in Trainer(cfg, 0).run()]
    assert steps == [0, 5, 10, 15, 16]  # the last step is always kept
    assert Trainer(cfg, 0).expected_checkpoints == 5


def test_resume_in_memory_is_exact(tmp_path):
    cfg = parse_config(tiny_dict(tmp_path, checkpoints={"every_epochs": None, "every_steps": 3}))  # resumes mid-epoch too
    full = list(Trainer(cfg, 0).run())
    t = Trainer(cfg, 0)
    it = t.run()
    first = [next(it) for _ in range(7)]
    state = t.state_dict()
    t2 = Trainer(cfg, 0)
    t2.load_state_dict(state)
    rest = list(t2.run())
    for a, b in zip(full, first + rest, strict=True):
        assert a.step == b.step
        for k in a.weights:
            np.testing.assert_array_equal(a.weights[k], b.weights[k])


def test_gradient_clipping_acts(tmp_path):
    cfg = parse_config(tiny_dict(tmp_path, optimizer={"lr": 1.0, "weight_decay": 0.0},
                                 training={"grad_clip": 1e-3}))
    t = Trainer(cfg, 0)
    before = torch.cat([p.detach().flatten().clone() for p in t.model.parameters()])
    t._train_step(torch.arange(32))
    after = torch.cat([p.detach().flatten() for p in t.model.parameters()])
    assert (after - before).norm() <= 1e-3 * (1 + 1e-4)  # SGD, lr 1: the update is the clipped gradient


def test_divergence_marks_the_seed(tmp_path):
    cfg = parse_config(tiny_dict(tmp_path, optimizer={"lr": 1e12}, training={"loss": "mse"}, seeds=[0]))
    study = prepare_study(cfg)
    summary = train_seed(study, 0)
    assert summary["status"] == "diverged"
    assert "diverged at step" in summary["error"]
    assert seed_status(study)[0]["status"] == "diverged"


def test_nan_loss_raises_diverged(tiny_config):
    t = Trainer(tiny_config, 0)
    with torch.no_grad():
        t.model.layers[0].weight[0, 0] = float("nan")
    with pytest.raises(DivergedError):
        list(t.run())


def test_finished_seed_is_skipped(tiny_config):
    study = prepare_study(tiny_config)
    assert train_seed(study, 0)["skipped"] is False
    again = train_seed(study, 0)
    assert again["skipped"] is True and again["status"] == "complete"


KILL_SCRIPT = """
import sys
from vt_core.stages.train import train_seed
train_seed(sys.argv[1], 0)
"""


@pytest.mark.integration  # starts processes (a kill trial, worker processes or a compiler)
def test_sigkill_during_training_resumes_bitwise(tmp_path):
    """Kill a real training process at several points; the resumed store equals an uninterrupted run."""
    over = dict(model={"name": "mlp", "hidden": [64]}, training={"epochs": 40}, seeds=[0])
    killed = prepare_study(parse_config(tiny_dict(tmp_path / "killed", **over)))
    clean = prepare_study(parse_config(tiny_dict(tmp_path / "clean", **over)))
    train_seed(clean, 0)
    path = run_path(killed, 0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = np.random.default_rng(0)
    kills = 0
    for target in (3, 12, 25):
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(killed)], env=env)
        deadline = time.time() + 120
        while committed_steps(path) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(float(rng.uniform(0, 0.05)))  # land anywhere inside a checkpoint's writes
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2, "training finished before it could be killed; make the run longer"
    assert RunStore(path).status == "running"  # a killed run is never marked complete
    assert seed_status(killed)[0]["status"] == "interrupted"  # ... and status says what happened
    summary = train_seed(killed, 0)
    assert summary["status"] == "complete"
    a, b = store_arrays(path), store_arrays(run_path(clean, 0))
    assert a.keys() == b.keys()
    assert len(a["step"]) == 41 and len(np.unique(a["step"])) == 41  # none missing, none duplicated
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_log_spaced_and_explicit_schedules(tmp_path):
    cfg = parse_config(tiny_dict(tmp_path, checkpoints={"every_epochs": None, "log_spaced": 6}))  # 96 steps
    t = Trainer(cfg, 0)
    steps = [c.step for c in t.run()]
    assert steps == sorted(t.ckpt_steps) and steps[0] == 0 and steps[-1] == 96
    gaps = np.diff(steps)
    assert gaps[0] < gaps[-1]  # dense early
    assert t.expected_checkpoints == len(steps)
    cfg = parse_config(tiny_dict(tmp_path, checkpoints={"every_epochs": None, "steps": [3, 10, 50]}))
    assert [c.step for c in Trainer(cfg, 0).run()] == [0, 3, 10, 50, 96]
    cfg = parse_config(tiny_dict(tmp_path, checkpoints={"every_epochs": None, "steps": [3, 500]}))
    with pytest.raises(ValueError, match=r"\[500\] lie past the last step 96"):
        Trainer(cfg, 0)


def test_warmup_cosine_schedule_and_its_resume(tmp_path):
    cfg = parse_config(tiny_dict(tmp_path, training={"lr_schedule": "warmup_cosine", "warmup_steps": 10,
                                                    "min_lr_ratio": 0.1},
                                 checkpoints={"every_epochs": None, "every_steps": 7}))
    t = Trainer(cfg, 0)
    lrs = []
    it = t.run()
    for _ in range(8):
        next(it)
        lrs.append(t.optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.1 / 10)  # first step of the warm-up
    assert max(lrs) <= 0.1 + 1e-12 and lrs[-1] < lrs[3]
    state = t.state_dict()
    t2 = Trainer(cfg, 0)
    t2.load_state_dict(state)
    assert t2.optimizer.param_groups[0]["lr"] == pytest.approx(t.optimizer.param_groups[0]["lr"])
    full = [c.weights["layers.0.weight"] for c in Trainer(cfg, 0).run()]
    rest = [c.weights["layers.0.weight"] for c in t2.run()]
    np.testing.assert_array_equal(full[-1], rest[-1])


def test_capture_inputs_and_outputs(tmp_path):
    cfg = parse_config(tiny_dict(tmp_path, hooks={"activations": ["layers.1"], "capture": "both"}))
    c = next(Trainer(cfg, 0).run())
    assert set(c.activations) == {"layers.1", "layers.1.input"}
    np.testing.assert_array_equal(c.activations["layers.1"], np.maximum(c.activations["layers.1.input"], 0))


def test_device_auto_resolves_here():
    from vt_core.training.loop import resolve_device

    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_device("cpu").type == "cpu"


def test_initialisation_is_per_seed_even_in_threads(tiny_config):
    """Seeds built side by side in threads (the default runner) get the same weights as alone."""
    from concurrent.futures import ThreadPoolExecutor

    alone = {s: weights_of(Trainer(tiny_config, s))["layers.0.weight"] for s in range(6)}
    with ThreadPoolExecutor(4) as pool:
        together = dict(zip(range(6), pool.map(lambda s: weights_of(Trainer(tiny_config, s))["layers.0.weight"],
                                               range(6))))
    for s in range(6):
        assert torch.equal(alone[s], together[s]), s
