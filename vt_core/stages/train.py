"""Stage 1, training: each seed into its own run store, alone or with others as one batched model.

A seed resumes from its last committed checkpoint; a finished seed is skipped and returns its
summary. Checkpoints are written off the training thread (:mod:`vt_core.storage.writer`).
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from collections.abc import Callable
from typing import TypedDict

import torch

from vt_core.config.study_config import StudyConfig
from vt_core.errors import VtError
from vt_core.metrics.roles import parameter_roles
from vt_core.models.hooks import array_kinds
from vt_core.progress import note as announce
from vt_core.runtime import Runtime
from vt_core.storage.handle import Study, StudyRef
from vt_core.storage.location import Location, remove_tree
from vt_core.storage.run_store import RunStore, StoreError
from vt_core.storage.study import (
    FINISHED,
    MISPLACED,
    STOPPED_EARLY,
    needs_no_training,
    open_run,
    reset_seed,
    run_path,
    store_problems,
)
from vt_core.storage.writer import make_writer
from vt_core.training import early_stop
from vt_core.training.early_stop import EarlyStop, StoppedEarly
from vt_core.training.interrupt import Interrupted, stop_requested
from vt_core.training.loop import DivergedError, Trainer, example_indices, example_seed

Progress = Callable[[dict], None]
log = logging.getLogger("vt")


class SeedSummary(TypedDict):
    """What a training task returns (JSON): how the seed's training ended."""

    seed: int
    status: str
    committed_steps: int
    last_step: int | None
    final_test_accuracy: float | None
    error: str | None
    skipped: bool
    path: str


class SeedsFailedError(VtError, RuntimeError):
    """Some seeds failed; the others were trained and analysed."""

    def __init__(self, study: str | Location, failed: dict[int, str], analysed: bool = True):
        self.failed = failed
        lines = "\n".join(f"  seed {s}: {msg[:300]}" for s, msg in sorted(failed.items()))
        others = "the others were analysed" if analysed else "no seed completed, so nothing was analysed"
        seeds = ", ".join(map(str, sorted(failed)))
        diverged = any(msg.startswith("diverged") for msg in failed.values())
        hint = " (a diverged seed: lower optimizer.lr or set training.grad_clip)" if diverged else ""
        super().__init__(f"seed{'s' if len(failed) > 1 else ''} {seeds} failed ({others}):\n{lines}\n"
                         f"see `vt status {study}`, fix the cause{hint}, and retrain them with "
                         f"`vt rerun {study} --seed N` (or run the same command again to resume them)")


def repair_seeds(study: StudyRef) -> list[str]:
    """Verify every seed's store before training (:func:`vt_core.storage.study.store_problems`: every
    committed chunk read and checked against its checksum; benchmarks/RESULTS.md measures the
    cost): a damaged seed is deleted, so that it trains again from scratch; a finished seed whose
    resume file alone is damaged just loses that file (it is not needed). One line per repair."""
    study = Study.open(study)
    config = study.config
    notes = []
    for seed in config.seeds:
        problems = store_problems(study, seed, config, read=True)
        if not problems or "written by another config" in problems[0] or MISPLACED in problems[0]:
            continue  # a foreign or misplaced store is refused when the seed is trained, never deleted
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        if all(p.startswith("resume file") for p in problems) and _finished(study, seed):
            remove_tree(study.layout.resume(seed))
            notes.append(f"seed {seed}: {problems[0]}; deleted it (the seed is finished and does not need it)")
            continue
        reset_seed(study, seed)
        notes.append(f"seed {seed}: {problems[0]}{more}; retraining it from scratch")
    return notes


def _finished(study: Location, seed: int) -> bool:
    try:
        return RunStore(run_path(study, seed), mode="r").status in FINISHED
    except Exception:  # noqa: BLE001 - damaged: not finished
        return False


def not_started(study: Location, seed: int) -> SeedSummary:
    """A seed left alone because a stop was requested: its store as it stands, or ``missing``."""
    path = run_path(study, seed)
    if path.exists():
        return _summary(RunStore(path, mode="r"), seed, skipped=True) | {"status": "interrupted"}
    return {"seed": seed, "status": "missing", "committed_steps": 0, "last_step": None, "final_test_accuracy": None,
            "error": None, "skipped": True, "path": str(path)}


