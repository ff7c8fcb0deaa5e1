"""Train a group of seeds as one batched model (``torch.func``: stacked parameters + ``vmap``).

Small research models leave a GPU nearly idle; stacking the seeds' parameters along a new leading
dimension and training them with one vmapped forward/backward and one optimizer step over the
stacked tensors runs many seeds for the price of a few. Each seed stays exactly what it would be
alone:

- its own :class:`~vt_core.training.loop.Trainer` (``members``) builds its data split, initialisation
  (the seed is set before the model is built), batch order (its own generator) and schedule;
- the loss is the *sum* of the seeds' mean losses, so each seed's gradient is its own;
- SGD, Adam and AdamW are elementwise, so one optimizer over stacked tensors updates each slice as
  that seed's optimizer would; gradient clipping is done per seed (each seed's own norm);
- at a checkpoint the whole group is evaluated and probed at once (vmapped), copied to the host
  once per stacked tensor, and sliced into each seed's checkpoint and resume state, with the values
  and the format a seed trained alone stores: a seed trained in a group resumes alone and vice versa.

A seed whose loss becomes NaN/inf is marked diverged at that step; its slice keeps being updated
(NaNs do not cross slices) but nothing more is recorded for it. Models with batch-norm running
statistics have no batching rule for their in-place buffer updates: :func:`groupable` says so and
such seeds train one by one.

The checkpoint rounds (snapshot on the device, copy to the host, slice into each seed's record and
resume state) are :class:`vt_core.training.group_record.GroupRecorder`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.func import functional_call, stack_module_state, vmap

from vt_core.config.study_config import StudyConfig
from vt_core.training.group_record import HOST_DEPTH, Event, GroupRecorder, HostWorker
from vt_core.training.interrupt import check_stop
from vt_core.training.loop import Trainer, TrainStep, loss_and_correct, lr_lambda, make_optimizer, resolve_device

AUTO_GROUP_CUDA = 40

__all__ = ["AUTO_GROUP_CUDA", "HOST_DEPTH", "GroupTrainer", "groupable", "resolve_group_size"]


def resolve_group_size(config: StudyConfig, n_seeds: int | None = None) -> int:
    """``training.seed_group_size``: an integer, or ``auto`` = 1 on a CPU or MPS, 40 on CUDA.

    The one place that decides how many seeds train together."""
    size = config.training.seed_group_size
    n = n_seeds if n_seeds is not None else len(config.seeds)
    if size == "auto":
        size = AUTO_GROUP_CUDA if resolve_device(config.training.device).type == "cuda" else 1
    return max(1, min(int(size), n))


def groupable(model: torch.nn.Module) -> str | None:
    """Why this model cannot be trained in a group (None if it can)."""
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            return f"{name or 'model'} ({type(m).__name__}) updates running statistics in place"
    return None


def _check_members(members: list[Trainer]) -> None:
    if not members:
        raise ValueError("a group needs at least one seed")
    steps = {m.step for m in members}
    if len(steps) != 1:
        raise ValueError(f"seeds of a group must stand at the same step, got {sorted(steps)}")
    why = groupable(members[0].model)
    if why is not None:
        raise ValueError(f"this model cannot be trained as a group: {why}; use seed_group_size = 1")


class GroupTrainer:
    """Seeds that share a config (and stand at the same step) trained together.

    ``async_host``: copy checkpoint rounds to the host on a background thread (see :meth:`train`);
    None = on for CUDA, off on a CPU (the caller passes :attr:`vt_core.runtime.Runtime.group_async`)."""

    def __init__(self, members: list[Trainer], async_host: bool | None = None):
        _check_members(members)
        self.members = members
        self.cfg = members[0].cfg
        self.device = members[0].device
        self.G = len(members)
        m0 = members[0]
        self.total_steps = m0.total_steps
        self.names = [n for n, _ in m0.model.named_parameters()]
        params, buffers = stack_module_state([m.model for m in members])
        self.params = {n: params[n].detach().clone().requires_grad_(True) for n in self.names}
        self.buffers = {n: b.detach().clone() for n, b in buffers.items()}
        self.base = m0.model  # its structure only; its own tensors are never used in the group step
        self.optimizer = make_optimizer(self.cfg, [self.params[n] for n in self.names])
        self._stack_optimizer_state()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(self.cfg, self.total_steps))
        self.scheduler.load_state_dict(m0.scheduler.state_dict())
        for g, mg in zip(self.optimizer.param_groups, m0.optimizer.param_groups):
            g["lr"] = mg["lr"]
        # every member's training set on the device, stacked: one gather per step for the group
        self.x_train = torch.stack([m.task.x_train for m in members])
        self.y_train = torch.stack([m.task.y_train for m in members])
        self.arange = torch.arange(self.G, device=self.device)[:, None]
        self.grad_acc = torch.stack([m.grad_acc for m in members])  # (G, 2): sum of norms, steps
        self.first_bad = torch.full((self.G,), -1, dtype=torch.long, device=self.device)
        self.loss_name, self.n_classes = self.cfg.training.loss, m0.task.n_classes
        self._losses = vmap(self._loss, in_dims=(0, 0, 0, 0), randomness="error")
        self._step = TrainStep(self._losses, self.cfg, self.device)
        self.async_host = bool(self.device.type == "cuda" if async_host is None else async_host)
        self.recorder = GroupRecorder(self)
        #: asked after each checkpoint round: True ends training there (every member stopped early)
        self.all_ended: Callable[[], bool] = lambda: False

    @property
    def step(self) -> int:
        """The step the group stands at (every member stands there)."""
        return self.members[0].step

    def _stack_optimizer_state(self) -> None:
        """The members' optimizer states (resumed seeds have one), stacked like the parameters."""
        named = [dict(m.model.named_parameters()) for m in self.members]
        for n in self.names:
            states = [m.optimizer.state.get(p[n], {}) for m, p in zip(self.members, named)]
            if not states[0]:
                continue
            stacked = {}
            for key, v in states[0].items():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    stacked[key] = torch.stack([s[key] for s in states]).to(self.device)
                else:  # e.g. Adam's step count: the same for every seed of the group
                    stacked[key] = v.clone() if isinstance(v, torch.Tensor) else v
            self.optimizer.state[self.params[n]] = stacked

    # -- the step ---------------------------------------------------------------------------------

    def _loss(self, params, buffers, x, y):
        out = functional_call(self.base, (params, buffers), (x,))
        loss, _ = loss_and_correct(self.loss_name, out, y, self.n_classes)
        return loss

    def _train_step(self, idx: torch.Tensor) -> None:
        """One optimizer step of every seed on its batch (a row of ``idx``); the members'
        positions are the caller's to advance."""
        x, y = self.x_train[self.arange, idx], self.y_train[self.arange, idx]
        # forward and backward: the loss is the sum of the seeds' losses (G,), so each seed's
        # parameters get its own loss's gradient
        losses = self._step(self.optimizer, self.params, self.buffers, x, y)
        bad = ~torch.isfinite(losses)
        self.first_bad = torch.where(bad & (self.first_bad < 0), torch.full_like(self.first_bad, self.step),
                                     self.first_bad)
        grads = [self.params[n].grad for n in self.names]
        sq = torch.stack([g.reshape(self.G, -1).pow(2).sum(1) for g in grads if g is not None]).sum(0)
        norms = sq.sqrt()  # (G,): each seed's total gradient norm
        self.grad_acc[:, 0] += norms.to(torch.float64)
        self.grad_acc[:, 1] += 1
        clip = self.cfg.training.grad_clip
        if clip is not None:  # per seed, as torch.nn.utils.clip_grad_norm_ does for one model
            coef = torch.clamp(clip / (norms + 1e-6), max=1.0)
            for g in grads:
                if g is not None:
                    g.mul_(coef.view(self.G, *([1] * (g.dim() - 1))).to(g.dtype))
        self.optimizer.step()
        self.scheduler.step()

    def _next_indices(self) -> torch.Tensor:
        """Each member's next batch from its own batch order (as :meth:`Trainer.run` draws it)."""
        return torch.stack([m.position.batch() for m in self.members]).to(self.device, non_blocking=True)

    def _advance(self) -> bool:
        """Every member one step on; whether a checkpoint is due (the same for all of them)."""
        due = [m.position.advance() for m in self.members]
        return due[0]

    def _due_rounds(self) -> Iterator[None]:
        """Train to the end; yields (with the group standing there) whenever a checkpoint is due."""
        while self.step < self.total_steps:
            self._train_step(self._next_indices())
            if self._advance():
                yield
                check_stop()  # the round is with the writers: stop here if asked
                if self.all_ended():  # every member stopped early by the live policy
                    return

    def train_steps(self, n: int) -> None:
        """``n`` steps with no checkpoints (for benchmarks)."""
        for _ in range(n):
            self._train_step(self._next_indices())
            self._advance()

    # -- checkpoint rounds (GroupRecorder's; methods here so that benchmarks can time them) ----------

    def _snapshot(self, keep: bool = True) -> dict:
        return self.recorder.snapshot(keep)

    def _materialise(self, snap: dict) -> list[Event]:
        return self.recorder.materialise(snap)

    def _initial(self) -> Iterator[Event]:
        """The initialisation's checkpoint and resume state of each member (a fresh group only)."""
        if self.members[0].n_checkpoints == 0:
            for i, m in enumerate(self.members):
                yield i, m.checkpoint(), m.state_dict()

    def run(self) -> Iterator[Event]:
        """Train to the end; yields ``(member index, Checkpoint, resume state)`` for every live
        seed at each checkpoint, and ``(member index, DivergedError, None)`` once for a seed that
        diverged. Each checkpoint round waits for the device (see :meth:`train` for one that does not)."""
        yield from self._initial()
        for _ in self._due_rounds():
            yield from self._materialise(self._snapshot(keep=False))
        yield from self.recorder.divergences(self.first_bad.tolist())

    def train(self, sink: Callable[..., None]) -> None:
        """Train to the end, handing :meth:`run`'s events to ``sink`` in the same order.

        With ``async_host`` (the default on CUDA) a checkpoint round only snapshots the group on
        the device; a background thread copies the snapshot to the host (on a side stream), slices
        it into checkpoints and calls ``sink`` (which writes them) while the next steps train. At
        most ``HOST_DEPTH`` rounds wait for it. An error in that thread stops training at the next
        round and is raised here; rounds already snapshotted are handed on first."""
        if not self.async_host:
            for event in self.run():
                sink(*event)
            return
        for event in self._initial():
            sink(*event)
        worker = HostWorker(self._materialise, sink, HOST_DEPTH)
        try:
            for _ in self._due_rounds():
                worker.put(self._snapshot())
        finally:
            worker.close()
        for event in self.recorder.divergences(self.first_bad.tolist()):
            sink(*event)
