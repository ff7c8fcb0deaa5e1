"""The study directory: study.json, the lock, each seed's status, validation and reset (training
in :mod:`vt_core.stages.train`; the paths in :mod:`vt_core.storage.layout`)."""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import os
import socket
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from vt_core.config.study_config import ConfigError, StudyConfig, parse_config
from vt_core.errors import VtError
from vt_core.runtime import process_alive
from vt_core.storage.layout import layout
from vt_core.storage.location import (
    DamagedFileError,
    Location,
    Opened,
    create_exclusive,
    is_remote,
    location,
    read_json,
    remove_tree,
    url,
    write_json_atomic,
)
from vt_core.storage.run_store import RunStore, StoreError

log = logging.getLogger("vt")

_VERSIONED = ("vt", "torch", "zarr", "xarray", "dask", "hmmlearn", "networkx", "bokeh", "prefect", "numpy")
#: a seed in one of these states needs no more training
FINISHED = ("complete", "diverged")
#: a seed stopped by the live policy (live.stop_if_predicted_beyond): resumable, but analysed as it stands
STOPPED_EARLY = "stopped-early"
#: seeds whose training has ended, for now at least: their runs are analysed
ENDED = (*FINISHED, STOPPED_EARLY)


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
    for _ in range(3):
        if create_exclusive(path, json.dumps(me).encode()):
            return
        other, gone = _holder(path, socket.gethostname())
        if gone:
            log.warning("%s: took over the lock %s (%s)", study, path.name, gone)
            path.unlink(missing_ok=True)
            continue
        raise StudyLockedError(
            f"{study} is being run by pid {other.get('pid')} on {other.get('host')} since "
            f"{other.get('since')}; wait for it to finish, or delete {path} if that process is gone")
    raise StudyLockedError(f"{study}: could not take the lock {path}; delete it if no vt process is running")


def _holder(path: Location, host: str) -> tuple[dict, str | None]:
    """Who holds the lock, and why its holder is provably gone (None: it may be alive). vt writes
    a lock whole (:func:`create_exclusive`): an empty or unreadable one was not written by a live vt."""
    try:
        other = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}, "it was released meanwhile"
    except (OSError, ValueError):
        return {}, "it was empty or unreadable: no live vt process wrote it"
    if not isinstance(other, dict) or not isinstance(other.get("pid"), int):
        return {}, "it named no process: no live vt process wrote it"
    if other.get("host") == host and not process_alive(other["pid"]):
        return other, f"its process {other['pid']} on this host is gone"
    return other, None


def study_dir(config: StudyConfig) -> Location:
    """The study directory: an absolute local path, or an fsspec URL (:mod:`vt_core.storage.location`)."""
    return location(config.output_dir)


def run_path(study: str | Location, seed: int) -> Location:
    """``STUDY/runs/seed=NNNN.zarr`` (:meth:`vt_core.storage.layout.Layout.run`)."""
    return layout(study).run(seed)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@functools.cache
def _versions() -> dict[str, str]:
    """The installed versions of the packages results depend on (read once per process: 10 ms of
    package metadata, at the start of every recorded seed)."""
    out = {}
    for pkg in _VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def training_hash_of(meta: dict) -> str | None:
    value = meta.get("training_hash")
    return value if isinstance(value, str) else None


def lock_holder(study: str | Location) -> dict | None:
    """The other live process holding the study's lock (``pid``, ``host``, ``since``), or None: no
    lock, a lock whose process is provably gone, or this process's own."""
    path, host = layout(study).lock, socket.gethostname()
    other, gone = _holder(path, host) if path.is_file() else ({}, "no lock")
    return None if gone or (other.get("pid"), other.get("host")) == (os.getpid(), host) else other


def check_lock(study: Location) -> None:
    """Refuse now (before anything is written) when a live process holds the study's lock."""
    other = lock_holder(study)
    if other is not None:
        raise StudyLockedError(
            f"{study} is being run by pid {other.get('pid')} on {other.get('host')} since "
            f"{other.get('since')}; wait for it to finish, or delete {layout(study).lock} if that process is gone")


def check_output_dir(config: StudyConfig) -> None:
    """``output_dir`` can hold this study: absent (and creatable), an empty directory, or a study
    trained with this config; not a file, not read-only, not another study's, not being run now.
    Reads only: `vt validate` and `vt run` call it before anything is written."""
    study = study_dir(config)
    paths = layout(study)
    if not is_remote(study):
        _check_local_dir(study)
    if paths.study_json.is_file():
        try:
            stored = training_hash_of(read_json(paths.study_json))
        except DamagedFileError:
            stored = _hash_from_stores(study, config)  # what prepare_study would repair it from
        if stored != config.training_hash():
            raise StudyError(f"output_dir {study} holds a study trained with another config (training hash "
                             f"{stored} != {config.training_hash()}); set output_dir to a new directory, or "
                             f"restore the original model/data/optimizer/training/checkpoints/hooks")
    else:
        try:
            occupied = study.exists() and any(p.name != paths.lock.name for p in study.iterdir())
        except OSError as err:
            raise StudyError(f"output_dir {study} cannot be listed ({err}); choose another output_dir") from None
        if occupied:
            raise StudyError(f"output_dir {study} exists, is not empty and is not a study (no "
                             f"{paths.study_json.name}); choose another output_dir")
    check_lock(study)


