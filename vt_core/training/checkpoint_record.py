"""What a seed records at a checkpoint, and the state it resumes from: one format for a seed
trained alone (:class:`~vt_core.training.loop.Trainer`) and in a group (:class:`~vt_core.training.groups.GroupTrainer`),
so that a seed trained in a group resumes alone and vice versa.

The resume state (``runs/seed=NNNN.resume.pt``, ``torch.save``-d, read with ``weights_only=True``)::

    model       the model's state_dict
    optimizer   the optimizer's state_dict (one model's parameters, numbered as model.parameters())
    scheduler   the LR scheduler's state_dict
    generator   the batch-order generator's state
    torch_rng   the global torch RNG's state
    perm        the current epoch's batch order (empty between epochs)
    position    int64 [step, epoch, batch_in_epoch, n_checkpoints]
    grad_acc    float64 [sum of gradient norms, steps] since the last checkpoint
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
import torch

from vt_core.names import SCALARS
from vt_core.storage.run_store import Checkpoint
from vt_core.training.position import BatchPosition, PositionMark

#: The global torch RNG is process-wide: seeding it and building a model, or restoring it from a
#: resume state, happen under this lock (seeds trained side by side in threads would interleave).
GLOBAL_RNG_LOCK = threading.Lock()


def grad_norm(grad_acc: torch.Tensor) -> float:
    """The mean gradient norm over the steps since the last checkpoint (NaN before any step)."""
    return float(grad_acc[0] / grad_acc[1]) if grad_acc[1] > 0 else float("nan")


def checkpoint_record(index: int, at: PositionMark, train: tuple, test: tuple, grad_acc: torch.Tensor,
                      weights: dict[str, np.ndarray], activations: dict[str, np.ndarray],
                      examples: dict[str, np.ndarray] | None = None) -> Checkpoint:
    """One checkpoint's record. ``train`` and ``test`` are ``(mean loss, number correct, number
    of examples)``; ``grad_acc`` is ``[sum of gradient norms, steps]`` since the last checkpoint;
    ``weights`` and ``activations`` are host arrays the record may keep."""
    (train_loss, train_ok, n_train), (test_loss, test_ok, n_test) = train, test
    values = (float(train_loss), float(train_ok) / n_train, float(test_loss), float(test_ok) / n_test,
              grad_norm(grad_acc))
    return Checkpoint(index=index, step=at.step, epoch=at.epoch_fraction,
                      scalars=dict(zip(SCALARS, values, strict=True)), weights=weights, activations=activations,
                      examples=examples or {})


def resume_state(*, model: Mapping, optimizer: Mapping, scheduler: Mapping, at: PositionMark,
                 n_checkpoints: int, torch_rng: torch.Tensor, grad_acc: torch.Tensor) -> dict:
    """The resume state (format in the module docstring) of a seed standing at ``at`` with
    ``n_checkpoints`` recorded."""
    return {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "generator": at.generator,
        "torch_rng": torch_rng,
        "perm": at.perm if at.perm is not None else torch.empty(0, dtype=torch.long),
        "position": torch.tensor([at.step, at.epoch, at.batch_in_epoch, n_checkpoints]),
        "grad_acc": grad_acc,
    }


def load_resume_state(state: Mapping, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      scheduler, position: BatchPosition) -> torch.Tensor:
    """Restore a :func:`resume_state` into a seed's objects and the global torch RNG; returns
    its ``grad_acc`` (on the CPU)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    step, epoch, batch_in_epoch, n_checkpoints = (int(v) for v in state["position"])
    position.restore(step, epoch, batch_in_epoch, n_checkpoints,
                     perm=state["perm"] if state["perm"].numel() else None, generator=state["generator"])
    with GLOBAL_RNG_LOCK:
        torch.set_rng_state(state["torch_rng"])
    return state["grad_acc"]
