"""The study flow (train every seed, then analyse) and the analysis flow (existing runs)."""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import flow, get_run_logger, unmapped

from tasks.explain import explain_task
from tasks.hmm import finalize_model_task, fit_hmm_task, prepare_hmm_task, select_model_task
from tasks.metrics import compute_metrics_task, finalize_metrics_task, plan_metrics_task
from tasks.publish import build_dashboard_task, publish_artifacts_task
from tasks.train import train_group_task, train_seed_task
from vt_core.config import load_config
from vt_core.groups import resolve_group_size
from vt_core.layout import layout
from vt_core.location import is_remote, url
from vt_core.runtime import Runtime
from vt_core.stages.explain import analysis_is_current
from vt_core.stages.hmm import load_selection
from vt_core.stages.metrics import describe_cells, usable_seeds
from vt_core.stages.train import SeedsFailedError
from vt_core.study import is_finished, load_study, prepare_study, reset_seed, study_lock
from vt_core.usercode import load_user_code


def _result_storage(study: str):
    """Task results (JSON) in the study: a local folder, or for a URL an fsspec block saved on the
    Prefect server under a name derived from the URL (Prefect needs result storage blocks saved)."""
    where = layout(study).task_results
    if not is_remote(where):
        return where
    import hashlib

    from prefect.filesystems import RemoteFileSystem

    name = "vt-results-" + hashlib.sha256(url(where).encode()).hexdigest()[:16]
    RemoteFileSystem(basepath=url(where)).save(name, overwrite=True)
    return f"remote-file-system/{name}"


@flow(name="vt-analyze")
def analyze_flow(study: str, force: bool = True) -> dict:
    """Metrics (one task per seed), HMM fits (one task per k x restart), selection, dashboard.

    With ``force=False`` an analysis already made from the same runs and settings is reused."""
    with study_lock(study):
        return _analyze(study, force)


def _analyze(study: str, force: bool) -> dict:
    seeds = usable_seeds(study)
    if not force and analysis_is_current(study, seeds):
        get_run_logger().info("analysis is up to date with the runs; reusing it")
        dashboard, selection = url(layout(study).dashboard), dict(load_selection(study))
        publish_artifacts_task(study, dashboard, selection)
        return {"study": study, "dashboard": dashboard, "chosen_k": selection["chosen_k"], "seeds": seeds,
                "metric_cells": {"computed": 0, "reused": None}}
    plan = plan_metrics_task(study, seeds)
    counts = compute_metrics_task.map(study=unmapped(study), seed=seeds, plan=unmapped(plan)).result()
    cells = finalize_metrics_task(study, plan, counts)
    get_run_logger().info(describe_cells(cells))  # type: ignore[arg-type]
    selection = _select(study)
    explain_task(study)
    dashboard = build_dashboard_task(study)
    publish_artifacts_task(study, dashboard, selection)
    return {"study": study, "dashboard": dashboard, "chosen_k": selection["chosen_k"], "seeds": seeds,
            "metric_cells": cells}


@flow(name="vt-study")
def study_flow(config_path: str | None = None, study: str | None = None, rerun_seeds: list[int] | None = None,
               runtime: dict | None = None) -> dict:
    """Train every seed of a study (finished seeds come back cached), then analyse.

    Give ``config_path`` for a new or continued study, or ``study`` for an existing directory.
    ``rerun_seeds`` are deleted and trained again from scratch. ``runtime``: the
    :class:`vt_core.runtime.Runtime` switches as a dict (default: read from this process's
    environment, the edge for a deployment)."""
    logger = get_run_logger()
    if config_path is not None:
        study = url(prepare_study(load_user_code(load_config(config_path))))
    elif study is None:
        raise ValueError("give config_path (a .toml study config) or study (an existing study directory)")
    switches = runtime if runtime is not None else dataclasses.asdict(Runtime.from_env())
    with study_lock(study):
        return _train_and_analyze(study, rerun_seeds, logger, switches)


def _select(study: str) -> dict:
    """The HMM fits as tasks: main and cross-validation fits, the grid's extensions while BIC is
    lowest at its edge, the bootstrap fits; then the chosen model."""
    jobs = prepare_hmm_task(study)["jobs"]
    rows = list(fit_hmm_task.map(study=unmapped(study), job=jobs).result())
    while True:
        nxt = select_model_task(study, rows)
        more = nxt["extend_jobs"] or nxt["bootstrap_jobs"]
        if more:
            rows += fit_hmm_task.map(study=unmapped(study), job=more).result()
        if not nxt["extend_jobs"]:
            return finalize_model_task(study, rows)


def _submit_training(study: str, switches: dict) -> dict:
    """Finished seeds: the per-seed task, a cache hit ("Cached"); the rest in groups of the group size."""
    config = load_study(study)
    task = train_seed_task.with_options(result_storage=_result_storage(study))
    size = resolve_group_size(config)
    todo = [s for s in config.seeds if not is_finished(study, s)]
    futures: dict[tuple[int, ...], Any] = {(seed,): task.submit(study, seed, switches)
                                           for seed in config.seeds if seed not in todo}
    for i in range(0, len(todo), size):
        seeds = todo[i : i + size]
        futures[tuple(seeds)] = (task.with_options(refresh_cache=True).submit(study, seeds[0], switches)
                                 if len(seeds) == 1 else train_group_task.submit(study, seeds, switches))
    return futures


def _train_and_analyze(study: str, rerun_seeds: list[int] | None, logger, switches: dict) -> dict:
    for seed in rerun_seeds or []:
        reset_seed(study, seed)
    futures = _submit_training(study, switches)
    runs, failed = {}, {}
    for seeds, fut in futures.items():
        fut.wait()
        if fut.state.is_completed():
            result = fut.result()
            for summary in result if isinstance(result, list) else [result]:
                if summary["status"] == "failed":  # a seed of a group whose writes failed
                    failed[summary["seed"]] = summary["error"]
                    logger.error("seed %d failed: %s", summary["seed"], summary["error"])
                else:
                    runs[summary["seed"]] = summary
        else:
            for seed in seeds:
                failed[seed] = str(fut.state.message)
                logger.error("seed %d failed: %s", seed, fut.state.message)
    # in this flow, not as a subflow: a subflow would get its own default (thread) task runner, and
    # the metric and HMM tasks would not go to the Dask cluster the training went to
    result = _analyze(study, force=bool(rerun_seeds))
    result.update(runs=runs, failed=failed)
    if failed:  # the flow run ends Failed (so `prefect flow-run retry` applies), naming the seeds
        raise SeedsFailedError(study, failed)
    return result
