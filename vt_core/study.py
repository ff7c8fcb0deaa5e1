"""The study directory: study.json, the lock, each seed's status, validation and reset.

Training lives in :mod:`vt_core.stages.train`; the paths in :mod:`vt_core.layout`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import socket
from contextlib import contextmanager
from importlib import metadata

from vt_core.config import ConfigError, StudyConfig, parse_config
from vt_core.errors import VtError
from vt_core.layout import layout
from vt_core.location import Location, create_exclusive, location, remove_tree, url, write_json_atomic
from vt_core.store import RunStore, StoreError, process_alive

_VERSIONED = ("vt", "torch", "zarr", "xarray", "dask", "hmmlearn", "networkx", "bokeh", "prefect", "numpy")
#: a seed in one of these states needs no more training
FINISHED = ("complete", "diverged")


class StudyError(VtError, ValueError):
    """The study directory does not match the config, or is not a study at all."""


class StudyLockedError(StudyError):
    """Another live process is running this study."""


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
    path = layout(study).lock
    _acquire(study, path)
    _held[key] = 1
    try:
        yield
    finally:
        _held.pop(key, None)
        path.unlink(missing_ok=True)


def _acquire(study: str | Location, path: Location) -> None:
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
    for _ in range(2):
        if create_exclusive(path, json.dumps(me).encode()):
            return
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
    raise StudyLockedError(f"{study}: could not take the lock {path}; delete it if no vt process is running")


def study_dir(config: StudyConfig) -> Location:
    """The study directory: an absolute local path, or an fsspec URL (:mod:`vt_core.location`)."""
    return location(config.output_dir)


def run_path(study: str | Location, seed: int) -> Location:
    """``STUDY/runs/seed=NNNN.zarr`` (:meth:`vt_core.layout.Layout.run`)."""
    return layout(study).run(seed)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    out = {}
    for pkg in _VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def prepare_study(config: StudyConfig) -> Location:
    """Create (or reopen) the study directory for ``config`` and record it in study.json.

    Reopening with a config that trains differently is refused: the stored runs would no longer
    match their config. Changing seeds, metrics or HMM settings is fine.
    """
    study = study_dir(config)
    paths = layout(study)
    created = _now()
    if paths.study_json.is_file():
        old = json.loads(paths.study_json.read_text())
        if old.get("training_hash") != config.training_hash():
            raise StudyError(
                f"{study} holds a study trained with another config (training hash "
                f"{old.get('training_hash')} != {config.training_hash()}); set output_dir to a new "
                f"directory, or restore the original model/data/optimizer/training/checkpoints/hooks"
            )
        created = old.get("created", created)
    elif study.exists() and any(study.iterdir()):
        raise StudyError(f"{study} exists, is not empty and has no {paths.study_json.name}; choose another output_dir")
    paths.runs.mkdir(parents=True, exist_ok=True)
    write_json_atomic(paths.study_json, {
        "config": config.model_dump(mode="json"),
        "training_hash": config.training_hash(),
        "versions": _versions(),
        "created": created,
        "updated": _now(),
    })
    return study


def load_study(study: str | Location) -> StudyConfig:
    """The study's config, from study.json. Parsing imports no user code; the same text is
    parsed once per process (a run reads it at every stage)."""
    meta_path = layout(study).study_json
    if not meta_path.is_file():
        raise StudyError(f"{study} is not a study directory (no {meta_path.name}); run `vt run CONFIG` first")
    return _parse_study_json(meta_path.read_text(), str(meta_path))


@functools.lru_cache(maxsize=32)
def _parse_study_json(text: str, source: str) -> StudyConfig:
    try:
        return parse_config(json.loads(text)["config"], source)
    except (KeyError, TypeError, json.JSONDecodeError, ConfigError) as err:
        raise StudyError(f"{source} is damaged: {err}") from None


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
    return store.status in FINISHED


def study_state(rows: list[dict]) -> tuple[str, list[int]]:
    """``complete`` (every seed finished: complete or diverged), ``partial`` (some seeds failed or
    were interrupted, the rest finished), ``running`` or ``incomplete``; and the seeds to redo."""
    statuses = {r["status"] for r in rows}
    todo = [r["seed"] for r in rows if r["status"] in ("failed", "interrupted")]
    if statuses <= set(FINISHED):
        return "complete", []
    if "running" in statuses:
        return "running", todo
    if todo and statuses <= {*FINISHED, "failed", "interrupted"}:
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
        except Exception as err:  # noqa: BLE001 - a damaged store is reported, not fatal
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
    remove_tree(layout(study).run(seed))
    remove_tree(layout(study).resume(seed))
