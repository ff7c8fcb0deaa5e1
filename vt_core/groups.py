"""Train a group of seeds as one batched model (``torch.func``: stacked parameters + ``vmap``).

Small research models leave a GPU nearly idle; stacking the seeds' parameters along a new leading
dimension and training them with one vmapped forward/backward and one optimizer step over the
stacked tensors runs many seeds for the price of a few. Each seed stays exactly what it would be
alone:

- its own :class:`~vt_core.training.Trainer` (``members``) builds its data split, initialisation
  (the seed is set before the model is built), batch order (its own generator) and schedule;
- the loss is the *sum* of the seeds' mean losses, so each seed's gradient is its own;
- SGD, Adam and AdamW are elementwise, so one optimizer over stacked tensors updates each slice as
  that seed's optimizer would; gradient clipping is done per seed (each seed's own norm);
- at a checkpoint the slice is copied back into the member, which evaluates, captures and
  serialises itself exactly as when alone: the stored arrays and the resume state have the same
  format, so a seed trained in a group resumes alone (``vt rerun --seed N``) and vice versa.

A seed whose loss becomes NaN/inf is marked diverged at that step; its slice keeps being updated
(NaNs do not cross slices) but nothing more is recorded for it. Models with batch-norm running
statistics have no batching rule for their in-place buffer updates: :func:`groupable` says so and
such seeds train one by one.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.func import functional_call, stack_module_state, vmap

from vt_core.config import StudyConfig
from vt_core.store import Checkpoint
from vt_core.training import DivergedError, Trainer, loss_and_correct, lr_lambda, precision, resolve_device

AUTO_GROUP_CUDA = 40


def resolve_group_size(config: StudyConfig, n_seeds: int | None = None) -> int:
    """``training.seed_group_size``: an integer, or ``auto`` = 1 on a CPU or MPS, 40 on CUDA."""
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


class GroupTrainer:
    """Seeds that share a config (and stand at the same step) trained together."""

    def __init__(self, members: list[Trainer]):
        if not members:
            raise ValueError("a group needs at least one seed")
        steps = {m.step for m in members}
        if len(steps) != 1:
            raise ValueError(f"seeds of a group must stand at the same step, got {sorted(steps)}")
        why = groupable(members[0].model)
        if why is not None:
            raise ValueError(f"this model cannot be trained as a group: {why}; use seed_group_size = 1")
        self.members = members
        self.cfg = members[0].cfg
        self.device = members[0].device
        self.G = len(members)
        m0 = members[0]
        self.step, self.total_steps = m0.step, m0.total_steps
        self.names = [n for n, _ in m0.model.named_parameters()]
        params, buffers = stack_module_state([m.model for m in members])
        self.params = {n: params[n].detach().clone().requires_grad_(True) for n in self.names}
        self.buffers = {n: b.detach().clone() for n, b in buffers.items()}
        self.base = m0.model  # its structure only; its own tensors are never used in the group step
        self.optimizer = self._make_optimizer()
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
        self.alive = [True] * self.G
        self.loss_name, self.n_classes = self.cfg.training.loss, m0.task.n_classes
        self._losses = vmap(self._loss, in_dims=(0, 0, 0, 0), randomness="error")

    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optimizer
        params = [self.params[n] for n in self.names]
        if o.name == "sgd":
            return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
        return cls(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)

    # -- optimizer state: members (per seed) <-> group (stacked) -----------------------------------

    def _member_params(self, m: Trainer) -> list[torch.Tensor]:
        named = dict(m.model.named_parameters())
        return [named[n] for n in self.names]

    def _stack_optimizer_state(self) -> None:
        for j, n in enumerate(self.names):
            states = [m.optimizer.state.get(self._member_params(m)[j], {}) for m in self.members]
            if not states[0]:
                continue
            stacked = {}
            for key, v in states[0].items():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    stacked[key] = torch.stack([s[key] for s in states]).to(self.device)
                else:  # e.g. Adam's step count: the same for every seed of the group
                    stacked[key] = v.clone() if isinstance(v, torch.Tensor) else v
            self.optimizer.state[self.params[n]] = stacked

    def _sync_member(self, i: int) -> None:
        """Copy seed ``i``'s slice (parameters, optimizer and scheduler state, position) back."""
        m = self.members[i]
        with torch.no_grad():
            for p, n in zip(self._member_params(m), self.names):
                p.copy_(self.params[n][i])
        for p, n in zip(self._member_params(m), self.names):
            st = self.optimizer.state.get(self.params[n])
            if st:
                m.optimizer.state[p] = {k: (v[i].clone() if isinstance(v, torch.Tensor) and v.dim() > 0 else
                                            (v.clone() if isinstance(v, torch.Tensor) else v)) for k, v in st.items()}
        m.scheduler.load_state_dict(self.scheduler.state_dict())
        for mg, g in zip(m.optimizer.param_groups, self.optimizer.param_groups):
            mg["lr"] = g["lr"]
        m.grad_acc = self.grad_acc[i].clone()

    # -- the step ---------------------------------------------------------------------------------

    def _loss(self, params, buffers, x, y):
        out = functional_call(self.base, (params, buffers), (x,))
        loss, _ = loss_and_correct(self.loss_name, out, y, self.n_classes)
        return loss

    def _train_step(self, idx: torch.Tensor) -> None:
        x, y = self.x_train[self.arange, idx], self.y_train[self.arange, idx]
        with precision(self.cfg.training.precision, self.device):
            losses = self._losses(self.params, self.buffers, x, y)  # (G,)
        bad = ~torch.isfinite(losses.detach())
        self.first_bad = torch.where(bad & (self.first_bad < 0), torch.full_like(self.first_bad, self.step),
                                     self.first_bad)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # each seed's parameters get its own loss's gradient
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
        self.step += 1

    def _next_indices(self) -> torch.Tensor:
        """Each member's next batch from its own permutation (as :meth:`Trainer.run` draws it)."""
        rows = []
        for m in self.members:
            if m.perm is None:
                m.perm = torch.randperm(len(m.task.x_train), generator=m.generator)
            start = m.batch_in_epoch * m.batch_size
            rows.append(m.perm[start : start + m.batch_size])
        return torch.stack(rows).to(self.device, non_blocking=True)

    def _advance_members(self) -> bool:
        end = False
        for m in self.members:
            m.step = self.step
            m.batch_in_epoch += 1
            end = m.batch_in_epoch == m.batches_per_epoch
            if end:
                m.epoch, m.batch_in_epoch, m.perm = m.epoch + 1, 0, None
        return end

    def _divergences(self) -> list[tuple[int, DivergedError]]:
        """Seeds that diverged since the last look (one host sync)."""
        first = self.first_bad.tolist()
        out = []
        for i, s in enumerate(first):
            if s >= 0 and self.alive[i]:
                self.alive[i] = False
                out.append((i, DivergedError(s, float("nan"))))
        return out

    def train_steps(self, n: int) -> None:
        """``n`` steps with no checkpoints (for benchmarks)."""
        for _ in range(n):
            self._train_step(self._next_indices())
            self._advance_members()

    def run(self) -> Iterator[tuple[int, Checkpoint | DivergedError]]:
        """Train to the end; yields ``(member index, Checkpoint)`` for every live seed at each
        checkpoint, and ``(member index, DivergedError)`` once for a seed that diverged."""
        if self.members[0].n_checkpoints == 0:
            for i, m in enumerate(self.members):
                yield i, m.checkpoint()
        while self.step < self.total_steps:
            self._train_step(self._next_indices())
            end_of_epoch = self._advance_members()
            if self.members[0]._due(end_of_epoch):
                yield from self._divergences()
                for i, m in enumerate(self.members):
                    if self.alive[i]:
                        self._sync_member(i)
                        ckpt = m.checkpoint()
                        self.grad_acc[i].zero_()
                        yield i, ckpt
        yield from self._divergences()
