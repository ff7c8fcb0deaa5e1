"""Record any PyTorch training loop into a vt study, without Prefect and without vt's trainer::

    from vt_core import Recorder

    with Recorder("studies/mine", seed=0, model=model, hooks=["blocks.*.mlp"], probe=probe_x,
                  every_steps=100) as rec:
        rec.step(0, test_accuracy=evaluate(model))        # the initialisation, before any update
        for step, (x, y) in enumerate(loader, start=1):
            ...                                           # one optimizer update
            rec.step(step, train_loss=loss.item())        # records when the schedule says so

At each step the schedule names (``every_steps`` or ``steps``; the last step seen is recorded too
when the ``with`` block ends normally, as vt's trainer always records the last step), the recorder
copies the selected parameters, runs the probe batch through the model in eval mode to capture the
hookpoints, and hands the checkpoint, with the scalars it was given, to the same writer `vt run`
uses (a writer process: :mod:`vt_core.storage.writer`), which writes ``runs/seed=NNNN.zarr`` with the
same commit protocol. A crash or a kill of the loop leaves every committed checkpoint intact.

``step`` counts the optimizer updates made so far. Steps must increase; when the user's loop
resumes from its own checkpoint, the recorder continues the store after its last commit: steps up
to the last committed one are skipped, and a first step before it is refused
(:class:`StepOrderError`: the store would no longer follow one run), unless ``rewind=True``, which
drops the committed checkpoints from that step on. The scalars are ``train_loss``,
``train_accuracy``, ``test_loss``, ``test_accuracy`` and ``grad_norm`` (NaN where not given; the
metrics and HMM features read them under these names) and any other name given at the first
checkpoint. In a multi-process (DDP) job only rank 0 records; the others do nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
import torch

from vt_core.errors import VtError
from vt_core.external.studies import class_name, external_config, join_study
from vt_core.metrics.roles import model_roles, unmatched_globs
from vt_core.models.hooks import array_kinds, capture, select_hookpoints, select_parameters
from vt_core.names import SCALARS
from vt_core.runtime import Runtime
from vt_core.storage.location import Location, location
from vt_core.storage.resume_file import Position
from vt_core.storage.run_store import Checkpoint, RunStore, StoreError
from vt_core.storage.study import open_run, run_path

if TYPE_CHECKING:  # the writer module is imported when a recorder opens its store
    from vt_core.storage.writer import CheckpointWriter, ProcessCheckpointWriter


class RecorderError(VtError, ValueError):
    """The recorder was used in a way it cannot record."""


class StepOrderError(RecorderError):
    """A step that goes backwards: before the previous one, or before the store's last commit."""


