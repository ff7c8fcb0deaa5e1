"""Seeds trained together as one batched model store what each would store alone.

Tolerance: a batched matmul sums in a different order than an unbatched one, so float32 results
agree to rounding, which grows slowly with the number of steps. Here (100-400 SGD/AdamW steps) the
largest relative difference seen was 1e-6 (MLP) and 2e-7 (transformer); the tests allow rtol 1e-5,
atol 1e-6. A grouping mistake (a shared gradient norm, a seed's batches or optimizer state mixed
up) moves values by far more."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import ROOT, committed_steps, store_arrays, tiny_dict
from vt_core.config.study_config import parse_config
from vt_core.runtime import Runtime
from vt_core.stages.train import train_group, train_seed
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import prepare_study, run_path
from vt_core.training.groups import GroupTrainer, groupable, resolve_group_size
from vt_core.training.loop import Trainer

RTOL, ATOL = 1e-5, 1e-6


def _assert_same(a, b, exact=False):
    assert a.keys() == b.keys()
    for k in a:
        if exact or a[k].dtype.kind not in "fc":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            np.testing.assert_allclose(a[k], b[k], rtol=RTOL, atol=ATOL, err_msg=k)


def _pair(tmp_path, **over):
    alone = prepare_study(parse_config(tiny_dict(tmp_path / "alone", **over)))
    group = prepare_study(parse_config(tiny_dict(tmp_path / "group", **over)))
    return alone, group


MLP = dict(model={"name": "mlp", "hidden": [48, 24]}, hooks={"activations": ["layers.*"], "probe_size": 8},
           optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01})
TRANSFORMER = dict(
    model={"name": "transformer", "d_model": 32, "n_heads": 2, "d_mlp": 64, "n_layers": 1},
    data={"name": "modular_addition", "p": 17, "train_fraction": 0.4}, training={"epochs": 60, "loss": "cross_entropy"},
    optimizer={"name": "adamw", "lr": 1e-3, "weight_decay": 1.0, "betas": [0.9, 0.98]},
    checkpoints={"every_epochs": 10}, hooks={"activations": ["blocks.0.hook_resid_post"], "probe_size": 8})


@pytest.mark.parametrize("over,copy_mode", [
    pytest.param(MLP, "sync", id="mlp-sync"), pytest.param(MLP, "async", id="mlp-async"),
    pytest.param(TRANSFORMER, "sync", id="transformer-sync"),
    # the async copy is the same code for every model (mlp-async above): 18 s left to `make test-slow`
    pytest.param(TRANSFORMER, "async", id="transformer-async", marks=pytest.mark.slow)])
def test_group_stores_what_each_seed_stores_alone(tmp_path, over, copy_mode):
    alone, group = _pair(tmp_path, **over)
    for seed in (0, 1, 2):
        train_seed(alone, seed)
    summaries = train_group(group, [0, 1, 2], runtime=Runtime(group_async=copy_mode == "async"))
    assert [s["status"] for s in summaries] == ["complete"] * 3
    for seed in (0, 1, 2):
        a, b = store_arrays(run_path(alone, seed)), store_arrays(run_path(group, seed))
        assert len(a["step"]) == len(b["step"]) > 3
        _assert_same(a, b)
        # the resume states have the same form: a group-trained seed continues alone
        sa, sb = RunStore(run_path(alone, seed)).load_resume(), RunStore(run_path(group, seed)).load_resume()
        assert sa.keys() == sb.keys() and sa["optimizer"]["state"].keys() == sb["optimizer"]["state"].keys()
        np.testing.assert_array_equal(sa["position"].numpy(), sb["position"].numpy())


def test_gradient_clipping_is_per_seed(tmp_path):
    over = dict(MLP, training={"epochs": 4, "grad_clip": 0.05})
    alone, group = _pair(tmp_path, **over)
    for seed in (0, 1, 2):
        train_seed(alone, seed)
    train_group(group, [0, 1, 2])
    for seed in (0, 1, 2):
        _assert_same(store_arrays(run_path(alone, seed)), store_arrays(run_path(group, seed)))


@pytest.mark.parametrize("copy_mode", ["sync", "async"])
def test_one_seed_diverges_the_others_go_on(tmp_path, copy_mode):
    over = dict(model={"factory": "tests.plugins.blowup:make_net", "kwargs": {"width": 16, "blowup_seed": 1}},
                hooks={"activations": [], "probe_size": 8}, training={"epochs": 6},
                hmm={"features": ["l2", "test_accuracy"]})
    alone, group = _pair(tmp_path, **over)
    solo = {s: train_seed(alone, s) for s in (0, 1, 2)}
    grouped = dict(zip((0, 1, 2), train_group(group, [0, 1, 2], runtime=Runtime(group_async=copy_mode == "async"))))
    assert solo[1]["status"] == grouped[1]["status"] == "diverged"
    assert "training diverged at step" in grouped[1]["error"]
    step = lambda e: int(e.split("at step ")[1].split(":")[0])  # noqa: E731
    assert step(grouped[1]["error"]) == step(solo[1]["error"])
    assert grouped[1]["committed_steps"] == solo[1]["committed_steps"]
    for seed in (0, 2):
        assert grouped[seed]["status"] == "complete"
        _assert_same(store_arrays(run_path(alone, seed)), store_arrays(run_path(group, seed)))


def _events(group, how):
    out = []
    if how == "run":
        for e in group.run():
            out.append(e)
    else:
        group.train(lambda *e: out.append(e))
    return out


def test_asynchronous_host_copies_hand_on_the_same_events_in_order(tmp_path):
    """train() with a background host thread gives exactly run()'s events (same checkpoints, same
    resume states, same order); an error in that thread is raised in the training thread, and the
    rounds before it were handed on."""
    import torch

    cfg = parse_config(tiny_dict(tmp_path / "x", **TRANSFORMER))
    sync = _events(GroupTrainer([Trainer(cfg, s) for s in (0, 1, 2)], async_host=False), "run")
    group = GroupTrainer([Trainer(cfg, s) for s in (0, 1, 2)], async_host=True)
    assert group.async_host
    got = _events(group, "train")
    assert [(i, c.index, c.step) for i, c, _ in got] == [(i, c.index, c.step) for i, c, _ in sync]
    assert len(got) == 3 * 7
    for (_, a, sa), (_, b, sb) in zip(got, sync):
        np.testing.assert_equal(a.scalars, b.scalars)  # NaN grad_norm at step 0 on both sides
        assert a.epoch == b.epoch
        for k in b.weights:
            np.testing.assert_array_equal(a.weights[k], b.weights[k])
        for k in b.activations:
            np.testing.assert_array_equal(a.activations[k], b.activations[k])
        assert torch.equal(sa["position"], sb["position"]) and torch.equal(sa["generator"], sb["generator"])
        assert torch.equal(sa["perm"], sb["perm"]) and sa["scheduler"] == sb["scheduler"]
        for k in sb["model"]:
            assert torch.equal(sa["model"][k], sb["model"][k])
        for j in sb["optimizer"]["state"]:
            for k, v in sb["optimizer"]["state"][j].items():
                assert torch.equal(sa["optimizer"]["state"][j][k], v)

    seen = []

    def sink(i, ckpt, state):
        if ckpt.index == 4:
            raise OSError("disk gone")
        seen.append((i, ckpt.index))

    with pytest.raises(OSError, match="disk gone"):
        GroupTrainer([Trainer(cfg, s) for s in (0, 1, 2)], async_host=True).train(sink)
    assert {(i, k) for i in range(3) for k in range(4)} <= set(seen)


def test_batch_norm_models_train_one_by_one_exactly(tmp_path):
    over = dict(model={"name": "mlp", "hidden": [32], "norm": "batch"}, training={"epochs": 3})
    cfg = parse_config(tiny_dict(tmp_path / "x", **over))
    assert "running statistics" in groupable(Trainer(cfg, 0).model)
    with pytest.raises(ValueError, match="cannot be trained as a group"):
        GroupTrainer([Trainer(cfg, 0), Trainer(cfg, 1)])
    alone, group = _pair(tmp_path, **over)
    for seed in (0, 1):
        train_seed(alone, seed)
    assert [s["status"] for s in train_group(group, [0, 1])] == ["complete"] * 2
    for seed in (0, 1):
        _assert_same(store_arrays(run_path(alone, seed)), store_arrays(run_path(group, seed)), exact=True)


def test_group_size_resolution(tmp_path):
    cfg = parse_config(tiny_dict(tmp_path, seeds=list(range(50))))
    assert resolve_group_size(cfg) == 1  # auto on a CPU
    cfg = parse_config(tiny_dict(tmp_path, seeds=list(range(50)), training={"epochs": 2, "device": "cuda"}))
    assert resolve_group_size(cfg) == 40
    cfg = parse_config(tiny_dict(tmp_path, seeds=[0, 1, 2], training={"epochs": 2, "seed_group_size": 8}))
    assert resolve_group_size(cfg) == 3
    # grouping is not part of a seed's identity; fp32 is left out of the hash (older studies keep theirs)
    a = parse_config(tiny_dict(tmp_path, training={"epochs": 2, "seed_group_size": 4}))
    b = parse_config(tiny_dict(tmp_path, training={"epochs": 2}))
    c = parse_config(tiny_dict(tmp_path, training={"epochs": 2, "precision": "bf16"}))
    assert a.training_hash() == b.training_hash() != c.training_hash()
    assert "seed_group_size" not in a.training_dict()["training"] and "precision" not in b.training_dict()["training"]


GROUP_SCRIPT = """
import sys
from vt_core.stages.train import train_group
train_group(sys.argv[1], [0, 1, 2])
"""


@pytest.mark.integration  # starts processes (a kill trial, worker processes or a compiler)
def test_sigkilled_group_resumes_alone_or_together(tmp_path):
    """Kill a group mid-run; then seed 0 continues alone and seeds 1, 2 as a group: each ends as
    an uninterrupted group run does."""
    over = dict(MLP, training={"epochs": 40})
    clean, killed = _pair(tmp_path, **over)
    train_group(clean, [0, 1, 2])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", GROUP_SCRIPT, str(killed)], env=env)
    deadline = time.time() + 120
    while min(committed_steps(run_path(killed, s)) for s in (0, 1, 2)) < 12 and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the group finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {s: committed_steps(run_path(killed, s)) for s in (0, 1, 2)}
    assert all(0 < n < 41 for n in done.values()), done
    assert train_seed(killed, 0)["status"] == "complete"
    assert [s["status"] for s in train_group(killed, [1, 2])] == ["complete"] * 2
    for seed in (0, 1, 2):
        a, b = store_arrays(run_path(killed, seed)), store_arrays(run_path(clean, seed))
        assert len(np.unique(a["step"])) == len(a["step"]) == 41
        _assert_same(a, b)


def test_precision_bf16_changes_the_arithmetic_and_the_hash(tmp_path):
    """bf16 autocast (a config choice, off by default) trains, alone and in a group alike, and
    gives other numbers than fp32; it is part of the training hash."""
    over = dict(MLP, training={"epochs": 3, "precision": "bf16"})
    alone, group = _pair(tmp_path, **over)
    fp32 = prepare_study(parse_config(tiny_dict(tmp_path / "fp32", **dict(MLP, training={"epochs": 3}))))
    train_seed(alone, 0)
    train_seed(fp32, 0)
    train_group(group, [0, 1])
    a, b, c = (store_arrays(run_path(s, 0)) for s in (alone, group, fp32))
    w = "weights/layers.0.weight"
    assert np.isfinite(a[w]).all() and not np.allclose(a[w][-1], c[w][-1], rtol=1e-6, atol=1e-7)
    # bf16 keeps 8 bits of mantissa: alone and group round differently, and SGD with momentum
    # carries the difference on; the trajectories stay close as a whole (not element by element)
    rel = np.linalg.norm(a[w][-1] - b[w][-1]) / np.linalg.norm(a[w][-1])
    assert rel < 0.05, rel
    assert parse_config(tiny_dict(tmp_path, **over)).training_hash() != \
        parse_config(tiny_dict(tmp_path, **dict(MLP, training={"epochs": 3}))).training_hash()


def test_a_full_disk_under_one_seed_of_a_group_fails_that_seed_alone(tmp_path, monkeypatch):
    """The writes of seed 1's store fail (ENOSPC, in its writer process): seed 1 ends `failed`
    with the error and its committed checkpoints intact; seeds 0 and 2 finish as if alone."""
    from tests.storage.test_writer import full_disk

    alone, group = _pair(tmp_path, **dict(MLP, training={"epochs": 30}))
    with monkeypatch.context() as m:
        full_disk(m, 20, only="seed=0001")  # the writer processes are forks: they have the patch
        out = dict(zip((0, 1, 2), train_group(group, [0, 1, 2], runtime=Runtime(writer="process"))))
    assert out[1]["status"] == "failed" and "No space left on device" in out[1]["error"]
    store = RunStore(run_path(group, 1), mode="r")
    assert 1 <= store.committed <= 20 and store.validate() == []
    for seed in (0, 2):
        assert out[seed]["status"] == "complete"
        train_seed(alone, seed)
        _assert_same(store_arrays(run_path(alone, seed)), store_arrays(run_path(group, seed)))
    # room again: seed 1 resumes (alone here) and ends as a clean run of it does
    assert train_seed(group, 1)["status"] == "complete"
    train_seed(alone, 1)
    _assert_same(store_arrays(run_path(alone, 1)), store_arrays(run_path(group, 1)))


def _compiler_available() -> bool:
    import shutil

    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


@pytest.mark.integration  # starts processes (a kill trial, worker processes or a compiler)
@pytest.mark.skipif(not _compiler_available(), reason="inductor on a CPU needs a C++ compiler")
def test_compiled_step_stores_what_the_eager_step_stores(tmp_path, recwarn):
    """training.compile = "default": the step (forward and backward) is compiled by inductor, alone
    and in a group; the stored arrays agree with the eager run's to the group tolerance (fused
    kernels round differently), and compiling is not part of the training hash."""
    from torch._dynamo.utils import counters

    over = dict(MLP, training={"epochs": 6})
    eager = prepare_study(parse_config(tiny_dict(tmp_path / "eager", **over)))
    compiled_over = dict(MLP, training={"epochs": 6, "compile": "default"})
    alone, group = _pair(tmp_path, **compiled_over)
    graphs = counters["stats"]["unique_graphs"]
    for seed in (0, 1):
        train_seed(eager, seed)
        train_seed(alone, seed)
    train_group(group, [0, 1])
    assert counters["stats"]["unique_graphs"] > graphs  # dynamo did capture the step
    assert not [str(w.message) for w in recwarn.list if "failed on the training step" in str(w.message)]
    for seed in (0, 1):
        ref = store_arrays(run_path(eager, seed))
        _assert_same(ref, store_arrays(run_path(alone, seed)))
        _assert_same(ref, store_arrays(run_path(group, seed)))
    assert parse_config(tiny_dict(tmp_path, **compiled_over)).training_hash() == \
        parse_config(tiny_dict(tmp_path, **over)).training_hash()


def test_a_step_that_fails_to_compile_falls_back_to_eager(tmp_path, monkeypatch):
    """A compiler backend that raises (as inductor does on an op it cannot handle): one warning
    naming the error, and the seeds train on eagerly, bit for bit as if compile were off."""
    import torch

    real = torch.compile

    def broken_backend(gm, example_inputs):
        raise NotImplementedError("no lowering for aten.frobnicate")

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, backend=broken_backend, dynamic=False))
    over = dict(MLP, training={"epochs": 3})
    eager = prepare_study(parse_config(tiny_dict(tmp_path / "eager", **over)))
    failing = prepare_study(parse_config(tiny_dict(tmp_path / "failing", **dict(MLP, training={"epochs": 3,
                                                                                             "compile": "default"}))))
    train_group(eager, [0, 1])
    train_seed(eager, 2)
    with pytest.warns(RuntimeWarning, match=r"torch.compile \(mode 'default'\) failed.*aten.frobnicate"):
        train_group(failing, [0, 1])
    with pytest.warns(RuntimeWarning, match="training on without it"):
        train_seed(failing, 2)
    for seed in (0, 1, 2):
        _assert_same(store_arrays(run_path(eager, seed)), store_arrays(run_path(failing, seed)), exact=True)