def _check_local_dir(study: Location) -> None:
    if study.exists() and not study.is_dir():
        raise StudyError(f"output_dir {study} is a file, not a directory; choose another output_dir")
    existing = study
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StudyError(f"output_dir {study}: {existing} is a file, not a directory; choose another output_dir")
    if not os.access(existing, os.W_OK | os.X_OK) or not _can_create_in(existing):
        raise StudyError(f"output_dir {study}: {existing} is not writable; choose another output_dir")


def _can_create_in(directory: Location) -> bool:
    """Whether a directory can really be made there (permissions say yes to root everywhere, and
    nothing about /proc or a read-only mount): one is made and removed at once."""
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".vt-probe-", dir=directory))
    except OSError:
        return False
    return True


def _hash_from_stores(study: Location, config: StudyConfig) -> str | None:
    """The training hash every readable run store of the study agrees on (this config's when there
    is no store at all); None when they disagree or none can be read."""
    hashes = set()
    for seed in config.seeds:
        path = run_path(study, seed)
        if not path.exists():
            continue
        try:
            hashes.add(RunStore(path, mode="r").attrs.get("config_hash"))
        except Exception:  # noqa: BLE001 - a damaged store says nothing about the config
            continue
    if not hashes:
        return config.training_hash()
    return hashes.pop() if len(hashes) == 1 else None


def prepare_study(config: StudyConfig, source: str | os.PathLike | None = None) -> Location:
    """Create (or reopen) the study directory for ``config`` and record it in study.json, with the
    config file it was read from (``source``; kept from before when not given), so that what says
    how to resume the study can name it.

    Call it holding the study's lock, after :func:`vt_core.training.preflight.check_config`. Reopening with a
    config that trains differently is refused: the stored runs would no longer match their config.
    Changing seeds, metrics or HMM settings is fine. A damaged study.json is written again from
    ``config`` when every run store was trained by it (saying so), refused otherwise."""
    check_output_dir(config)
    study = study_dir(config)
    paths = layout(study)
    created, before = _now(), None
    if paths.study_json.is_file():
        try:
            old = read_json(paths.study_json)
            created, before = old.get("created", created), old.get("source")
        except DamagedFileError as err:
            log.warning("%s; rewritten from the config (every run store was trained by it)", err)
    paths.runs.mkdir(parents=True, exist_ok=True)
    write_json_atomic(paths.study_json, {
        "config": config.model_dump(mode="json"),
        "training_hash": config.training_hash(),
        "versions": dict(_versions()),
        "created": created,
        "updated": _now(),
        "source": str(Path(source).resolve()) if source is not None else before,
    })
    return study


def load_study(study: str | Location | Opened) -> StudyConfig:
    """The study's config, from study.json (verified; an opened study's own, read when it was
    opened). Parsing imports no user code; the same text is parsed once per process."""
    config = getattr(study, "config", None) if isinstance(study, Opened) else None
    if isinstance(config, StudyConfig):
        return config
    meta_path = layout(study).study_json
    if not meta_path.is_file():
        raise StudyError(f"{study} is not a study directory (no {meta_path.name}); run `vt run CONFIG` first")
    meta = read_json(meta_path, fix="`vt run CONFIG` with the study's config writes it again")
    return _parse_study_json(json.dumps(meta, sort_keys=True), str(meta_path))


@functools.lru_cache(maxsize=32)
def _parse_study_json(text: str, source: str) -> StudyConfig:
    try:
        return parse_config(json.loads(text)["config"], source)
    except (KeyError, TypeError, json.JSONDecodeError, ConfigError) as err:
        raise StudyError(f"{source} is damaged: {str(err)[:300]}; `vt run CONFIG` with the study's config "
                         f"writes it again") from None


#: the start of every problem that says a store sits in another seed's place (repairs leave it alone)
MISPLACED = "holds the run of seed"


def misplaced(path: Location, seed: int, attrs: dict) -> str | None:
    """Why the store at seed ``seed``'s place is another seed's (moved, or swapped by a sync tool
    or a slip of `mv`), from the seed the store records about itself; None when it is in place."""
    own = attrs.get("seed")
    if own is None or own == seed:
        return None
    return (f"store {path.name} {MISPLACED} {own} (run id {attrs.get('run_id')}), not seed {seed}: stores were moved "
            f"or swapped; put it back at {path.with_name(f'seed={int(own):04d}.zarr').name} with its resume file "
            f"(nothing was read from it), or delete it to train seed {seed} again")


