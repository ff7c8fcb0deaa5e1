"""Stage 2, metrics: plan ``metrics.zarr``, compute one seed's region per task, then swap it in.

Kernels and the lazy computation are in :mod:`vt_core.metrics`; the store's schema and its
incremental reuse in :mod:`vt_core.metrics.store`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from typing import NotRequired, TypedDict

import numpy as np

from vt_core.config.usercode import load_user_code
from vt_core.errors import VtError
from vt_core.metrics import store as incremental
from vt_core.report.narrative import seed_ranges
from vt_core.storage.handle import Study, StudyRef
from vt_core.storage.location import remove_tree
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import ENDED

log = logging.getLogger("vt")


class DamagedRunError(VtError, RuntimeError):
    """A seed's store turned out damaged while its metrics were computed."""

    def __init__(self, study: StudyRef, seed: int, problems: list[str], fix: str | None = None):
        self.seed, self.problems = seed, problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        fix = fix or f"`vt run CONFIG` or `vt rerun {study} --seed {seed}` retrains it"
        super().__init__(f"seed {seed}: {problems[0]}{more}; {fix}")


class MetricsPlan(TypedDict):
    """What :func:`plan_metrics` hands to every seed's task: where to write, and whether the
    store is being rebuilt beside the old one."""

    target: str
    rebuild: bool
    seeds: list[int]


class MetricCells(TypedDict):
    """How many (checkpoint, metric) cells were computed and how many reused, and why cells were
    computed, per seed (``{"3": "seed retrained (its run store is new)"}``)."""

    computed: int
    reused: int
    why: dict[str, str]
    damaged: NotRequired[dict[str, list[str]]]


def usable_seeds(study: StudyRef) -> list[int]:
    """Seeds whose store has at least two committed checkpoints (complete, diverged or stopped early)."""
    study = Study.open(study)
    out = []
    for seed in study.config.seeds:
        if study.layout.run(seed).exists():
            store = study.run(seed)
            if store.status in ENDED and store.committed >= 2:
                out.append(seed)
    return out


def plan_metrics(study: StudyRef, seeds: list[int], steps: list[int] | None = None) -> MetricsPlan:
    """Plan metrics.zarr for ``seeds`` (a new template only when something was added); ``steps``:
    checkpoints not committed yet that the plan must hold too (an import's, :class:`MetricsStream`)."""
    from vt_core.storage.output_integrity import metrics_problems

    study = Study.open(study)
    config = load_user_code(study.config)
    damage = metrics_problems(study)
    if damage:  # nothing is reused from a damaged store: every cell is computed again
        more = f" (and {len(damage) - 1} more)" if len(damage) > 1 else ""
        log.warning("%s%s; recomputing every metric", damage[0], more)
        remove_tree(study.layout.metrics)
    plan = incremental.plan_metrics(study, config, {s: study.run(s) for s in seeds}, steps)
    return {"target": plan["target"], "rebuild": plan["rebuild"], "seeds": plan["seeds"]}


# One seed's metrics at a time in a process: each computation already spreads over every core
# (Dask's threads, torch and BLAS threads). Seeds computed concurrently by a thread task runner
# oversubscribed the cores: the paper-size study's metric stage took 257 s that way against 139 s one
# seed after another (2 cores; benchmarks/RESULTS.md). Dask workers are left alone: they run a task
# per thread slot already, and a second seed's task waiting on a lock there could hold a slot that the
# first seed's inner computation needs.
_ONE_SEED_AT_A_TIME = threading.Lock()


def _seed_slot():
    """The lock above, or nothing in a Dask worker. ``distributed`` may be half imported by another
    thread of this process (an import task's first use of dask): then this is no worker either
    (a `vt import` died on the AttributeError of that race)."""
    get_worker = getattr(sys.modules.get("distributed"), "get_worker", None)
    if get_worker is not None:
        try:
            get_worker()
            return contextlib.nullcontext()
        except ValueError:
            pass
    return _ONE_SEED_AT_A_TIME


