"""vt_core.external.recorder: the user's own loop recorded into the same stores as `vt run`."""

import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.helpers import ROOT, store_arrays, tiny_dict
from vt_core import Recorder
from vt_core.config.study_config import ExternalStudyError, parse_config
from vt_core.data import build_task
from vt_core.external.recorder import RecorderError, StepOrderError
from vt_core.models import build_model
from vt_core.runtime import Runtime
from vt_core.stages.train import train_seed
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import load_study, prepare_study, run_path
from vt_core.training.loop import loss_and_correct

THREAD = Runtime(writer="thread")


def _config(tmp_path):
    return parse_config(tiny_dict(tmp_path / "vt", seeds=[0], training={"epochs": 4},
                                  checkpoints={"every_epochs": None, "every_steps": 5}))


def _user_loop(cfg, study, seed: int, runtime: Runtime) -> None:
    """vt's training loop written out by hand, as a user would (same data, init, batch order,
    optimizer), recorded by the Recorder."""
    task = build_task(cfg.data, seed)
    torch.manual_seed(seed)
    model = build_model(cfg.model, task, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    n, bs = len(task.x_train), 32
    probe = task.x_test[:8]

    def evaluate(x, y):
        model.eval()
        with torch.no_grad():
            loss, ok = loss_and_correct("hinge", model(x), y, task.n_classes)
        model.train()
        return float(loss), float(ok) / len(y)

    grads: list[float] = []

    def scalars():
        (trl, tra), (tel, tea) = evaluate(task.x_train, task.y_train), evaluate(task.x_test, task.y_test)
        gn = sum(grads) / len(grads) if grads else math.nan
        grads.clear()
        return {"train_loss": trl, "train_accuracy": tra, "test_loss": tel, "test_accuracy": tea, "grad_norm": gn}

    with Recorder(study, seed=seed, model=model, hooks=["layers.1"], probe=probe, probe_targets=task.y_test[:8],
                  every_steps=5, steps_per_epoch=n // bs, runtime=runtime) as rec:
        rec.step(0, **scalars())
        step = 0
        for _ in range(4):
            perm = torch.randperm(n, generator=gen)
            for b in range(n // bs):
                idx = perm[b * bs:(b + 1) * bs]
                opt.zero_grad(set_to_none=True)
                loss_and_correct("hinge", model(task.x_train[idx]), task.y_train[idx], task.n_classes)[0].backward()
                grads.append(float(torch.stack([p.grad.norm() for p in model.parameters()]).norm()))
                opt.step()
                step += 1
                rec.step(step, **(scalars() if rec.due(step) or step == 32 else {}))


@pytest.mark.parametrize("runtime", [THREAD, Runtime(writer="process")], ids=["thread", "process"])
def test_recorded_loop_equals_vt_run(tmp_path, runtime):
    cfg = _config(tmp_path)
    prepare_study(cfg)
    train_seed(cfg.output_dir, 0, runtime=THREAD)
    _user_loop(cfg, tmp_path / "mine", 0, runtime)
    ours, theirs = store_arrays(run_path(tmp_path / "mine", 0)), store_arrays(run_path(cfg.output_dir, 0))
    assert sorted(ours) == sorted(theirs)
    assert list(ours["step"]) == [0, 5, 10, 15, 20, 25, 30, 32]  # the last step is always kept
    for name in theirs:
        if name == "grad_norm":  # the user's loop sums its norms in another order
            np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    store = RunStore(run_path(tmp_path / "mine", 0), mode="r")
    assert store.status == "complete" and store.check(read=True) == []
    assert store.attrs["parameter_roles"] == RunStore(run_path(cfg.output_dir, 0), mode="r").attrs["parameter_roles"]


def test_study_config_says_what_is_known(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    with Recorder(tmp_path / "s", seed=7, model=model, every_steps=2, data="my data", runtime=THREAD) as rec:
        for step in range(5):
            rec.step(step, train_loss=1.0 / (step + 1), lr=0.1)
    cfg = load_study(tmp_path / "s")
    assert cfg.seeds == [7] and cfg.origin is not None and cfg.origin.kind == "recorder"
    assert cfg.model.name == "external" and cfg.model.class_name == "torch.nn.modules.container.Sequential"
    assert cfg.model.parameters == {"0.weight": [3, 4], "0.bias": [3], "2.weight": [2, 3], "2.bias": [2]}
    assert cfg.data.description == "my data" and cfg.checkpoints.every_steps == 2
    assert set(cfg.origin.unknown) == {"data", "optimizer", "training"}
    with pytest.raises(ExternalStudyError, match="does not know its optimizer"):
        _ = cfg.optimizer
    with pytest.raises(ExternalStudyError, match="cannot train"):
        _ = cfg.training
    arrays = store_arrays(run_path(tmp_path / "s", 7))
    assert list(arrays["step"]) == [0, 2, 4] and list(arrays["lr"]) == [0.1] * 3
    assert np.isnan(arrays["test_accuracy"]).all() and "activations/step" not in arrays
    # a second seed joins the study; another model is refused
    with Recorder(tmp_path / "s", seed=3, model=model, every_steps=2, runtime=THREAD) as rec:
        rec.step(0)
    assert load_study(tmp_path / "s").seeds == [7, 3]
    other = torch.nn.Linear(4, 2)
    with pytest.raises(Exception, match="another model or schedule"):
        Recorder(tmp_path / "s", seed=4, model=other, every_steps=2, runtime=THREAD)


def test_steps_must_increase_and_resume_continues(tmp_path):
    model = torch.nn.Linear(3, 2)
    study = tmp_path / "s"
    rec = Recorder(study, seed=0, model=model, steps=[0, 3, 6, 9], runtime=THREAD)
    for step in range(7):
        rec.step(step, train_loss=float(step))
    with pytest.raises(StepOrderError, match="steps must increase"):
        rec.step(6)
    rec.close(error=RuntimeError("the loop crashed"))
    assert RunStore(run_path(study, 0), mode="r").status == "failed"
    with pytest.raises(StepOrderError, match="committed up to step 6.*rewind=True"):
        Recorder(study, seed=0, model=model, steps=[0, 3, 6, 9], runtime=THREAD).step(2)
    with Recorder(study, seed=0, model=model, steps=[0, 3, 6, 9], runtime=THREAD) as rec:
        assert rec.resume_step == 6
        for step in range(6, 11):
            rec.step(step, train_loss=float(step))
    arrays = store_arrays(run_path(study, 0))
    assert list(arrays["step"]) == [0, 3, 6, 9, 10] and list(arrays["train_loss"]) == [0, 3, 6, 9, 10]
    with Recorder(study, seed=0, model=model, steps=[0, 3, 6, 9], rewind=True, runtime=THREAD) as rec:
        rec.step(4, train_loss=-4.0)
        rec.step(6, train_loss=-6.0)
    arrays = store_arrays(run_path(study, 0))
    assert list(arrays["step"]) == [0, 3, 6] and list(arrays["train_loss"]) == [0, 3, -6]
    assert RunStore(run_path(study, 0), mode="r").check(read=True) == []


def test_misuse_is_refused_clearly(tmp_path):
    model = torch.nn.Linear(3, 2)
    with pytest.raises(RecorderError, match="exactly one schedule"):
        Recorder(tmp_path / "a", seed=0, model=model, runtime=THREAD)
    with pytest.raises(RecorderError, match="need a probe batch"):
        Recorder(tmp_path / "a", seed=0, model=model, hooks=["*"], every_steps=1, runtime=THREAD)
    with Recorder(tmp_path / "a", seed=0, model=model, every_steps=1, runtime=THREAD) as rec:
        rec.step(0, train_loss=1.0)
        with pytest.raises(RecorderError, match="not given at the first checkpoint"):
            rec.step(1, other=2.0)
        with pytest.raises(RecorderError, match="not a number"):
            rec.step(2, train_loss="high")


def test_only_rank_zero_writes(tmp_path):
    model = torch.nn.Linear(3, 2)
    with Recorder(tmp_path / "s", seed=0, model=model, every_steps=1, runtime=Runtime(writer="thread", rank=1)) as rec:
        assert rec.step(0, train_loss=1.0) is False
    assert not (tmp_path / "s").exists()


def _committed(path) -> int:
    try:
        return RunStore(path, mode="r").committed
    except Exception:  # noqa: BLE001 - not created yet
        return 0


@pytest.mark.integration
def test_sigkill_keeps_commits_and_resume_equals_an_uninterrupted_run(tmp_path):
    """The example script (the process writer), killed with SIGKILL mid-run, then run again."""
    script = [sys.executable, str(ROOT / "examples" / "recorder_loop.py")]
    args = ["--seeds", "1", "--steps", "60", "--every", "4", "--save-every", "4", "--no-analyze"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run(script + [str(tmp_path / "whole")] + args, env=env, check=True, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(script + [str(killed)] + args + ["--sleep", "0.05"], env=env)
    deadline = time.monotonic() + 120
    while _committed(run_path(killed, 0)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = RunStore(run_path(killed, 0), mode="r")
    assert 4 <= store.committed < 16 and store.effective_status() == "interrupted"
    assert store.check(read=True) == []  # every committed checkpoint intact and readable
    subprocess.run(script + [str(killed)] + args, env=env, check=True, timeout=300)
    whole, resumed = store_arrays(run_path(tmp_path / "whole", 0)), store_arrays(run_path(killed, 0))
    assert sorted(whole) == sorted(resumed) and len(whole["step"]) == 16
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)


DDP_RANK = """
import json, sys
import torch
import torch.distributed as dist
from vt_core import Recorder

rank, study, rdv, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=2)
torch.manual_seed(0)  # the same initial weights on both ranks (DDP also broadcasts rank 0's)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
ddp = torch.nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
data = torch.Generator().manual_seed(100 + rank)  # each rank trains on its own batches
probe = torch.randn(4, 8, generator=torch.Generator().manual_seed(7))
losses = {}
with Recorder(study, seed=0, model=ddp, hooks=["*"], probe=probe, every_steps=5) as rec:
    rec.step(0)
    for step in range(1, 31):
        x = torch.randn(16, 8, generator=data)
        opt.zero_grad()
        loss = ((ddp(x) - x.sum(1, keepdim=True)) ** 2).mean()
        loss.backward()  # gradients averaged over the ranks: both hold the same weights after each step
        opt.step()
        rec.step(step, train_loss=loss.item())
        if step % 5 == 0:
            losses[step] = loss.item()
            torch.save(model.state_dict(), f"{out}/rank{rank}-step{step}.pt")
dist.barrier()
dist.destroy_process_group()
print(json.dumps({"rank": rank, "active": rec.active, "losses": losses}))
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_ddp_with_a_real_process_group_only_rank_zero_writes(tmp_path):
    """Two processes in a gloo process group train one DDP model on different batches, each inside
    its own Recorder: one store, written by rank 0 alone, whose weights are the (shared) weights of
    both ranks and whose scalars are rank 0's."""
    import json

    study, out = tmp_path / "study", tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", DDP_RANK, str(r), str(study), str(tmp_path / "rdv"), str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=240)
        assert p.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    assert [r["active"] for r in results] == [True, False]
    assert sorted(p.name for p in (study / "runs").iterdir()) == ["seed=0000.resume.pt", "seed=0000.zarr"]
    store = RunStore(run_path(study, 0), mode="r")
    assert store.status == "complete" and store.committed == 7 and store.validate() == []
    arrays = store_arrays(run_path(study, 0))
    assert arrays["step"].tolist() == [0, 5, 10, 15, 20, 25, 30]
    for i, step in enumerate(range(5, 31, 5), start=1):
        r0, r1 = (torch.load(out / f"rank{r}-step{step}.pt", weights_only=True) for r in (0, 1))
        for name, t in r0.items():
            torch.testing.assert_close(t, r1[name], rtol=0, atol=0)  # DDP kept the ranks equal
            np.testing.assert_array_equal(arrays[f"weights/{name}"][i], t.numpy(), err_msg=f"{name} at {step}")
        assert arrays["train_loss"][i] == results[0]["losses"][str(step)] != results[1]["losses"][str(step)]


def test_a_loop_that_ends_at_its_first_step_records_it_once(tmp_path):
    """The last step is recorded at close only when the schedule did not record it, step 0 included."""
    for steps in ([0], [0, 3]):
        study = tmp_path / f"s{len(steps)}"
        with Recorder(study, seed=0, model=torch.nn.Linear(3, 2), every_steps=5, runtime=THREAD) as rec:
            for s in steps:
                rec.step(s, train_loss=1.0)
        assert list(store_arrays(run_path(study, 0))["step"]) == ([0] if steps == [0] else [0, 3])


def test_a_loop_that_gives_no_epoch_reads_back(tmp_path):
    """Issue 30, item 4: a loop written like the README's (steps and losses, no epoch) exports one
    row per seed and step with metrics and states, and open_study shows the metrics."""
    from tests.helpers import assert_reads_back

    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.2)
        with Recorder(tmp_path / "s", seed=seed, model=model, every_steps=5, runtime=Runtime(writer="thread")) as rec:
            for step in range(41):
                loss = torch.nn.functional.cross_entropy(model(x), y)
                if rec.due(step):
                    rec.step(step, train_loss=loss.item(), test_accuracy=(model(x).argmax(-1) == y).float().mean().item())
                opt.zero_grad()
                loss.backward()
                opt.step()
    arrays = store_arrays(run_path(tmp_path / "s", 1))
    assert np.isnan(arrays["epoch"]).all()
    table = assert_reads_back(tmp_path / "s", {s: list(range(0, 41, 5)) for s in (0, 1, 2)})
    assert table["epoch"].isna().all() and np.isfinite(table["test_accuracy"]).all()
