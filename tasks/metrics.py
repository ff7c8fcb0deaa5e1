"""Metrics: plan metrics.zarr, one task per seed writing its own region, then swap it in.
Logic: :mod:`vt_core.stages.metrics`."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from vt_core.progress import publish
from vt_core.stages import metrics


@task(name="plan-metrics", cache_policy=NO_CACHE)
def plan_metrics_task(study: str, seeds: list[int], steps: list[int] | None = None) -> dict:
    return dict(metrics.plan_metrics(study, seeds, steps))


@task(name="compute-metrics", cache_policy=NO_CACHE, task_run_name="compute-metrics-{seed}")
def compute_metrics_task(study: str, seed: int, plan: dict) -> dict:
    cells = dict(metrics.compute_metrics(study, seed, plan))  # type: ignore[arg-type]
    publish({"kind": "advance", "stage": "metrics"})
    return cells


@task(name="finalize-metrics", cache_policy=NO_CACHE)
def finalize_metrics_task(study: str, plan: dict, counts: list[dict]) -> dict:
    return dict(metrics.finalize_metrics(study, plan, counts))  # type: ignore[arg-type]


@task(name="metric-tasks", cache_policy=NO_CACHE, task_run_name="metric-tasks-{seed}")
def metric_tasks_task(study: str, seed: int, plan: dict) -> list[dict]:
    return metrics.metric_tasks(study, seed, plan)  # type: ignore[arg-type]


@task(name="compute-cells", cache_policy=NO_CACHE)
def compute_cells_task(study: str, task: dict) -> dict:
    out = metrics.compute_cells(study, task)
    publish({"kind": "advance", "stage": "metrics"})
    return out


@task(name="write-metrics", cache_policy=NO_CACHE, task_run_name="write-metrics-{seed}")
def write_cells_task(study: str, seed: int, plan: dict, results: list[dict]) -> dict:
    return dict(metrics.write_cells(study, seed, plan, results))  # type: ignore[arg-type]