def compute_metrics(study: StudyRef, seed: int, plan: MetricsPlan) -> MetricCells:
    """One seed's region: returns how many cells were computed and how many reused; a store found
    damaged while it is read (a chunk failing its checksum) gives the problems under ``damaged``
    instead (the flow retrains the seed or reports it)."""
    study = Study.open(study)
    config = load_user_code(study.config)
    store = study.run(seed)
    with _seed_slot():
        try:
            counts = incremental.write_seed_metrics(study, config, store, seed, plan)
        except Exception:
            problems = store.check(read=True)  # a chunk failing its checksum: name it, not a traceback
            if problems:
                return {"computed": 0, "reused": 0, "why": {}, "damaged": {str(seed): problems}}
            raise
    why = {str(seed): counts["why"]} if counts["why"] else {}
    return {"computed": counts["computed"], "reused": counts["reused"], "why": why, "damaged": {}}


#: weights a metric task of a large model reads at most (whole checkpoints, at least one): the
#: cells of one seed are spread over tasks, so that a cluster's workers share a long series
TASK_BYTES = 4 * 2**30


def spread(study: StudyRef, seeds: list[int]) -> bool:
    """Whether the metric stage spreads each seed over tasks of a few checkpoints: for checkpoints
    large enough to be computed a checkpoint at a time (:mod:`vt_core.metrics.stream`)."""
    from vt_core.metrics.stream import worth_streaming

    study = Study.open(study)
    return any(worth_streaming(study.run(s)) for s in seeds)


