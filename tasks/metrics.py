"""Metrics: plan metrics.zarr, one task per seed writing its own region, then swap it in."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from vt_core import stages


@task(name="plan-metrics", cache_policy=NO_CACHE)
def plan_metrics_task(study: str, seeds: list[int]) -> dict:
    return stages.init_metrics(study, seeds)


@task(name="compute-metrics", cache_policy=NO_CACHE, task_run_name="compute-metrics-{seed}")
def compute_metrics_task(study: str, seed: int, plan: dict) -> dict:
    return stages.compute_metrics(study, seed, plan)


@task(name="finish-metrics", cache_policy=NO_CACHE)
def finish_metrics_task(study: str, plan: dict, counts: list[dict]) -> dict:
    return stages.finish_metrics(study, plan, counts)
