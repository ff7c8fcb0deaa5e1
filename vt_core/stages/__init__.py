"""The pipeline: one module per stage, one function per Prefect task (``tasks/`` mirrors it).

::

    train     train_seed, train_group                       -> runs/seed=NNNN.zarr
    metrics   plan_metrics, compute_metrics, finalize_metrics -> metrics.zarr
    hmm       prepare_hmm, fit_hmm, select_model, finalize_model -> hmm/
    explain   explain                                        -> analysis.json
    publish   build_dashboard, artifacts                     -> dashboard/index.html, artifacts

Stages exchange paths and small JSON-able values only; everything else lives on disk
(:mod:`vt_core.storage.layout`). :func:`analyse` runs the analysis stages in order without an
orchestrator: for scripts, notebooks and tests.
"""

from __future__ import annotations

import importlib
import time
from typing import TYPE_CHECKING

from vt_core.storage.location import Location, location, same_process_only

if TYPE_CHECKING:
    from vt_core.config.study_config import StudyConfig
    from vt_core.stages.explain import explain
    from vt_core.stages.hmm import finalize_model, fit_hmm, prepare_hmm, select_model
    from vt_core.stages.metrics import compute_metrics, finalize_metrics, plan_metrics, usable_seeds

# The stages' functions are imported when first asked for: a process that needs one stage (the live
# watcher, a worker) does not import every other's dependencies (hmmlearn, scikit-learn, bokeh).
_LAZY = {"explain": "vt_core.stages.explain", "finalize_model": "vt_core.stages.hmm", "fit_hmm": "vt_core.stages.hmm",
         "prepare_hmm": "vt_core.stages.hmm", "select_model": "vt_core.stages.hmm",
         "compute_metrics": "vt_core.stages.metrics", "finalize_metrics": "vt_core.stages.metrics",
         "plan_metrics": "vt_core.stages.metrics", "usable_seeds": "vt_core.stages.metrics"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def nothing_to_do(study: str | Location, config: StudyConfig) -> bool:
    """True when `vt run` with ``config`` would change nothing: the study was made with this very
    config, every seed is finished and its store verified in full (checksums), and the analysis
    is current and intact. Then no orchestration needs to start."""
    from vt_core.stages.explain import analysis_is_current
    from vt_core.stages.metrics import usable_seeds
    from vt_core.storage.handle import Study
    from vt_core.storage.layout import layout
    from vt_core.storage.study import is_finished, store_problems

    if not layout(study).study_json.is_file():
        return False
    study = Study.open(study)
    if study.config.model_dump() != config.model_dump():
        return False
    if not all(is_finished(study, s) for s in config.seeds):
        return False
    if any(store_problems(study, s, config, read=True) for s in config.seeds):
        return False
    return analysis_is_current(study, usable_seeds(study))


def analyse(study: str | Location, workers: int = 1) -> dict:
    """Every analysis stage in order, without an orchestrator (what the analyze flow fans out as
    Prefect tasks). ``workers`` > 1 computes the seeds' metrics and the HMM fits in that many
    processes (each writes its own files, as the tasks do), each with its share of the cores; they
    are spawned, so a script that asks for workers runs under ``if __name__ == "__main__":``. The
    result's ``seconds`` times the metric stage, the HMM fits and the selection."""
    from vt_core.analysis import states
    from vt_core.analysis.parallel import pool as _pool
    from vt_core.stages.explain import explain
    from vt_core.stages.hmm import finalize_model, prepare_hmm
    from vt_core.stages.metrics import compute_metrics, finalize_metrics, plan_metrics, usable_seeds
    from vt_core.storage.handle import Study

    where = location(study)
    study = Study.open(where)  # opened once; worker processes get the location (a small pickle)
    if workers > 1 and same_process_only(where):
        raise ValueError(f"analyse({study}, workers={workers}): a memory:// study lives in this process only; "
                         f"use workers=1 (or a shared filesystem for worker processes)")
    seeds = usable_seeds(study)
    clock = time.perf_counter
    seconds = {}
    with _pool(workers) as pool:
        run = map if pool is None else pool.map
        ref = study if pool is None else where  # a worker process opens the study once per task
        t = clock()
        plan = plan_metrics(study, seeds)
        counts = list(run(compute_metrics, [ref] * len(seeds), seeds, [plan] * len(seeds)))
        cells = finalize_metrics(study, plan, counts)
        seconds["metrics"] = clock() - t
        t = clock()
        jobs = prepare_hmm(study)["jobs"]
        rows = states.run_fits(ref, jobs, study.config.hmm, run)
        seconds["hmm_fits"] = clock() - t
    t = clock()
    selection = finalize_model(study, rows)
    explain(study)
    seconds["selection"] = clock() - t
    return {"seeds": seeds, "metric_cells": cells, "chosen_k": selection["chosen_k"], "status": selection["status"],
            "seconds": {k: round(v, 2) for k, v in seconds.items()}}


__all__ = ["analyse", "compute_metrics", "explain", "finalize_metrics", "finalize_model", "fit_hmm", "plan_metrics",
           "prepare_hmm", "select_model", "usable_seeds"]
