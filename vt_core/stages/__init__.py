"""The pipeline: one module per stage, one function per Prefect task (``tasks/`` mirrors it).

::

    train     train_seed, train_group                       -> runs/seed=NNNN.zarr
    metrics   plan_metrics, compute_metrics, finalize_metrics -> metrics.zarr
    hmm       prepare_hmm, fit_hmm, select_model             -> hmm/
    explain   explain                                        -> analysis.json
    publish   build_dashboard, artifacts                     -> dashboard/index.html, artifacts

Stages exchange paths and small JSON-able values only; everything else lives on disk
(:mod:`vt_core.layout`). :func:`analyse` runs the analysis stages in order without an
orchestrator: for scripts, notebooks and tests.
"""

from __future__ import annotations

import contextlib
import os
import time

from vt_core.location import Location, location, same_process_only
from vt_core.stages.explain import explain
from vt_core.stages.hmm import fit_hmm, prepare_hmm, select_model
from vt_core.stages.metrics import compute_metrics, finalize_metrics, plan_metrics, usable_seeds


def analyse(study: str | Location, workers: int = 1) -> dict:
    """Every analysis stage in order, without an orchestrator (what the analyze flow fans out as
    Prefect tasks). ``workers`` > 1 computes the seeds' metrics and the HMM fits in that many
    processes (each writes its own files, as the tasks do), each with its share of the cores; they
    are spawned, so a script that asks for workers runs under ``if __name__ == "__main__":``. The
    result's ``seconds`` times the metric stage, the HMM fits and the selection."""
    study = location(study)
    if workers > 1 and same_process_only(study):
        raise ValueError(f"analyse({study}, workers={workers}): a memory:// study lives in this process only; "
                         f"use workers=1 (or a shared filesystem for worker processes)")
    seeds = usable_seeds(study)
    clock = time.perf_counter
    seconds = {}
    with _pool(workers) as pool:
        run = map if pool is None else pool.map
        t = clock()
        plan = plan_metrics(study, seeds)
        counts = list(run(compute_metrics, [study] * len(seeds), seeds, [plan] * len(seeds)))
        cells = finalize_metrics(study, plan, counts)
        seconds["metrics"] = clock() - t
        t = clock()
        grid = prepare_hmm(study)["grid"]
        fits = list(run(fit_hmm, [study] * len(grid), [k for k, _ in grid], [r for _, r in grid]))
        seconds["hmm_fits"] = clock() - t
    t = clock()
    selection = select_model(study, fits)
    explain(study)
    seconds["selection"] = clock() - t
    return {"seeds": seeds, "metric_cells": cells, "chosen_k": selection["chosen_k"],
            "seconds": {k: round(v, 2) for k, v in seconds.items()}}


def _pool(workers: int):
    """Worker processes for :func:`analyse`, or no pool (work in this process) for one worker."""
    if workers <= 1:
        return contextlib.nullcontext()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a forked copy of a process that runs torch or writer threads is not safe
    threads = max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_share_cores, initargs=(threads,))


def _share_cores(threads: int) -> None:
    """In each analysis worker process: its share of the cores for torch, BLAS and Dask's threads
    (each would otherwise start one thread per core, and N workers would oversubscribe N-fold)."""
    import dask
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    dask.config.set(num_workers=threads)


__all__ = ["analyse", "compute_metrics", "explain", "finalize_metrics", "fit_hmm", "plan_metrics", "prepare_hmm",
           "select_model", "usable_seeds"]