def finished_summary(study: StudyRef, seed: int) -> SeedSummary:
    """The summary of a seed that needs no training (complete or diverged)."""
    return _summary(Study.open(study).run(seed), seed, skipped=True)


def _summary(store: RunStore, seed: int, skipped: bool) -> SeedSummary:
    a = store.attrs
    acc = None
    if store.committed and "test_accuracy" in store.root:
        acc = float(store.root["test_accuracy"][store.committed - 1])
    return {"seed": seed, "status": a["status"], "committed_steps": a["committed_steps"],
            "last_step": a["last_step"], "final_test_accuracy": acc, "error": a["error"],
            "skipped": skipped, "path": str(store.path)}


def _start(study: Location, seed: int, config: StudyConfig) -> SeedSummary | tuple[RunStore, Trainer]:
    """Open (or create) the seed's store and a Trainer resumed from its last commit; a finished
    seed gives its summary instead."""
    path = run_path(study, seed)
    store = None
    if path.exists():
        store = open_run(study, seed, config)
        if needs_no_training(store.status, config):
            return _summary(store, seed, skipped=True)
        if store.status == STOPPED_EARLY:  # the live policy is off now: the seed resumes
            early_stop.clear(study, seed)
    trainer = Trainer(config, seed)
    if store is None:
        store = RunStore.create(path, seed=seed, config_hash=config.training_hash(),
                                config=config.training_dict(), roles=parameter_roles(trainer.model),
                                kinds=array_kinds(trainer.model, trainer.weight_names, trainer.hooks))
    try:
        state = store.load_resume()
    except StoreError as err:  # damaged: the seed cannot resume, so it starts again
        log.warning("seed %d: %s; retraining it from scratch", seed, err)
        reset_seed(study, seed)
        return _start(study, seed, config)
    if state is not None:
        trainer.load_state_dict(state)
        announce(f"seed {seed}: resuming from step {trainer.step:,} (checkpoint {trainer.n_checkpoints} of "
                      f"{trainer.expected_checkpoints}, committed)")
    elif store.committed:
        raise StoreError(f"seed {seed}: {path} has {store.committed} committed checkpoints but no "
                         f"resume state; `vt rerun {study} --seed {seed}` retrains it")
    # a kill between the resume state and the commit leaves complete rows: roll the commit forward
    store.truncate(trainer.n_checkpoints)
    store.commit(trainer.n_checkpoints, store.attrs["last_step"] if state is None else trainer.step)
    store.set_status("running", total_steps=trainer.total_steps)
    if trainer.n_checkpoints == 0:
        store.write_probe(trainer.probe_x.cpu().numpy(), trainer.probe_y.cpu().numpy())
        if config.hooks.per_example_loss:
            store.write_probe(*example_indices(len(trainer.task.y_train), len(trainer.task.y_test),
                                               config.hooks.per_example_loss, example_seed(config)), lead="example")
    return store, trainer


def _end(path: Location, seed: int, outcome: BaseException | None) -> SeedSummary:
    """Record how the seed's training ended (re-reading the store: a writer process committed)."""
    store = RunStore(path)
    if isinstance(outcome, Interrupted):  # everything handed to the writer is committed
        store.set_status("interrupted")
    elif isinstance(outcome, StoppedEarly):  # as interrupted: committed, resumable
        store.set_status(STOPPED_EARLY, error=str(outcome))
    elif isinstance(outcome, DivergedError):
        store.truncate(store.committed)
        store.set_status("diverged", error=str(outcome))
    elif outcome is not None:
        try:
            store.set_status("failed", error=f"{type(outcome).__name__}: {outcome}")
        except OSError:  # e.g. the disk is still full: the store then says "interrupted" once we exit
            pass
    else:
        store.truncate(store.committed)
        store.set_status("complete")
    return _summary(store, seed, skipped=False)


def _report(progress: Progress | None, seed: int, config: StudyConfig, ckpt) -> None:
    if progress is not None:
        progress({"seed": seed, "epoch": ckpt.epoch, "epochs": config.training.epochs,
                  "step": ckpt.step, **ckpt.scalars})


