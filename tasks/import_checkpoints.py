"""Importing checkpoints: one task per seed (`vt import`). Logic: :mod:`vt_core.stages.import_checkpoints`."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from vt_core.stages import import_checkpoints as imports


@task(name="plan-import", cache_policy=NO_CACHE, persist_result=False)
def plan_import_task(source: str, study: str, pattern: str, options: dict) -> dict:
    return dict(imports.plan_import(source, study, pattern, **options))


# nothing cached by Prefect: whether a seed needs importing is read from its own store
@task(name="import-seed", cache_policy=NO_CACHE, persist_result=False, task_run_name="import-seed-{seed}")
def import_seed_task(study: str, seed: int, checkpoints: list, probe: str | None = None,
                     metrics: dict | None = None) -> dict:
    summary = imports.import_seed(study, seed, checkpoints, probe, metrics)  # type: ignore[arg-type]
    get_run_logger().info("seed %d: %s (%d checkpoints committed)", seed,
                          "already imported, skipped" if summary["skipped"] else f"{summary['imported']} imported",
                          summary["committed_steps"])
    return dict(summary)


@task(name="import-first", cache_policy=NO_CACHE, persist_result=False, task_run_name="import-first-{seed}")
def import_first_task(study: str, seed: int, checkpoints: list, probe: str | None = None) -> dict:
    """A seed's first checkpoint, which the metrics plan reads its layers from."""
    return dict(imports.import_seed(study, seed, checkpoints, probe, limit=1))
