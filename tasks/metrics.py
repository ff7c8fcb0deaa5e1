"""Metrics: a template for metrics.zarr, then one task per seed writing its own region."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from vt_core import stages


@task(name="init-metrics", cache_policy=NO_CACHE)
def init_metrics_task(study: str, seeds: list[int]) -> str:
    return stages.init_metrics(Path(study), seeds)


@task(name="compute-metrics", cache_policy=NO_CACHE, task_run_name="compute-metrics-{seed}")
def compute_metrics_task(study: str, seed: int) -> int:
    return stages.compute_metrics(Path(study), seed)