def early_stop_for(store: RunStore, config: StudyConfig) -> EarlyStop | None:
    """The look for the live policy's stop request after each checkpoint (None: no such policy)."""
    if config.live.stop_if_predicted_beyond is None:
        return None
    return EarlyStop(store.path, store.attrs.get("run_id"), store.attrs.get("seed"))


def _train_alone(store: RunStore, trainer: Trainer, writer, progress: Progress | None) -> SeedSummary:
    """Run one trainer to its end into ``writer``; raise what training or writing raised
    (except divergence, which ends the seed as ``diverged``, and the live policy's early stop)."""
    outcome: BaseException | None = None
    early = early_stop_for(store, trainer.cfg)
    try:
        try:
            for ckpt in trainer.run():
                writer.submit(ckpt, trainer.state_dict())  # written while the next steps train
                _report(progress, trainer.seed, trainer.cfg, ckpt)
                if early is not None and ckpt.step < trainer.total_steps:  # the last one: nothing left to stop
                    early.check(ckpt.step, ckpt.scalars.get("test_accuracy"))  # with its writer: stop here if asked
        finally:
            writer.close()  # everything queued is committed before the status changes
    except (DivergedError, Interrupted, StoppedEarly) as err:
        outcome = err
    except BaseException as err:
        _end(store.path, trainer.seed, err)
        raise
    return _end(store.path, trainer.seed, outcome)


def train_seed(study: StudyRef, seed: int, progress: Progress | None = None,
               num_threads: int | None = None, runtime: Runtime | None = None) -> SeedSummary:
    """Train one seed into its store, resuming from the last commit; a finished seed is skipped.

    ``num_threads`` sets torch's intra-op threads (process-wide): 1 when seeds run side by side."""
    study = Study.open(study)
    if stop_requested():  # a stop was asked before this seed started: it does not start
        return not_started(study.location, seed)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    started = _start(study.location, seed, study.config)
    if isinstance(started, dict):
        return started
    store, trainer = started
    writer = make_writer(store, trainer.expected_checkpoints, runtime=runtime)
    return _train_alone(store, trainer, writer, progress)


def train_group(study: StudyRef, seeds: list[int], progress: Progress | None = None,
                num_threads: int | None = None, runtime: Runtime | None = None) -> list[SeedSummary]:
    """Train several seeds together as one batched model (:mod:`vt_core.training.groups`), each into its
    own store exactly as :func:`train_seed` would; finished seeds are skipped.

    Seeds resumed from different steps form separate groups; a group of one, or a model that
    cannot be batched, trains alone. A seed whose writes fail ends ``failed`` and the others go
    on; an error in the group's own step fails every seed of it and is raised."""
    from vt_core.training.groups import groupable

    study = Study.open(study)
    if stop_requested():
        return [not_started(study.location, seed) for seed in seeds]
    runtime = runtime or Runtime()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    summaries: dict[int, SeedSummary] = {}
    by_step: dict[int, list[tuple[RunStore, Trainer]]] = defaultdict(list)
    for seed in seeds:
        started = _start(study.location, seed, study.config)
        if isinstance(started, dict):
            summaries[seed] = started
        else:
            by_step[started[1].step].append(started)
    for items in by_step.values():
        if len(items) == 1 or groupable(items[0][1].model) is not None:
            summaries.update(_train_one_by_one(items, progress, runtime))
        else:
            summaries.update(_GroupRun(items, progress, runtime).train())
    return [summaries[s] for s in seeds]


def _train_one_by_one(items: list[tuple[RunStore, Trainer]], progress: Progress | None,
                      runtime: Runtime) -> dict[int, SeedSummary]:
    out: dict[int, SeedSummary] = {}
    for store, trainer in items:
        try:
            writer = make_writer(store, trainer.expected_checkpoints, runtime=runtime)
            out[trainer.seed] = _train_alone(store, trainer, writer, progress)
        except Exception as err:  # noqa: BLE001 - this seed failed; the others go on
            out[trainer.seed] = _summary(RunStore(store.path, mode="r"), trainer.seed, False) | {
                "error": f"{type(err).__name__}: {err}"}
    return out