def metric_tasks(study: StudyRef, seed: int, plan: MetricsPlan) -> list[dict]:
    """One seed's missing cells as tasks of at most :data:`TASK_BYTES` of checkpoints each."""
    study = Study.open(study)
    config = load_user_code(study.config)
    store = study.run(seed)
    per = sum(a.dtype.itemsize * int(np.prod(a.shape[1:])) for _, a in store.root["weights"].arrays())
    region = incremental.SeedRegion(study, config, store, seed, plan)
    return region.tasks(store, max(1, TASK_BYTES // max(per, 1)))


def compute_cells(study: StudyRef, task: dict) -> dict:
    """One task's cells (``{"seed", "cells"}``), or the store's damage (``{"seed", "damaged"}``)."""
    study = Study.open(study)
    config = load_user_code(study.config)
    store = study.run(task["seed"])
    with _seed_slot():
        try:
            return {"seed": task["seed"], "cells": incremental.compute_cells(store, config, task["names"], task["index"])}
        except Exception:
            problems = store.check(read=True)
            if problems:
                return {"seed": task["seed"], "damaged": problems}
            raise


def write_cells(study: StudyRef, seed: int, plan: MetricsPlan, results: list[dict]) -> MetricCells:
    """One seed's region from the cells its tasks computed (and those reused), written out."""
    damaged = [p for r in results if r["seed"] == seed for p in r.get("damaged", [])]
    if damaged:
        return {"computed": 0, "reused": 0, "why": {}, "damaged": {str(seed): damaged}}
    study = Study.open(study)
    config = load_user_code(study.config)
    store = study.run(seed)
    region = incremental.SeedRegion(study, config, store, seed, plan)
    region.apply(store, [r["cells"] for r in results if r["seed"] == seed])
    region.write()
    counts = region.counts()
    why = {str(seed): counts["why"]} if counts["why"] else {}
    return {"computed": counts["computed"], "reused": counts["reused"], "why": why, "damaged": {}}


#: new checkpoints (bytes of weights and activations) that a stream computes the metrics of at once:
#: at least one checkpoint, so a large model's block is one checkpoint, a small model's several
STREAM_BYTES = 64 * 2**20
#: how often a stream writes its region out (and at its end): what a kill can lose is recomputed
STREAM_WRITE_SECONDS = 30.0


class MetricsStream:
    """One seed's metrics computed while its checkpoints are committed (`vt import`), so that the
    store is not read a second time by the metric stage: every :data:`STREAM_BYTES` of newly
    committed checkpoints, their metrics are computed from the store (read back while the page
    cache still holds them: the same code, and the same checksums, as the metric stage), into the
    seed's region of the plan (:func:`plan_metrics` with the import's steps), written out every
    :data:`STREAM_WRITE_SECONDS` and at :meth:`finish`. ``vt analyze`` then reuses every cell.

    The import waits while a block is computed: a thread computing it beside the import was
    measured 2.9x slower on 2 cores (the metric kernels' threads and the import's contend)."""

    def __init__(self, study: StudyRef, seed: int, plan: MetricsPlan, store: RunStore):
        study = Study.open(study)
        config = load_user_code(study.config)
        self.study, self.region = study, incremental.SeedRegion(study, config, store, seed, plan)
        self.pending, self.written = 0, time.monotonic()
        self.error: Exception | None = None

    def committed(self, store: RunStore, nbytes: int) -> None:
        """A checkpoint of ``nbytes`` was committed to ``store``. A metric that cannot be computed
        stops the stream, not the import: :meth:`finish` raises it once every checkpoint is in."""
        self.pending += nbytes
        if self.pending < STREAM_BYTES or self.error is not None:
            return
        self.pending = 0
        try:
            with _seed_slot():
                self.region.update(store)
            if time.monotonic() - self.written > STREAM_WRITE_SECONDS:
                self.region.write()
                self.written = time.monotonic()
        except Exception as err:
            log.warning("seed %d: metrics stopped (%s); the import goes on", self.region.seed, err)
            self.error = err

    def finish(self, store: RunStore) -> MetricCells:
        """Every committed checkpoint's metrics, written out; the cells computed and reused. A
        store found damaged on the way (a chunk failing its checksum) is named (:class:`DamagedRunError`)."""
        if self.error is None:
            try:
                with _seed_slot():
                    self.region.update(store)
            except Exception as err:
                self.error = err
        if self.error is not None:
            problems = store.check(read=True)
            if problems:
                raise DamagedRunError(self.study, self.region.seed, problems,
                                      fix=f"delete {store.path} and import the seed again") from self.error
            raise self.error
        self.region.write()
        counts = self.region.counts()
        why = {str(counts["seed"]): counts["why"]} if counts["why"] else {}
        return {"computed": counts["computed"], "reused": counts["reused"], "why": why, "damaged": {}}


def damaged_seeds(counts: list[MetricCells]) -> dict[int, list[str]]:
    """The seeds whose stores the metric tasks found damaged, with their problems."""
    return {int(s): p for c in counts for s, p in c.get("damaged", {}).items()}


def finalize_metrics(study: StudyRef, plan: MetricsPlan, counts: list[MetricCells]) -> MetricCells:
    """Put a rebuilt store in place; the cells computed and reused over all seeds. A seed found
    damaged is refused (:class:`DamagedRunError`) before anything is swapped in."""
    damaged = damaged_seeds(counts)
    if damaged:
        seed = min(damaged)
        raise DamagedRunError(study, seed, damaged[seed])
    study = Study.open(study)
    incremental.finalize_metrics(study, plan)
    if study.config.hooks.per_example_loss:  # the function's trajectory, over every seed at once
        from vt_core.metrics.function import fit_function

        fit_function(study, [int(s) for s in plan["seeds"]])
    return {"computed": sum(c["computed"] for c in counts), "reused": sum(c["reused"] for c in counts),
            "why": {seed: reason for c in counts for seed, reason in c["why"].items()}, "damaged": {}}


def describe_cells(cells: MetricCells) -> str:
    """``metrics: 1,540 cells computed (seed 3: seed retrained ...), 12,000 reused``."""
    by_reason: dict[str, list[int]] = {}
    for s, r in cells["why"].items():
        by_reason.setdefault(r, []).append(int(s))
    why = "; ".join(f"seed{'s' if len(ss) > 1 else ''} {seed_ranges(ss)}: {r}"
                    for r, ss in sorted(by_reason.items(), key=lambda kv: min(kv[1])))
    return (f"metrics: {cells['computed']:,} cells computed" + (f" ({why})" if why else "")
            + f", {cells['reused']:,} reused")
