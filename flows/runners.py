"""Task runners by name: threads (default), a local Dask cluster, or a Dask scheduler address."""

from __future__ import annotations

from prefect.task_runners import ThreadPoolTaskRunner

from vt_core.errors import VtError


class RunnerError(VtError, ValueError):
    """An unknown --runner value."""


def make_task_runner(runner: str = "threads", workers: int = 2):
    if workers < 1:
        raise RunnerError(f"workers={workers}: give at least 1")
    if runner == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    from prefect_dask import DaskTaskRunner

    if runner == "dask":  # a local cluster of processes, bound to loopback only
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                              "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"})
    if runner.startswith("tcp://"):
        return DaskTaskRunner(address=runner)
    raise RunnerError(f"runner {runner!r} is unknown; use 'threads', 'dask' or a scheduler address tcp://HOST:PORT")
