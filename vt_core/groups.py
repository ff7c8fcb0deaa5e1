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
- at a checkpoint the whole group is evaluated and probed at once (vmapped), copied to the host
  once per stacked tensor, and sliced into each seed's checkpoint and resume state, with the values
  and the format a seed trained alone stores: a seed trained in a group resumes alone and vice versa.

A seed whose loss becomes NaN/inf is marked diverged at that step; its slice keeps being updated
(NaNs do not cross slices) but nothing more is recorded for it. Models with batch-norm running
statistics have no batching rule for their in-place buffer updates: :func:`groupable` says so and
such seeds train one by one.
"""

from __future__ import annotations

import copy
import os
import queue
import threading
from typing import Callable, Iterator

import torch
from torch.func import functional_call, stack_module_state, vmap

from vt_core.config import StudyConfig
from vt_core.hooks import capture
from vt_core.store import Checkpoint
from vt_core.training import (DivergedError, Trainer, TrainStep, loss_and_correct, lr_lambda, make_optimizer,
                               resolve_device)

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

    def __init__(self, members: list[Trainer], async_host: bool | None = None):
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
        self.optimizer = make_optimizer(self.cfg, [self.params[n] for n in self.names])
        self._stack_optimizer_state()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(self.cfg, self.total_steps))
        self.scheduler.load_state_dict(m0.scheduler.state_dict())
        for g, mg in zip(self.optimizer.param_groups, m0.optimizer.param_groups):
            g["lr"] = mg["lr"]
        # every member's training set on the device, stacked: one gather per step for the group
        self.x_train = torch.stack([m.task.x_train for m in members])
        self.y_train = torch.stack([m.task.y_train for m in members])
        self.x_test = torch.stack([m.task.x_test for m in members])
        self.y_test = torch.stack([m.task.y_test for m in members])
        self.probe_x = torch.stack([m.probe_x for m in members])
        # evaluation runs all seeds at once; chunks of seeds keep a large test set within memory
        self.eval_chunk = max(1, min(self.G, 200_000 // max(len(m0.task.x_test), len(m0.task.x_train), 1)))
        self.state_keys = list(m0.model.state_dict().keys())
        self.buffers_host = {k: v.detach().to("cpu") for k, v in self.buffers.items() if k in self.state_keys}
        self.param_groups_template = m0.optimizer.state_dict()["param_groups"]
        self.arange = torch.arange(self.G, device=self.device)[:, None]
        self.grad_acc = torch.stack([m.grad_acc for m in members])  # (G, 2): sum of norms, steps
        self.first_bad = torch.full((self.G,), -1, dtype=torch.long, device=self.device)
        self.alive = [True] * self.G
        self.loss_name, self.n_classes = self.cfg.training.loss, m0.task.n_classes
        self._losses = vmap(self._loss, in_dims=(0, 0, 0, 0), randomness="error")
        self._step = TrainStep(self._losses, self.cfg, self.device)
        if async_host is None:  # VT_GROUP_ASYNC=0/1 overrides (benchmarks, tests)
            env = os.environ.get("VT_GROUP_ASYNC")
            async_host = self.device.type == "cuda" if env in (None, "") else env == "1"
        self.async_host = bool(async_host)
        self._copy_stream = None

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

    def _divergences(self, first_bad: list[int]) -> list[tuple[int, DivergedError, None]]:
        """Seeds newly diverged, given each seed's first non-finite step (-1: none): marked dead."""
        out = []
        for i, s in enumerate(first_bad):
            if s >= 0 and self.alive[i]:
                self.alive[i] = False
                out.append((i, DivergedError(s, float("nan")), None))
        return out

    def _eval(self, params, buffers, x, y):
        out = functional_call(self.base, (params, buffers), (x,))
        return loss_and_correct(self.loss_name, out, y, self.n_classes)

    def _probe(self, params, buffers, x):
        m0 = self.members[0]
        with capture(self.base, m0.hooks, self.cfg.hooks.capture) as out:
            functional_call(self.base, (params, buffers), (x,))
        return dict(out)

    @torch.no_grad()
    def _snapshot(self, keep: bool = True) -> dict:
        """The group's state at this step, for :meth:`_materialise`: the evaluation and probe
        launched, every tensor that later steps change cloned on the device (``keep``; without,
        the snapshot is valid until the next step), and the members' host-side counters and RNG
        states. Nothing here waits for the device."""
        own = (lambda t: t.detach().clone()) if keep else (lambda t: t.detach())  # noqa: E731
        self.base.eval()
        try:
            ev = vmap(self._eval, chunk_size=self.eval_chunk)
            tr_loss, tr_ok = ev(self.params, self.buffers, self.x_train, self.y_train)
            te_loss, te_ok = ev(self.params, self.buffers, self.x_test, self.y_test)
            acts = vmap(self._probe)(self.params, self.buffers, self.probe_x) if self.members[0].hooks else {}
        finally:
            self.base.train()
        snap = {
            "step": self.step,
            "scalars": torch.stack([tr_loss.float(), tr_ok.float(), te_loss.float(), te_ok.float()]),
            "grad": self.grad_acc.clone(),
            "first_bad": self.first_bad.clone(),
            "params": {n: own(self.params[n]) for n in self.names},
            "acts": dict(acts),
            "opt": {n: {k: own(v) if isinstance(v, torch.Tensor) else v
                        for k, v in self.optimizer.state[self.params[n]].items()}
                    for n in self.names if self.optimizer.state.get(self.params[n])},
            "sched": copy.deepcopy(self.scheduler.state_dict()),
            "groups": [{**{k: copy.deepcopy(v) for k, v in g.items() if k != "params"}, "params": t["params"]}
                       for g, t in zip(self.optimizer.param_groups, self.param_groups_template)],
            "members": [(m.epoch, m.batch_in_epoch, m.perm, m.generator.get_state()) for m in self.members],
            "torch_rng": torch.get_rng_state(),
            "event": None,
        }
        self.grad_acc.zero_()
        if self.device.type == "cuda":
            snap["event"] = torch.cuda.Event()
            snap["event"].record()
        return snap

    def _host(self, snap: dict):
        """Copy a snapshot's tensors to the host: after its event, on a side stream (CUDA)."""
        def to_host(tree):
            if isinstance(tree, dict):
                return {k: to_host(v) for k, v in tree.items()}
            return tree.to("cpu") if isinstance(tree, torch.Tensor) else tree

        if snap["event"] is None:
            return {k: to_host(snap[k]) for k in ("scalars", "grad", "first_bad", "params", "acts", "opt")}
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(device=self.device)
        with torch.cuda.stream(self._copy_stream):
            self._copy_stream.wait_event(snap["event"])
            out = {k: to_host(snap[k]) for k in ("scalars", "grad", "first_bad", "params", "acts", "opt")}
        self._copy_stream.synchronize()  # the snapshot's device tensors may now be freed
        return out

    def _materialise(self, snap: dict) -> list[tuple[int, Checkpoint | DivergedError, dict | None]]:
        """Divergences since the last round, then every live seed's checkpoint and resume state,
        sliced from one host copy per stacked tensor (same values and format as
        :meth:`Trainer.checkpoint` and :meth:`Trainer.state_dict` alone)."""
        h = self._host(snap)
        out: list = self._divergences(h["first_bad"].tolist())
        scalars, grad, host, acts, opt = h["scalars"], h["grad"], h["params"], h["acts"], h["opt"]
        step = snap["step"]
        for i, m in enumerate(self.members):
            if not self.alive[i]:
                continue
            epoch, batch_in_epoch, perm, gen_state = snap["members"][i]
            n_tr, n_te = len(m.task.y_train), len(m.task.y_test)
            ckpt = Checkpoint(
                index=m.n_checkpoints, step=step,
                epoch=epoch + batch_in_epoch / m.batches_per_epoch,
                scalars={"train_loss": float(scalars[0, i]), "train_accuracy": float(scalars[1, i]) / n_tr,
                         "test_loss": float(scalars[2, i]), "test_accuracy": float(scalars[3, i]) / n_te,
                         "grad_norm": float(grad[i, 0] / grad[i, 1]) if grad[i, 1] > 0 else float("nan")},
                weights={n: host[n][i].numpy().copy() for n in m.weight_names},
                activations={k: v[i].numpy().copy() for k, v in acts.items()})
            m.n_checkpoints += 1
            state = {
                "model": {k: (host[k][i] if k in host else self.buffers_host[k][i]).clone() for k in self.state_keys},
                "optimizer": {"state": {j: {k: (v[i].clone() if isinstance(v, torch.Tensor) and v.dim() > 0 else
                                                (v.clone() if isinstance(v, torch.Tensor) else v))
                                            for k, v in opt[n].items()} for j, n in enumerate(self.names) if n in opt},
                              "param_groups": [dict(g) for g in snap["groups"]]},
                "scheduler": dict(snap["sched"]),
                "generator": gen_state,
                "torch_rng": snap["torch_rng"],
                "perm": perm if perm is not None else torch.empty(0, dtype=torch.long),
                "position": torch.tensor([step, epoch, batch_in_epoch, m.n_checkpoints]),
                "grad_acc": torch.zeros(2, dtype=torch.float64),
            }
            out.append((i, ckpt, state))
        return out

    def train_steps(self, n: int) -> None:
        """``n`` steps with no checkpoints (for benchmarks)."""
        for _ in range(n):
            self._train_step(self._next_indices())
            self._advance_members()

    def run(self) -> Iterator[tuple[int, Checkpoint | DivergedError, dict | None]]:
        """Train to the end; yields ``(member index, Checkpoint, resume state)`` for every live
        seed at each checkpoint, and ``(member index, DivergedError, None)`` once for a seed that
        diverged. Each checkpoint round waits for the device (see :meth:`train` for one that does not)."""
        if self.members[0].n_checkpoints == 0:
            for i, m in enumerate(self.members):
                yield i, m.checkpoint(), m.state_dict()
        while self.step < self.total_steps:
            self._train_step(self._next_indices())
            end_of_epoch = self._advance_members()
            if self.members[0]._due(end_of_epoch):
                yield from self._materialise(self._snapshot(keep=False))
        yield from self._divergences(self.first_bad.tolist())

    def train(self, sink: Callable[[int, Checkpoint | DivergedError, dict | None], None]) -> None:
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
        if self.members[0].n_checkpoints == 0:
            for i, m in enumerate(self.members):
                sink(i, m.checkpoint(), m.state_dict())
        worker = _HostWorker(self._materialise, sink, HOST_DEPTH)
        try:
            while self.step < self.total_steps:
                self._train_step(self._next_indices())
                end_of_epoch = self._advance_members()
                if self.members[0]._due(end_of_epoch):
                    worker.put(self._snapshot())
        finally:
            worker.close()
        for event in self._divergences(self.first_bad.tolist()):
            sink(*event)


HOST_DEPTH = 2  # checkpoint rounds snapshotted on the device and not yet on the host, at most


class _HostWorker:
    """One thread that turns snapshots into checkpoints and hands them to a sink, in order."""

    def __init__(self, materialise, sink, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, args=(materialise, sink), name="vt-group-host",
                                        daemon=True)
        self._thread.start()

    def _loop(self, materialise, sink) -> None:
        while (snap := self._queue.get()) is not None:
            if self._error is not None:
                continue  # after an error: drain, write nothing more
            try:
                for event in materialise(snap):
                    sink(*event)
            except BaseException as err:  # noqa: BLE001 - raised in the training thread
                self._error = err

    def put(self, snap: dict) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(snap)  # waits while HOST_DEPTH rounds are pending

    def close(self) -> None:
        """Hand on every pending round, stop the thread, raise its error if it had one."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