def _rank(runtime: Runtime) -> int:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return runtime.rank


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper (its names are the user's)."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


class Recorder:
    """Records one seed of the user's own loop into ``study`` (module docstring)."""

    def __init__(self, study: str | Location, seed: int, model: torch.nn.Module, *,
                 hooks: Iterable[str] = (), weights: Iterable[str] = ("*",), probe: torch.Tensor | None = None,
                 probe_targets: torch.Tensor | None = None, every_steps: int | None = None,
                 steps: Iterable[int] | None = None, capture: str = "output", steps_per_epoch: int | None = None,
                 data: str | None = None, name: str | None = None, metrics: dict | None = None,
                 hmm: dict | None = None, rewind: bool = False, hold: bool = False, runtime: Runtime | None = None,
                 roles: dict[str, str] | None = None):
        self.runtime = Runtime.from_env() if runtime is None else runtime  # a script's edge
        self.study, self.seed, self.model = location(study), int(seed), _unwrap(model)
        self.active = _rank(self.runtime) == 0
        self.steps_per_epoch, self.rewind, self.capture = steps_per_epoch, rewind, capture
        self.hold = hold  # keep each checkpoint until the next one, for add_scalars (framework callbacks)
        self._held: tuple[Checkpoint, Position] | None = None
        hooks, weights = list(hooks), list(weights)
        if hooks and probe is None:
            raise RecorderError(f"hooks {hooks} need a probe batch: pass probe=<a tensor the model takes>")
        self.probe = probe
        self.hooks = select_hookpoints(self.model, hooks) if hooks else []
        self.weight_names = select_parameters(self.model, weights)
        schedule = self._schedule(every_steps, steps)
        params = dict(self.model.named_parameters())
        self.roles = {r["name"]: r for r in model_roles(self.model, roles, buffers=False) if r["name"] in params}
        if roles and (unmatched := unmatched_globs(roles, list(params))):
            raise RecorderError(f"roles: {unmatched[0]!r} matches no parameter of the model; fix the glob")
        hooks_cfg = {"activations": hooks, "capture": capture, "weights": weights,
                     "probe_size": int(probe.shape[0]) if probe is not None else 1}
        self.config = external_config(
            self.study, seeds=[self.seed], checkpoints=schedule, hooks=hooks_cfg, data=data, name=name,
            model={"class_name": class_name(self.model), "parameters": {n: list(p.shape) for n, p in params.items()},
                   "roles": {n: {"role": r["role"], "why": r["why"], "certainty": r["certainty"]}
                             for n, r in self.roles.items() if n in self.weight_names}},
            origin={"kind": "recorder"}, metrics=metrics, hmm=hmm)
        self.every, self.due_steps = every_steps, None if steps is None else set(schedule["steps"])
        self._probe_targets = probe_targets
        self.writer: CheckpointWriter | ProcessCheckpointWriter | None = None
        self.store: RunStore | None = None
        self.last_step: int | None = None  # the last step given to step()
        self.last_recorded: int | None = None
        self.scalar_names: list[str] | None = None
        self._pending: dict[str, float] = {}
        self.n_checkpoints = 0
        self._closed = False
        if self.active:
            self._open()
        elif run_path(self.study, self.seed).exists():  # another rank: where rank 0 resumes from
            attrs = RunStore(run_path(self.study, self.seed), mode="r").attrs
            self.last_recorded = attrs.get("last_step") if attrs.get("committed_steps") else None

    # -- opening -----------------------------------------------------------------------------------

    @staticmethod
    def _schedule(every_steps: int | None, steps: Iterable[int] | None) -> dict:
        if (every_steps is None) == (steps is None):
            raise RecorderError("give exactly one schedule: every_steps=N (0, N, 2N, ...) or steps=[...]")
        if every_steps is not None:
            if int(every_steps) <= 0:
                raise RecorderError(f"every_steps={every_steps}: give a positive number of steps")
            return {"every_steps": int(every_steps)}
        chosen = sorted({int(s) for s in steps or ()})
        if not chosen or chosen[0] < 0:
            raise RecorderError(f"steps={list(steps or ())}: give non-negative steps")
        return {"steps": chosen}

    def _open(self) -> None:
        from vt_core.storage.writer import make_writer

        self.config = join_study(self.config, [self.seed])
        path = run_path(self.study, self.seed)
        if path.exists():
            self.store = open_run(self.study, self.seed, self.config)
            problems = self.store.check()
            if problems:
                raise StoreError(f"seed {self.seed}: {problems[0]}; delete {path} to record the seed again")
            self.store.truncate(self.store.committed)  # rows a killed writer left past the last commit
            self.n_checkpoints = self.store.committed
            self.last_recorded = self.store.attrs.get("last_step") if self.n_checkpoints else None
            self.scalar_names = [str(n) for n, _ in self.store.root.arrays() if n not in ("step", "epoch", "seed")]
            self.store.set_status("running")
        else:
            self.store = RunStore.create(path, seed=self.seed, config_hash=self.config.training_hash(),
                                         config=self.config.training_dict(),
                                         roles={n: r["role"] for n, r in self.roles.items()},
                                         kinds=array_kinds(self.model, self.weight_names, self.hooks))
            if self.probe is not None:
                y = self._probe_targets if self._probe_targets is not None else torch.zeros(len(self.probe))
                self.store.write_probe(self.probe.detach().cpu().numpy(), y.detach().cpu().numpy())
            self.store.set_status("running")
        self.writer = make_writer(self.store, 0, runtime=self.runtime)

    @property
    def resume_step(self) -> int | None:
        """The step of the store's last committed checkpoint (None: nothing recorded yet): resume
        your loop from your own checkpoint at this step, and the store continues without a gap."""
        return self.last_recorded

    # -- recording ---------------------------------------------------------------------------------

    def due(self, step: int) -> bool:
        """Whether the schedule records ``step``."""
        if self.due_steps is not None:
            return step in self.due_steps
        assert self.every is not None
        return step % self.every == 0

    def step(self, step: int, epoch: float | None = None, **scalars: float) -> bool:
        """Say that ``step`` updates are done, with the scalars measured there; records a
        checkpoint when the schedule says so. Returns whether it recorded."""
        if not self.active:
            return False
        if self._closed:
            raise RecorderError("the recorder is closed; open a new one to record more")
        step = int(step)
        self._check_order(step)
        given = {k: _number(k, v) for k, v in scalars.items()}
        self._check_names(given)
        self.last_step = step
        self._pending = {"epoch": self._epoch(step, epoch), **given}
        if self.last_recorded is not None and step <= self.last_recorded:
            return False  # committed before the user's loop resumed: already in the store
        if not self.due(step):
            return False
        self._record(step)
        return True

    def _check_order(self, step: int) -> None:
        if self.last_step is not None and step <= self.last_step:
            raise StepOrderError(f"step {step} after step {self.last_step}: steps must increase (count the "
                                 f"optimizer updates made so far)")
        if self.last_step is None and self.last_recorded is not None and step < self.last_recorded:
            if not self.rewind:
                raise StepOrderError(
                    f"seed {self.seed} of {self.study} has checkpoints committed up to step {self.last_recorded}, "
                    f"and your loop starts again at step {step}: resume it from your own checkpoint at step "
                    f"{self.last_recorded} or later, or pass rewind=True to drop the checkpoints from step "
                    f"{step} on")
            self._rewind_to(step)

    def _rewind_to(self, step: int) -> None:
        assert self.store is not None and self.writer is not None
        self.writer.close()  # nothing is queued yet; reopened below on the cut store
        recorded = np.asarray(self.store.root["step"][: self.n_checkpoints])
        keep = int(np.searchsorted(recorded, step, side="left"))
        self.store.commit(keep, int(recorded[keep - 1]) if keep else None)  # type: ignore[arg-type]
        self.store.truncate(keep)
        self.n_checkpoints, self.last_recorded = keep, int(recorded[keep - 1]) if keep else None
        from vt_core.storage.writer import make_writer

        self.writer = make_writer(self.store, 0, runtime=self.runtime)

    def _epoch(self, step: int, epoch: float | None) -> float:
        if epoch is not None:
            return float(epoch)
        return step / self.steps_per_epoch if self.steps_per_epoch else math.nan

    def _check_names(self, given: dict[str, float]) -> None:
        unknown = [k for k in given if self.scalar_names is not None and k not in self.scalar_names]
        if unknown:
            raise RecorderError(f"scalars {unknown} were not given at the first checkpoint of seed {self.seed} "
                                f"(its scalars: {self.scalar_names}); give every scalar from the first "
                                f"checkpoint on (NaN where it is not measured)")

    def _scalars(self) -> dict[str, float]:
        given = {k: v for k, v in self._pending.items() if k != "epoch"}
        if self.scalar_names is None:
            self.scalar_names = list(SCALARS) + [k for k in given if k not in SCALARS]
        self._check_names(given)
        return {k: given.get(k, math.nan) for k in self.scalar_names}

    @torch.no_grad()
    def _activations(self) -> dict[str, np.ndarray]:
        if not self.hooks or self.probe is None:
            return {}
        was_training = self.model.training
        self.model.eval()
        try:
            with capture(self.model, self.hooks, self.capture) as out:
                self.model(self.probe)
        finally:
            self.model.train(was_training)
        return {n: v.cpu().numpy() for n, v in out.items()}

    @torch.no_grad()
    def _record(self, step: int) -> None:
        assert self.writer is not None
        params = dict(self.model.named_parameters())
        weights = {n: params[n].detach().cpu().numpy().copy() for n in self.weight_names}
        ckpt = Checkpoint(index=self.n_checkpoints, step=step, epoch=self._pending["epoch"], scalars=self._scalars(),
                          weights=weights, activations=self._activations())
        self.n_checkpoints += 1
        self.last_recorded = step
        state = Position(step, self.n_checkpoints)
        self._flush()
        if self.hold:
            self._held = (ckpt, state)
        else:
            self.writer.submit(ckpt, state)

    def _flush(self) -> None:
        if self._held is not None:
            assert self.writer is not None
            held, self._held = self._held, None
            self.writer.submit(*held)

    def add_scalars(self, step: int, **scalars: float) -> bool:
        """Scalars measured at ``step`` after it was recorded (frameworks log after the step's
        callbacks); with ``hold=True``, while the checkpoint of ``step`` is still held. Returns
        whether they were added."""
        if self._held is None or self._held[0].step != int(step):
            return False
        given = {k: _number(k, v) for k, v in scalars.items()}
        self._check_names(given)
        self._held[0].scalars.update(given)
        return True

    # -- closing -----------------------------------------------------------------------------------

    def close(self, error: BaseException | None = None) -> None:
        """Commit what is queued; without ``error`` also record the last step seen (if the schedule
        did not) and mark the seed complete; with it, mark the seed failed."""
        if self._closed or not self.active:
            self._closed = True
            return
        self._closed = True
        assert self.writer is not None and self.store is not None
        final = ("complete", None) if error is None else ("failed", f"{type(error).__name__}: {error}")
        try:
            if error is None and self.last_step is not None and (self.last_recorded is None
                                                                 or self.last_recorded < self.last_step):
                self._record(self.last_step)
            self._flush()
        except BaseException:
            self.writer.close()
            raise
        self.writer.close(final)  # the writer trims the arrays and records the status

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(exc)


_SCALAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _number(name: str, value) -> float:
    if not _SCALAR_NAME.match(name) or name in ("step", "epoch", "seed"):
        raise RecorderError(f"scalar name {name!r}: use a Python identifier other than step, epoch and seed")
    try:
        return float(value.item() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError, RuntimeError):
        raise RecorderError(f"scalar {name}={value!r} is not a number") from None
