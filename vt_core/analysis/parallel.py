"""Worker processes for the analysis outside an orchestrator, each with its share of the cores."""

from __future__ import annotations

import contextlib
import os


def pool(workers: int):
    """Worker processes for the analysis (:func:`vt_core.stages.analyse`, the trajectories), or no
    pool (work in this process) for one worker."""
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
