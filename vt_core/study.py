"""The study directory: study.json, per-seed stores, and training one seed into its store."""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from contextlib import contextmanager
from importlib import metadata
from typing import Callable

import torch

from vt_core.config import ConfigError, StudyConfig, parse_config
from vt_core.location import Location, create_exclusive, location, remove_tree, url, write_text_atomic
from vt_core.store import RunStore, StoreError, process_alive, resume_path
from vt_core.training import DivergedError, Trainer
from vt_core.writer import make_writer

STUDY_JSON = "study.json"
_VERSIONED = ("vt", "torch", "zarr", "xarray", "dask", "hmmlearn", "networkx", "bokeh", "prefect", "numpy")


class StudyError(ValueError):
    """The study directory does not match the config, or is not a study at all."""


class StudyLockedError(StudyError):
    """Another live process is running this study."""


class SeedsFailedError(RuntimeError):
    """Some seeds failed; the others were trained and analysed."""

    def __init__(self, study: str | Location, failed: dict[int, str]):
        self.failed = failed
        lines = "\n".join(f"  seed {s}: {msg}" for s, msg in sorted(failed.items()))
        super().__init__(f"seeds {sorted(failed)} failed (the others were analysed):\n{lines}\n"
                         f"see `vt status {study}`, fix the cause, and retrain them with "
                         f"`vt rerun {study} --seed N` (or run the same command again to resume them)")


LOCK = ".vt.lock"
_held: dict[str, int] = {}  # study -> depth, for this process (the study flow runs the analyze flow)


@contextmanager
def study_lock(study: str | Location):
    """Hold the study's lock file (re-entrant within a process). A lock left by a process that is
    gone (same host) is taken over; a live one is refused with who holds it and since when."""
    key = url(location(study))
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path = location(study) / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
    for _ in range(2):
        if create_exclusive(path, json.dumps(me).encode()):
            break
        try:
            other = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            other = {}
        if other.get("host") == me["host"] and not process_alive(other.get("pid")):
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        raise StudyLockedError(
            f"{study} is being run by pid {other.get('pid')} on {other.get('host')} since "
            f"{other.get('since')}; wait for it to finish, or delete {path} if that process is gone")
    _held[key] = 1
    try:
        yield
    finally:
        _held.pop(key, None)
        path.unlink(missing_ok=True)


def study_dir(config: StudyConfig) -> Location:
    """The study directory: an absolute local path, or an fsspec URL (:mod:`vt_core.location`)."""
    return location(config.output_dir)


