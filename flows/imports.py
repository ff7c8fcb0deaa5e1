"""The import flow: checkpoint files already on disk become a study (`vt import`), one task per seed,
the metrics computed as the checkpoints are committed."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, unmapped

from tasks.import_checkpoints import import_first_task, import_seed_task, plan_import_task
from tasks.metrics import compute_metrics_task, finalize_metrics_task, plan_metrics_task
from vt_core.stages.import_checkpoints import kept_seeds, merged
from vt_core.stages.metrics import describe_cells
from vt_core.storage.location import location, url
from vt_core.storage.study import study_lock


@flow(name="vt-import")
def import_flow(source: str, study: str, pattern: str, options: dict | None = None, metrics: bool = True) -> dict:
    """Find the checkpoints, then import every seed (finished seeds are skipped, interrupted ones
    go on after their last commit). ``options``: :func:`vt_core.stages.import_checkpoints.plan_import`'s
    keyword arguments (weights, factory, kwargs, hooks, probe, name, metrics, hmm).

    With ``metrics``, each seed's metrics are computed while its checkpoints are committed (its
    store is not read again by `vt analyze`): every seed's first checkpoint is imported first, so
    that metrics.zarr is planned with the layers the stores have and the steps still to come."""
    study = url(location(study))
    plan = plan_import_task(source, study, pattern, options or {})  # nothing is written before it checks
    with study_lock(study):
        seeds = sorted(int(s) for s in plan["seeds"])
        each: dict[str, Any] = {"study": unmapped(study), "seed": seeds, "probe": unmapped(plan["probe"]),
                                "checkpoints": [plan["seeds"][str(s)] for s in seeds]}
        metrics_plan: dict | None = None
        firsts: dict[int, dict] = {}
        kept = kept_seeds(study, seeds)  # their metrics are reused into the new metrics.zarr
        if metrics:
            firsts = {f["seed"]: f for f in import_first_task.map(**each).result()}
            steps = sorted({int(c[0]) for s in seeds for c in plan["seeds"][str(s)]})
            metrics_plan = plan_metrics_task(study, sorted(seeds + kept), steps)
        rest: list[dict] = import_seed_task.map(**each, metrics=unmapped(metrics_plan)).result()
        summaries = [merged(firsts[s["seed"]], s) if s["seed"] in firsts else s for s in rest]
        cells = None
        if metrics_plan is not None:
            counts = [s["metrics"] for s in summaries]
            if kept:
                counts += compute_metrics_task.map(unmapped(study), kept, unmapped(metrics_plan)).result()
            cells = finalize_metrics_task(study, metrics_plan, counts)
            get_run_logger().info(describe_cells(cells))  # type: ignore[arg-type]
        return {"study": study, "seeds": summaries, "metric_cells": cells}
