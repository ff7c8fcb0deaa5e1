"""The import flow: checkpoint files already on disk become a study (`vt import`), one task per seed."""

from __future__ import annotations

from prefect import flow, unmapped

from tasks.imports import import_seed_task, plan_import_task
from vt_core.location import location, url
from vt_core.study import study_lock


@flow(name="vt-import")
def import_flow(source: str, study: str, pattern: str, options: dict | None = None) -> dict:
    """Find the checkpoints, then import every seed (finished seeds are skipped, interrupted ones
    go on after their last commit). ``options``: :func:`vt_core.stages.imports.plan_import`'s
    keyword arguments (weights, factory, kwargs, hooks, probe, name, metrics, hmm)."""
    study = url(location(study))
    plan = plan_import_task(source, study, pattern, options or {})  # nothing is written before it checks
    with study_lock(study):
        seeds = sorted(int(s) for s in plan["seeds"])
        futures = import_seed_task.map(study=unmapped(study), seed=seeds,
                                       checkpoints=[plan["seeds"][str(s)] for s in seeds],
                                       probe=unmapped(plan["probe"]))
        return {"study": study, "seeds": list(futures.result())}