def run_path(study: str | Location, seed: int) -> Location:
    return location(study) / "runs" / f"seed={seed:04d}.zarr"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    out = {}
    for pkg in _VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _write_json_atomic(path: Location, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def prepare_study(config: StudyConfig) -> Location:
    """Create (or reopen) the study directory for ``config`` and record it in study.json.

    Reopening with a config that trains differently is refused: the stored runs would no longer
    match their config. Changing seeds, metrics or HMM settings is fine.
    """
    study = study_dir(config)
    meta_path = study / STUDY_JSON
    created = _now()
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old.get("training_hash") != config.training_hash():
            raise StudyError(
                f"{study} holds a study trained with another config (training hash "
                f"{old.get('training_hash')} != {config.training_hash()}); set output_dir to a new "
                f"directory, or restore the original model/data/optimizer/training/checkpoints/hooks"
            )
        created = old.get("created", created)
    elif study.exists() and any(study.iterdir()):
        raise StudyError(f"{study} exists, is not empty and has no {STUDY_JSON}; choose another output_dir")
    (study / "runs").mkdir(parents=True, exist_ok=True)
    _write_json_atomic(meta_path, {
        "config": config.model_dump(mode="json"),
        "training_hash": config.training_hash(),
        "versions": _versions(),
        "created": created,
        "updated": _now(),
    })
    return study


def load_study(study: str | Location) -> StudyConfig:
    meta_path = location(study) / STUDY_JSON
    if not meta_path.is_file():
        raise StudyError(f"{study} is not a study directory (no {STUDY_JSON}); run `vt run CONFIG` first")
    try:
        return parse_config(json.loads(meta_path.read_text())["config"], str(meta_path))
    except (KeyError, json.JSONDecodeError, ConfigError) as err:
        raise StudyError(f"{meta_path} is damaged: {err}") from None


def _summary(store: RunStore, seed: int, skipped: bool) -> dict:
    a = store.attrs
    acc = None
    if store.committed and "test_accuracy" in store.root:
        acc = float(store.root["test_accuracy"][store.committed - 1])
    return {"seed": seed, "status": a["status"], "committed_steps": a["committed_steps"],
            "last_step": a["last_step"], "final_test_accuracy": acc, "error": a["error"],
            "skipped": skipped, "path": str(store.path)}


def open_run(study: str | Location, seed: int, config: StudyConfig) -> RunStore:
    store = RunStore(run_path(study, seed))
    if store.attrs.get("config_hash") != config.training_hash():
        raise StoreError(f"seed {seed}: {store.path} was written by another config; "
                         f"`vt rerun {study} --seed {seed}` retrains it")
    return store


def is_finished(study: str | Location, seed: int) -> bool:
    """True when the seed's store is complete (or diverged) under the study's current config."""
    path = run_path(study, seed)
    if not path.exists():
        return False
    try:
        store = open_run(study, seed, load_study(study))
    except StoreError:
        return False
    return store.status in ("complete", "diverged")


def _start(study: Location, seed: int, config: StudyConfig) -> dict | tuple[RunStore, Trainer]:
    """Open (or create) the seed's store and a Trainer resumed from its last commit; a finished
    seed gives its summary instead."""
    path = run_path(study, seed)
    if path.exists():
        store = open_run(study, seed, config)
        if store.status in ("complete", "diverged"):
            return _summary(store, seed, skipped=True)
    else:
        store = RunStore.create(path, seed=seed, config_hash=config.training_hash(),
                                config=config.training_dict())
    trainer = Trainer(config, seed)
    state = store.load_resume()
    if state is not None:
        trainer.load_state_dict(state)
    elif store.committed:
        raise StoreError(f"seed {seed}: {path} has {store.committed} committed checkpoints but no "
                         f"resume state; `vt rerun {study} --seed {seed}` retrains it")
    # a kill between the resume state and the commit leaves complete rows: roll the commit forward
    store.truncate(trainer.n_checkpoints)
    store.commit(trainer.n_checkpoints, store.attrs["last_step"] if state is None else trainer.step)
    store.set_status("running")
    if trainer.n_checkpoints == 0:
        store.write_probe(trainer.probe_x.cpu().numpy(), trainer.probe_y.cpu().numpy())
    return store, trainer


def _end(path: Location, seed: int, outcome: BaseException | None) -> dict:
    """Record how the seed's training ended (re-reading the store: a writer process committed)."""
    store = RunStore(path)
    if isinstance(outcome, DivergedError):
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


def _report(progress, seed: int, config: StudyConfig, ckpt) -> None:
    if progress is not None:
        progress({"seed": seed, "epoch": ckpt.epoch, "epochs": config.training.epochs,
                  "step": ckpt.step, **ckpt.scalars})


def _train_alone(store: RunStore, trainer: Trainer, writer, progress) -> dict:
    """Run one trainer to its end into ``writer``; raise what training or writing raised
    (except divergence, which ends the seed as ``diverged``)."""
    outcome: BaseException | None = None
    try:
        try:
            for ckpt in trainer.run():
                writer.submit(ckpt, trainer.state_dict())  # written while the next steps train
                _report(progress, trainer.seed, trainer.cfg, ckpt)
        finally:
            writer.close()  # everything queued is committed before the status changes
    except DivergedError as err:
        outcome = err
    except BaseException as err:
        _end(store.path, trainer.seed, err)
        raise
    return _end(store.path, trainer.seed, outcome)


def train_seed(study: str | Location, seed: int, progress: Callable[[dict], None] | None = None,
               num_threads: int | None = None) -> dict:
    """Train one seed into its store, resuming from the last commit; a finished seed is skipped.

    ``num_threads`` sets torch's intra-op threads (process-wide): 1 when seeds run side by side."""
    study = location(study)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    config = load_study(study)
    started = _start(study, seed, config)
    if isinstance(started, dict):
        return started
    store, trainer = started
    return _train_alone(store, trainer, make_writer(store, capacity=trainer.expected_checkpoints), progress)


def train_group(study: str | Location, seeds: list[int], progress: Callable[[dict], None] | None = None,
                num_threads: int | None = None) -> list[dict]:
    """Train several seeds together as one batched model (:mod:`vt_core.groups`), each into its
    own store exactly as :func:`train_seed` would; finished seeds are skipped.

    Seeds resumed from different steps form separate groups; a group of one, or a model that
    cannot be batched, trains alone. A seed whose writes fail ends ``failed`` and the others go
    on; an error in the group's own step fails every seed of it and is raised."""
    from collections import defaultdict

    from vt_core.groups import GroupTrainer, groupable

    study = location(study)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    config = load_study(study)
    summaries: dict[int, dict] = {}
    by_step: dict[int, list] = defaultdict(list)
    for seed in seeds:
        started = _start(study, seed, config)
        if isinstance(started, dict):
            summaries[seed] = started
        else:
            by_step[started[1].step].append(started)
    for items in by_step.values():
        if len(items) == 1 or groupable(items[0][1].model) is not None:
            for store, trainer in items:
                try:
                    summaries[trainer.seed] = _train_alone(
                        store, trainer, make_writer(store, trainer.expected_checkpoints), progress)
                except Exception as err:  # noqa: BLE001 - this seed failed; the others go on
                    summaries[trainer.seed] = _summary(RunStore(store.path, mode="r"), trainer.seed, False) | {
                        "error": f"{type(err).__name__}: {err}"}
            continue
        summaries.update(_train_together(items, GroupTrainer, progress))
    return [summaries[s] for s in seeds]


def _train_together(items: list[tuple[RunStore, Trainer]], group_cls, progress) -> dict[int, dict]:
    writers = {t.seed: make_writer(store, t.expected_checkpoints) for store, t in items}
    trainers = {t.seed: t for _, t in items}
    paths = {t.seed: store.path for store, t in items}
    outcome: dict[int, BaseException | None] = {seed: None for seed in trainers}
    failed_writes: dict[int, BaseException] = {}

    def submit(seed, ckpt, state):
        if seed in failed_writes:
            return
        try:
            writers[seed].submit(ckpt, state)
        except Exception as err:  # noqa: BLE001 - a full disk for this store: this seed fails alone
            failed_writes[seed] = err
        _report(progress, seed, trainers[seed].cfg, ckpt)

    try:
        try:
            group = group_cls([t for _, t in items])
            start = group.step
            def on_event(i, event, state):  # from a background thread when the group copies asynchronously
                seed = items[i][1].seed
                if isinstance(event, DivergedError):
                    outcome[seed] = event
                else:
                    submit(seed, event, state)

            try:
                group.train(on_event)
            except (RuntimeError, NotImplementedError) as err:
                if group.step != start:
                    raise
                # no batching rule for some op of this model (found at the first step, before any
                # update): train the seeds one by one from where they stand, same writers
                import warnings

                warnings.warn(f"training seeds {sorted(trainers)} as a group failed at its first step "
                              f"({type(err).__name__}: {err}); training them one by one", stacklevel=2)
                for seed, t in trainers.items():
                    try:
                        for ckpt in t.run():
                            submit(seed, ckpt, t.state_dict())
                    except DivergedError as div:
                        outcome[seed] = div
        finally:
            for seed, w in writers.items():
                try:
                    w.close()
                except Exception as err:  # noqa: BLE001
                    failed_writes.setdefault(seed, err)
    except BaseException as err:
        for seed in trainers:
            _end(paths[seed], seed, err)
        raise
    out = {}
    for seed in trainers:
        err = failed_writes.get(seed)
        out[seed] = _end(paths[seed], seed, err if err is not None else outcome[seed])
        if err is not None:
            out[seed]["error"] = f"{type(err).__name__}: {err}"
    return out


def study_state(rows: list[dict]) -> tuple[str, list[int]]:
    """``complete`` (every seed finished: complete or diverged), ``partial`` (some seeds failed or
    were interrupted, the rest finished), ``running`` or ``incomplete``; and the seeds to redo."""
    statuses = {r["status"] for r in rows}
    todo = [r["seed"] for r in rows if r["status"] in ("failed", "interrupted")]
    if statuses <= {"complete", "diverged"}:
        return "complete", []
    if "running" in statuses:
        return "running", todo
    if todo and statuses <= {"complete", "diverged", "failed", "interrupted"}:
        return "partial", todo
    return "incomplete", todo


def seed_status(study: str | Location) -> list[dict]:
    """One row per configured seed: status, committed checkpoints, last step, error."""
    study = location(study)
    config = load_study(study)
    rows = []
    for seed in config.seeds:
        path = run_path(study, seed)
        if not path.exists():
            rows.append({"seed": seed, "status": "missing", "committed_steps": 0, "last_step": None,
                         "error": None, "path": str(path)})
            continue
        try:
            store = RunStore(path, mode="r")
            a = store.attrs
            rows.append({"seed": seed, "status": store.effective_status(), "committed_steps": a["committed_steps"],
                         "last_step": a["last_step"], "error": a["error"], "path": str(path)})
        except Exception as err:  # a damaged store is reported, not fatal
            rows.append({"seed": seed, "status": "damaged", "committed_steps": 0, "last_step": None,
                         "error": f"{type(err).__name__}: {err}", "path": str(path)})
    return rows


def validate_study(study: str | Location) -> list[str]:
    """Every problem found in a study's stores, each naming the seed and the array; empty if none.
    Reads every committed row of every array, so damaged chunks are found, not just missing ones."""
    study = location(study)
    config = load_study(study)
    problems = []
    for seed in config.seeds:
        path = run_path(study, seed)
        if not path.exists():
            problems.append(f"seed {seed}: store {path} is missing (`vt run` or `vt rerun {study} --seed {seed}`)")
            continue
        try:
            store = RunStore(path, mode="r")
            if store.attrs.get("config_hash") != config.training_hash():
                problems.append(f"seed {seed}: {path} was written by another config (hash "
                                f"{store.attrs.get('config_hash')} != {config.training_hash()})")
                continue
            problems += [f"seed {seed}: {p}; `vt rerun {study} --seed {seed}` retrains it" for p in store.validate()]
        except Exception as err:  # noqa: BLE001
            problems.append(f"seed {seed}: {path} cannot be opened ({type(err).__name__}: {err})")
    return problems


def reset_seed(study: str | Location, seed: int) -> None:
    """Delete one seed's store so that the next run retrains it from scratch."""
    config = load_study(study)
    if seed not in config.seeds:
        raise StudyError(f"seed {seed} is not in this study's seeds {config.seeds}")
    path = run_path(study, seed)
    remove_tree(path)
    remove_tree(resume_path(path))
