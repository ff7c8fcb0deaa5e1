"""The per-checkpoint record and the resume state, one format for seeds alone and in groups."""

import math

import numpy as np
import torch

from vt_core.names import SCALARS
from vt_core.training.checkpoint_record import checkpoint_record, load_resume_state, resume_state
from vt_core.training.loop import Trainer
from vt_core.training.position import PositionMark


def _mark(**over):
    d = dict(step=12, epoch=1, batch_in_epoch=4, batches_per_epoch=8, perm=None,
             generator=torch.Generator().manual_seed(3).get_state())
    return PositionMark(**(d | over))


def test_checkpoint_record_scalars():
    w = {"layers.0.weight": np.ones((2, 3), np.float32)}
    c = checkpoint_record(5, _mark(), train=(torch.tensor(0.5), torch.tensor(48), 64),
                          test=(0.25, 3.0, 4), grad_acc=torch.tensor([6.0, 3.0], dtype=torch.float64),
                          weights=w, activations={})
    assert (c.index, c.step, c.epoch) == (5, 12, 1.5)
    assert list(c.scalars) == list(SCALARS)
    assert c.scalars == {"train_loss": 0.5, "train_accuracy": 0.75, "test_loss": 0.25, "test_accuracy": 0.75,
                         "grad_norm": 2.0}
    assert c.weights is w
    c = checkpoint_record(0, _mark(step=0, epoch=0, batch_in_epoch=0), (1.0, 0, 2), (1.0, 1, 2),
                          torch.zeros(2, dtype=torch.float64), {}, {})
    assert math.isnan(c.scalars["grad_norm"])  # no step since the last checkpoint


def test_resume_state_format_and_round_trip(tiny_config):
    t = Trainer(tiny_config, 0)
    it = t.run()
    for _ in range(3):
        next(it)
    for _ in range(3):  # three steps into the third epoch: a permutation is drawn
        t._train_step(t.position.batch())
        t.position.advance()
    state = t.state_dict()
    assert list(state) == ["model", "optimizer", "scheduler", "generator", "torch_rng", "perm", "position",
                           "grad_acc"]
    assert state["position"].tolist() == [19, 2, 3, 3] and state["perm"].numel() == 256
    assert state["grad_acc"].dtype == torch.float64 and state["grad_acc"][1] == 3
    fresh = Trainer(tiny_config, 0)
    grad_acc = load_resume_state(state, model=fresh.model, optimizer=fresh.optimizer, scheduler=fresh.scheduler,
                                 position=fresh.position)
    assert torch.equal(grad_acc, state["grad_acc"])
    assert (fresh.step, fresh.position.epoch, fresh.position.batch_in_epoch, fresh.n_checkpoints) == (19, 2, 3, 3)
    assert torch.equal(fresh.position.perm, state["perm"]) and torch.equal(fresh.generator.get_state(),
                                                                           state["generator"])
    again = resume_state(model=fresh.model.state_dict(), optimizer=fresh.optimizer.state_dict(),
                         scheduler=fresh.scheduler.state_dict(), at=fresh.position.mark(),
                         n_checkpoints=fresh.n_checkpoints, torch_rng=torch.get_rng_state(), grad_acc=grad_acc)
    assert torch.equal(again["position"], state["position"]) and torch.equal(again["perm"], state["perm"])
    for k, v in state["model"].items():
        assert torch.equal(again["model"][k], v)
    between = Trainer(tiny_config, 0).state_dict()
    assert between["perm"].numel() == 0 and between["perm"].dtype == torch.long  # no epoch drawn yet
