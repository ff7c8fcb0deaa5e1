"""Where a seed's training stands: step, epoch, the batch within the epoch, and the batch order.

One :class:`BatchPosition` per seed, whether it trains alone (:class:`~vt_core.training.loop.Trainer`)
or in a group (:class:`~vt_core.training.groups.GroupTrainer`). Each epoch draws a permutation of the
training set from the seed's own ``torch.Generator``; batch ``b`` of the epoch is the slice
``perm[b * batch_size : (b + 1) * batch_size]``. After each step :meth:`BatchPosition.advance`
moves on and says whether a checkpoint is due (the schedule of ``config.checkpoints``, and always
the last step). :class:`PositionMark` is the position frozen at a checkpoint: what the record and
the resume state (:mod:`vt_core.training.checkpoint_record`) are built from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vt_core.errors import VtError


class ScheduleError(VtError, ValueError):
    """A checkpoint schedule that does not fit the run."""


def checkpoint_steps(cfg, total_steps: int) -> set[int] | None:
    """Step-based schedules as a set of steps (with 0 and the last step); None for every_epochs."""
    c = cfg.checkpoints
    if c.every_epochs is not None:
        return None
    if c.every_steps is not None:
        steps = set(range(0, total_steps + 1, c.every_steps))
    elif c.log_spaced is not None:  # dense early, as Pythia's checkpoints are
        steps = {int(round(x)) for x in np.geomspace(1, total_steps, c.log_spaced)}
    else:
        late = [s for s in c.steps if s > total_steps]
        if late:
            raise ScheduleError(f"checkpoints.steps {late} lie past the last step {total_steps} "
                                f"({cfg.training.epochs} epochs); drop them or train longer")
        steps = set(c.steps)
    return steps | {0, total_steps}


@dataclass(frozen=True)
class PositionMark:
    """A position frozen at a checkpoint (the live :class:`BatchPosition` moves on)."""

    step: int
    epoch: int
    batch_in_epoch: int
    batches_per_epoch: int
    perm: torch.Tensor | None  # this epoch's batch order; None between epochs
    generator: torch.Tensor  # the batch-order generator's state

    @property
    def epoch_fraction(self) -> float:
        """The epoch as a fraction: 2.5 is halfway through the third epoch."""
        return self.epoch + self.batch_in_epoch / self.batches_per_epoch


class BatchPosition:
    """One seed's position in training and its batch order (see the module docstring)."""

    def __init__(self, cfg, n_examples: int, seed: int):
        self.n_examples = n_examples
        self.batch_size = min(cfg.training.batch_size or n_examples, n_examples)
        self.batches_per_epoch = math.ceil(n_examples / self.batch_size)
        self.total_steps = cfg.training.epochs * self.batches_per_epoch
        self.every_epochs: int | None = cfg.checkpoints.every_epochs
        self.epochs: int = cfg.training.epochs
        self.ckpt_steps = checkpoint_steps(cfg, self.total_steps)
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.perm: torch.Tensor | None = None
        self.n_checkpoints = 0  # checkpoints recorded so far: the index of the next one

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps

    @property
    def expected_checkpoints(self) -> int:
        """How many checkpoints a full run records (the initialisation, the schedule, the last step)."""
        if self.ckpt_steps is not None:
            return len(self.ckpt_steps)
        assert self.every_epochs is not None
        every, total = self.every_epochs, self.epochs
        return 1 + total // every + (1 if total % every else 0)

    def batch(self) -> torch.Tensor:
        """The indices of the next batch (on the CPU); an epoch's first batch draws its order."""
        if self.perm is None:
            self.perm = torch.randperm(self.n_examples, generator=self.generator)
        start = self.batch_in_epoch * self.batch_size
        return self.perm[start : start + self.batch_size]

    def advance(self) -> bool:
        """One step done: move on, and say whether a checkpoint is due at the new position."""
        self.step += 1
        self.batch_in_epoch += 1
        end_of_epoch = self.batch_in_epoch == self.batches_per_epoch
        if end_of_epoch:
            self.epoch, self.batch_in_epoch, self.perm = self.epoch + 1, 0, None
        if self.step == self.total_steps:
            return True
        if self.ckpt_steps is not None:
            return self.step in self.ckpt_steps
        assert self.every_epochs is not None
        return end_of_epoch and self.epoch % self.every_epochs == 0

    def mark(self) -> PositionMark:
        return PositionMark(self.step, self.epoch, self.batch_in_epoch, self.batches_per_epoch, self.perm,
                            self.generator.get_state())

    def take_index(self) -> int:
        """The index of the checkpoint being recorded now; counts it."""
        index = self.n_checkpoints
        self.n_checkpoints += 1
        return index

    def restore(self, step: int, epoch: int, batch_in_epoch: int, n_checkpoints: int,
                perm: torch.Tensor | None, generator: torch.Tensor) -> None:
        """Stand where a resume state says (:func:`vt_core.training.checkpoint_record.load_resume_state`)."""
        self.generator.set_state(generator)
        self.perm = perm
        self.step, self.epoch, self.batch_in_epoch, self.n_checkpoints = step, epoch, batch_in_epoch, n_checkpoints
