"""A seed group's checkpoint rounds: snapshot on the device, copy to the host, slice per seed.

At a checkpoint :meth:`GroupRecorder.snapshot` launches the whole group's evaluation and probe at
once (vmapped) and clones what later steps change, without waiting for the device;
:meth:`GroupRecorder.materialise` copies the snapshot to the host once per stacked tensor (after
the snapshot's event, on a side stream on CUDA) and slices it into each live seed's
:class:`~vt_core.storage.run_store.Checkpoint` and resume state, through the same
:func:`~vt_core.training.checkpoint_record.checkpoint_record` and
:func:`~vt_core.training.checkpoint_record.resume_state` a seed trained alone uses.
:class:`HostWorker` runs the materialising on a background thread, in order.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch.func import functional_call, vmap

from vt_core.models.hooks import capture
from vt_core.storage.run_store import Checkpoint
from vt_core.training.checkpoint_record import checkpoint_record, resume_state
from vt_core.training.loop import DivergedError, Trainer, loss_and_correct, per_example_loss
from vt_core.training.position import PositionMark

#: ``(member index, Checkpoint, resume state)``, or ``(member index, DivergedError, None)``
Event = tuple[int, Checkpoint | DivergedError, dict | None]

HOST_DEPTH = 2  # checkpoint rounds snapshotted on the device and not yet on the host, at most

_HOSTED = ("scalars", "grad", "first_bad", "params", "acts", "opt")  # the snapshot's device tensors
_EXAMPLES = "\x00per_example_loss"  # the per-example losses ride with the activations (no hookpoint's name)


def _to_host(tree):
    if isinstance(tree, dict):
        return {k: _to_host(v) for k, v in tree.items()}
    return tree.to("cpu") if isinstance(tree, torch.Tensor) else tree


def _slice(v: Any, i: int) -> Any:
    """Seed ``i``'s part of a stacked optimizer-state value (a scalar one is shared)."""
    if isinstance(v, torch.Tensor):
        return v[i].clone() if v.dim() > 0 else v.clone()
    return v