class _GroupRun:
    """Seeds of one group trained together, each into its own writer: a seed whose writes fail
    ends ``failed`` alone; divergence ends a seed ``diverged``; an error of the group's own step
    fails them all and is raised."""

    def __init__(self, items: list[tuple[RunStore, Trainer]], progress: Progress | None, runtime: Runtime):
        self.items, self.progress, self.runtime = items, progress, runtime
        self.trainers = {t.seed: t for _, t in items}
        self.paths = {t.seed: store.path for store, t in items}
        self.writers = {t.seed: make_writer(store, t.expected_checkpoints, runtime=runtime) for store, t in items}
        self.outcome: dict[int, BaseException | None] = {seed: None for seed in self.trainers}
        self.failed_writes: dict[int, BaseException] = {}
        self.early = {t.seed: early_stop_for(store, t.cfg) for store, t in items}

    def submit(self, seed: int, ckpt, state) -> None:
        if seed in self.failed_writes or isinstance(self.outcome[seed], StoppedEarly):
            return  # a seed stopped early is still computed with its group, but nothing more is written
        try:
            self.writers[seed].submit(ckpt, state)
        except Exception as err:  # noqa: BLE001 - a full disk for this store: this seed fails alone
            self.failed_writes[seed] = err
        _report(self.progress, seed, self.trainers[seed].cfg, ckpt)
        early = self.early[seed]
        if early is not None and ckpt.step < self.trainers[seed].total_steps:
            try:
                early.check(ckpt.step, ckpt.scalars.get("test_accuracy"))
            except StoppedEarly as stopped:
                self.outcome[seed] = stopped

    def all_ended(self) -> bool:
        """Every seed of the group stopped early or failed to write: the group need not train on."""
        return all(isinstance(self.outcome[s], StoppedEarly) or s in self.failed_writes for s in self.trainers)

    def on_event(self, i: int, event, state) -> None:
        """From a background thread when the group copies checkpoints to the host asynchronously."""
        seed = self.items[i][1].seed
        if isinstance(event, DivergedError):
            self.outcome[seed] = event
        else:
            self.submit(seed, event, state)

    def train(self) -> dict[int, SeedSummary]:
        try:
            try:
                self._run_group()
            finally:
                self._close_writers()
        except Interrupted as err:
            return {seed: _end(self.paths[seed], seed, err) for seed in self.trainers}
        except BaseException as err:
            for seed in self.trainers:
                _end(self.paths[seed], seed, err)
            raise
        out: dict[int, SeedSummary] = {}
        for seed in self.trainers:
            failure = self.failed_writes.get(seed)
            out[seed] = _end(self.paths[seed], seed, failure if failure is not None else self.outcome[seed])
            if failure is not None:
                out[seed]["error"] = f"{type(failure).__name__}: {failure}"
        return out

    def _run_group(self) -> None:
        from vt_core.training.groups import GroupTrainer

        group = GroupTrainer([t for _, t in self.items], async_host=self.runtime.group_async)
        group.all_ended = self.all_ended
        start = group.step
        try:
            group.train(self.on_event)
        except (RuntimeError, NotImplementedError) as err:
            if group.step != start:
                raise
            # no batching rule for some op of this model (found at the first step, before any
            # update): train the seeds one by one from where they stand, same writers
            warnings.warn(f"training seeds {sorted(self.trainers)} as a group failed at its first step "
                          f"({type(err).__name__}: {err}); training them one by one", stacklevel=2)
            self._fall_back()

    def _fall_back(self) -> None:
        for seed, t in self.trainers.items():
            try:
                for ckpt in t.run():
                    self.submit(seed, ckpt, t.state_dict())
                    if isinstance(self.outcome[seed], StoppedEarly):
                        break
            except DivergedError as div:
                self.outcome[seed] = div

    def _close_writers(self) -> None:
        for seed, w in self.writers.items():
            try:
                w.close()
            except Exception as err:  # noqa: BLE001
                self.failed_writes.setdefault(seed, err)