def open_run(study: str | Location, seed: int, config: StudyConfig) -> RunStore:
    store = RunStore(run_path(study, seed))
    if (wrong := misplaced(store.path, seed, store.attrs)) is not None:
        raise StoreError(f"seed {seed}: {wrong}")
    if store.attrs.get("config_hash") != config.training_hash():
        raise StoreError(f"seed {seed}: {store.path} was written by another config; "
                         f"`vt rerun {study} --seed {seed}` retrains it")
    return store


def is_finished(study: str | Location, seed: int) -> bool:
    """True when a run of the study's current config leaves the seed alone (:func:`needs_no_training`)."""
    path = run_path(study, seed)
    if not path.exists():
        return False
    config = load_study(study)
    try:
        store = open_run(study, seed, config)
    except StoreError:
        return False
    return needs_no_training(store.status, config)


def needs_no_training(status: str, config: StudyConfig) -> bool:
    """Whether a run of ``config`` leaves a seed of this status alone: complete or diverged, or stopped
    early by the live policy while ``config`` still has that policy (a run without it resumes the seed)."""
    return status in FINISHED or (status == STOPPED_EARLY and config.live.stop_if_predicted_beyond is not None)


def store_problems(study: str | Location, seed: int, config: StudyConfig, read: bool = False,
                   full: bool = False, record: bool = True) -> list[str]:
    """What is damaged in one seed's store and resume file (empty: nothing, or no store yet).
    Without ``read`` the check is cheap (attributes, metadata, chunks present, the resume file's
    trailer); with it the committed chunks and the resume file are read and their checksums
    verified — the chunks not verified before or changed since (:mod:`vt_core.storage.verified`),
    every one with ``full``. A store written by another config is reported too. With ``record`` (a
    writer's check) what was read is recorded as verified, or the record dropped when damage is found;
    without it (``vt validate``) nothing is written."""
    from vt_core.storage import verified

    path = run_path(study, seed)
    if not path.exists():
        return []
    try:
        store = RunStore(path, mode="r")
        attrs = store.attrs
    except Exception as err:  # noqa: BLE001 - every kind of damage is reported
        return [f"store {path.name} cannot be opened ({type(err).__name__}: {str(err)[:160]})"]
    if (wrong := misplaced(path, seed, attrs)) is not None:
        return [wrong]
    if attrs.get("config_hash") != config.training_hash():
        return [f"store {path.name} was written by another config (hash {attrs.get('config_hash')!r} != "
                f"{config.training_hash()})"]
    before = verified.stamps(path) if read else None  # taken before the read: a change during it is not recorded
    known = {} if full or not read else verified.load(path, attrs.get("run_id"), store.committed)
    skip = verified.unchanged(known, before) if known else None
    problems = store.check(read=read, skip=skip)
    resume = store.resume_problem(read=read)
    if resume:
        problems.append(resume)
    elif not problems and attrs["status"] not in FINISHED and store.committed and not store.resume_path.is_file():
        problems.append(f"resume file {store.resume_path.name} is missing: the seed cannot resume")
    if not record:
        pass
    elif problems:
        verified.forget(path)
    elif before is not None and attrs["status"] in FINISHED:
        verified.save(path, attrs.get("run_id"), store.committed, before)
    return problems


def validate_study(study: str | Location, full: bool = False) -> list[str]:
    """Every problem found in a study, each naming the seed and array (and checkpoint) or the file;
    empty if none. Reads the committed chunks of every store (checksums verified: those not verified
    before or changed since, every one with ``full``), each resume file, and every derived file
    (metrics, HMM, analysis: :func:`vt_core.storage.output_integrity.check_derived`). Writes nothing:
    a study sent by someone else is validated as it lies."""
    from vt_core.storage.output_integrity import check_derived

    study = location(study)
    config = load_study(study)
    problems = []
    for seed in config.seeds:
        path = run_path(study, seed)
        if not path.exists():
            problems.append(f"seed {seed}: store {path} is missing (`vt run` or `vt rerun {study} --seed {seed}`)")
            continue
        found = store_problems(study, seed, config, read=True, full=full, record=False)
        problems += [f"seed {seed}: {p}" for p in found[:20]]
        if found and MISPLACED not in found[0]:
            problems.append(f"seed {seed}: `vt run CONFIG` retrains it ({len(found)} problem(s))")
    return problems + check_derived(study)


def reset_seed(study: str | Location, seed: int) -> None:
    """Delete one seed's store so that the next run retrains it from scratch."""
    config = load_study(study)
    if seed not in config.seeds:
        raise StudyError(f"seed {seed} is not in this study's seeds {config.seeds}")
    _ = config.training  # a study vt did not train cannot be retrained: refused before anything is deleted
    remove_tree(layout(study).run(seed))
    remove_tree(layout(study).resume(seed))
    remove_tree(layout(study).verified(seed))
    remove_tree(layout(study).stop_request(seed))