class GroupRecorder:
    """The checkpoint rounds of one :class:`~vt_core.training.groups.GroupTrainer` (see the module docstring);
    also which of its seeds are still recorded (a diverged seed is not). It reads the group's live
    tensors (``params``, ``buffers``, ``optimizer``, ``grad_acc``, ...) and its members' positions;
    the group is not imported here (:mod:`vt_core.training.groups` imports this module)."""

    def __init__(self, group: Any):
        self.group = group
        members = group.members
        m0 = members[0]
        self.x_test = torch.stack([m.task.x_test for m in members])
        self.y_test = torch.stack([m.task.y_test for m in members])
        self.probe_x = torch.stack([m.probe_x for m in members])
        ex = [m.examples for m in members]
        self.examples = None if ex[0] is None else (torch.stack([e[0] for e in ex]), torch.stack([e[1] for e in ex]))
        # evaluation runs all seeds at once; chunks of seeds keep a large test set within memory
        self.eval_chunk = max(1, min(group.G, 200_000 // max(len(m0.task.x_test), len(m0.task.x_train), 1)))
        self.state_keys = list(m0.model.state_dict().keys())
        self.buffers_host = {k: v.detach().to("cpu") for k, v in group.buffers.items() if k in self.state_keys}
        self.param_groups_template = m0.optimizer.state_dict()["param_groups"]
        self.alive = [True] * group.G
        self._copy_stream: torch.cuda.Stream | None = None

    def divergences(self, first_bad: list[int]) -> list[Event]:
        """Seeds newly diverged, given each seed's first non-finite step (-1: none): marked dead."""
        out: list[Event] = []
        for i, s in enumerate(first_bad):
            if s >= 0 and self.alive[i]:
                self.alive[i] = False
                out.append((i, DivergedError(s, float("nan")), None))
        return out

    # -- on the device ----------------------------------------------------------------------------

    def _eval(self, params, buffers, x, y):
        g = self.group
        out = functional_call(g.base, (params, buffers), (x,))
        return loss_and_correct(g.loss_name, out, y, g.n_classes)

    def _probe(self, params, buffers, x):
        g = self.group
        with capture(g.base, g.members[0].hooks, g.cfg.hooks.capture) as out:
            functional_call(g.base, (params, buffers), (x,))
        return dict(out)

    def _example_losses(self, params, buffers, x, y):
        g = self.group
        return per_example_loss(g.loss_name, functional_call(g.base, (params, buffers), (x,)), y, g.n_classes)

    def _evaluate(self) -> tuple[torch.Tensor, dict]:
        """(G, 4) [train loss, train correct, test loss, test correct] and the probe's activations."""
        g = self.group
        g.base.eval()
        try:
            ev = vmap(self._eval, chunk_size=self.eval_chunk)
            tr_loss, tr_ok = ev(g.params, g.buffers, g.x_train, g.y_train)
            te_loss, te_ok = ev(g.params, g.buffers, self.x_test, self.y_test)
            acts = vmap(self._probe)(g.params, g.buffers, self.probe_x) if g.members[0].hooks else {}
            if self.examples is not None:
                acts = dict(acts) | {_EXAMPLES: vmap(self._example_losses)(g.params, g.buffers, *self.examples)}
        finally:
            g.base.train()
        return torch.stack([tr_loss.float(), tr_ok.float(), te_loss.float(), te_ok.float()]), dict(acts)

    @torch.no_grad()
    def snapshot(self, keep: bool = True) -> dict:
        """The group's state at this step, for :meth:`materialise`: the evaluation and probe
        launched, every tensor that later steps change cloned on the device (``keep``; without,
        the snapshot is valid until the next step), and the members' positions and the global RNG
        state. Nothing here waits for the device."""
        own = (lambda t: t.detach().clone()) if keep else (lambda t: t.detach())  # noqa: E731
        g = self.group
        scalars, acts = self._evaluate()
        snap = {
            "scalars": scalars,
            "grad": g.grad_acc.clone(),
            "first_bad": g.first_bad.clone(),
            "params": {n: own(g.params[n]) for n in g.names},
            "acts": acts,
            "opt": {n: {k: own(v) if isinstance(v, torch.Tensor) else v
                        for k, v in g.optimizer.state[g.params[n]].items()}
                    for n in g.names if g.optimizer.state.get(g.params[n])},
            "sched": copy.deepcopy(g.scheduler.state_dict()),
            "groups": [{**{k: copy.deepcopy(v) for k, v in pg.items() if k != "params"}, "params": t["params"]}
                       for pg, t in zip(g.optimizer.param_groups, self.param_groups_template)],
            "members": [m.position.mark() for m in g.members],
            "torch_rng": torch.get_rng_state(),
            "event": None,
        }
        g.grad_acc.zero_()
        if g.device.type == "cuda":
            snap["event"] = torch.cuda.Event()
            snap["event"].record()
        return snap

    # -- on the host ------------------------------------------------------------------------------

    def host(self, snap: dict) -> dict:
        """Copy a snapshot's tensors to the host: after its event, on a side stream (CUDA)."""
        if snap["event"] is None:
            return {k: _to_host(snap[k]) for k in _HOSTED}
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(device=self.group.device)
        with torch.cuda.stream(self._copy_stream):
            self._copy_stream.wait_event(snap["event"])
            out = {k: _to_host(snap[k]) for k in _HOSTED}
        self._copy_stream.synchronize()  # the snapshot's device tensors may now be freed
        return out

    def materialise(self, snap: dict) -> list[Event]:
        """Divergences since the last round, then every live seed's checkpoint and resume state,
        sliced from one host copy per stacked tensor (same values and format as
        :meth:`Trainer.checkpoint` and :meth:`Trainer.state_dict` alone)."""
        h = self.host(snap)
        out = self.divergences(h["first_bad"].tolist())
        for i, m in enumerate(self.group.members):
            if self.alive[i]:
                at = snap["members"][i]
                ckpt = self._record(i, m, at, h)  # counts the checkpoint: the resume state follows it
                out.append((i, ckpt, self._resume_state(i, m, at, snap, h)))
        return out

    def _record(self, i: int, m: Trainer, at: PositionMark, h: dict) -> Checkpoint:
        scalars, params, acts = h["scalars"], h["params"], dict(h["acts"])
        losses = acts.pop(_EXAMPLES, None)
        train = (scalars[0, i], scalars[1, i], len(m.task.y_train))
        test = (scalars[2, i], scalars[3, i], len(m.task.y_test))
        return checkpoint_record(m.position.take_index(), at, train, test, h["grad"][i],
                                 weights={n: params[n][i].numpy().copy() for n in m.weight_names},
                                 activations={k: v[i].numpy().copy() for k, v in acts.items()},
                                 examples={} if losses is None else {"loss": losses[i].float().numpy().copy()})

    def _resume_state(self, i: int, m: Trainer, at: PositionMark, snap: dict, h: dict) -> dict:
        params, opt, names = h["params"], h["opt"], self.group.names
        model = {k: (params[k][i] if k in params else self.buffers_host[k][i]).clone() for k in self.state_keys}
        optimizer = {"state": {j: {k: _slice(v, i) for k, v in opt[n].items()}
                               for j, n in enumerate(names) if n in opt},
                     "param_groups": [dict(pg) for pg in snap["groups"]]}
        return resume_state(model=model, optimizer=optimizer, scheduler=dict(snap["sched"]), at=at,
                            n_checkpoints=m.position.n_checkpoints, torch_rng=snap["torch_rng"],
                            grad_acc=torch.zeros(2, dtype=torch.float64))


class HostWorker:
    """One thread that turns snapshots into checkpoints and hands them to a sink, in order."""

    def __init__(self, materialise: Callable[[dict], list[Event]], sink: Callable[..., None], depth: int):
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
