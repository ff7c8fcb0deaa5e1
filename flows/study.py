"""The study flow (train every seed, then analyse) and the analysis flow (existing runs)."""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import flow, get_run_logger, unmapped

from flows.live import live_states
from flows.run_names import flow_run_name
from flows.session import keep_stop_on_sigterm
from tasks.explain import explain_task
from tasks.hmm import finalize_model_task, fit_hmm_task, prepare_hmm_task, select_model_task
from tasks.metrics import (
    compute_cells_task,
    compute_metrics_task,
    finalize_metrics_task,
    metric_tasks_task,
    plan_metrics_task,
    write_cells_task,
)
from tasks.publish import build_dashboard_task, publish_artifacts
from tasks.train import train_group_task, train_seed_task
from vt_core.analysis.states import fit_rounds
from vt_core.config.study_config import load_config, parse_config, with_output_dir
from vt_core.progress import note, publish
from vt_core.runtime import Runtime
from vt_core.stages.explain import analysis_is_current
from vt_core.stages.hmm import load_selection
from vt_core.stages.live import live_reference
from vt_core.stages.metrics import damaged_seeds, describe_cells, spread, usable_seeds
from vt_core.stages.train import SeedsFailedError, finished_summary, repair_seeds
from vt_core.storage.layout import layout
from vt_core.storage.location import url
from vt_core.storage.study import is_finished, load_study, prepare_study, reset_seed, study_dir, study_lock
from vt_core.training.groups import resolve_group_size
from vt_core.training.interrupt import StudyInterrupted, stop_requested
from vt_core.training.preflight import check_config


@flow(name="vt-analyze", flow_run_name=flow_run_name)
def analyze_flow(study: str, force: bool = True) -> dict:
    """Metrics (one task per seed), HMM fits (one task per k x restart), selection, dashboard.

    With ``force=False`` an analysis already made from the same runs and settings is reused."""
    with study_lock(study):
        return _analyze(study, force)


def _metric_cells(study: str, seeds: list[int], plan: dict) -> list:
    """Every seed's metric cells: one task per seed, or for a large model's checkpoints one task per
    seed and block of checkpoints (spread over the workers), each seed's region written after."""
    if not spread(study, seeds):
        publish({"kind": "stage", "stage": "metrics", "total": len(seeds)})
        return compute_metrics_task.map(study=unmapped(study), seed=seeds, plan=unmapped(plan)).result()
    jobs = [t for ts in metric_tasks_task.map(study=unmapped(study), seed=seeds, plan=unmapped(plan)).result() for t in ts]
    publish({"kind": "stage", "stage": "metrics", "total": len(jobs)})
    results = compute_cells_task.map(study=unmapped(study), task=jobs).result() if jobs else []
    per_seed = [[r for r in results if r["seed"] == s] for s in seeds]
    return write_cells_task.map(study=unmapped(study), seed=seeds, plan=unmapped(plan), results=per_seed).result()


def _analyze(study: str, force: bool, retrain=None) -> dict:
    """``retrain``: what to do with seeds whose stores the metric tasks find damaged (the study
    flow retrains them); without it they are refused with a clear error."""
    seeds = usable_seeds(study)
    if not force and analysis_is_current(study, seeds):
        get_run_logger().info("analysis is up to date with the runs; reusing it")
        dashboard, selection = url(layout(study).dashboard), dict(load_selection(study))
        publish_artifacts(study, dashboard, selection)
        return {"study": study, "dashboard": dashboard, "chosen_k": selection["chosen_k"], "seeds": seeds,
                "metric_cells": {"computed": 0, "reused": None}}
    plan = plan_metrics_task(study, seeds)
    counts = _metric_cells(study, seeds, plan)
    damaged = damaged_seeds(counts)  # type: ignore[arg-type]
    if damaged and retrain is not None:
        return retrain(damaged)
    cells = finalize_metrics_task(study, plan, counts)
    get_run_logger().info(describe_cells(cells))  # type: ignore[arg-type]
    selection = _select(study)
    explain_task(study)
    dashboard = build_dashboard_task(study)
    publish_artifacts(study, dashboard, selection)
    return {"study": study, "dashboard": dashboard, "chosen_k": selection["chosen_k"], "seeds": seeds,
            "metric_cells": cells}


@flow(name="vt-study", flow_run_name=flow_run_name)
def study_flow(config_path: str | None = None, study: str | None = None, rerun_seeds: list[int] | None = None,
               runtime: dict | None = None, config: dict | None = None, checked: bool = False,
               output_dir: str | None = None, reference: str | None = None) -> dict:
    """Train every seed of a study (finished seeds come back cached), then analyse.

    Give ``config_path`` for a new or continued study, or ``study`` for an existing directory.
    ``rerun_seeds`` are deleted and trained again from scratch. ``runtime``: the
    :class:`vt_core.runtime.Runtime` switches as a dict (default: read from this process's
    environment, the edge for a deployment). ``config``: the config already read from
    ``config_path`` (the `vt` command passes it, so the file is read once); ``checked``: the caller
    has run every check of `vt validate` on it (the `vt` command has), so it is not run again.
    ``output_dir``: where this run's study goes instead of the config's, with ``{date}`` and
    ``{time}`` filled in (a nightly deployment's own study each night). ``reference``: a finished
    study whose model decodes each seed's state while it trains (:mod:`flows.live`)."""
    logger = get_run_logger()
    opened = None
    if config is not None:
        opened = parse_config(config, config_path or "the flow's config parameter")
    elif config_path is not None:
        opened = load_config(config_path)
    if opened is not None and output_dir is not None:
        opened, checked = with_output_dir(opened, output_dir), False  # another directory: checked afresh
    if opened is not None:
        if not checked:
            check_config(opened)  # everything `vt validate` checks, before anything is written
        study = url(study_dir(opened))
        study_dir(opened).mkdir(parents=True, exist_ok=True)
    elif study is None:
        raise ValueError("give config_path (a .toml study config) or study (an existing study directory)")
    switches = runtime if runtime is not None else dataclasses.asdict(Runtime.from_env())
    reference = live_reference(opened or load_study(study), reference)  # --reference, else live.reference
    with study_lock(study), keep_stop_on_sigterm():
        if opened is not None:
            prepare_study(opened, source=config_path)
        return _train_and_analyze(study, rerun_seeds, logger, switches, reference)


def _select(study: str) -> dict:
    """The HMM fits as tasks: main and cross-validation fits, the grid's extensions while BIC is
    lowest at its edge, the bootstrap fits; then the chosen model."""
    jobs = prepare_hmm_task(study)["jobs"]
    publish({"kind": "stage", "stage": "hmm", "total": len(jobs)})
    def fit_many(more: list[dict]) -> list[dict]:
        return list(fit_hmm_task.map(study=unmapped(study), job=more).result())

    rows = fit_rounds(fit_many(jobs), lambda rows: select_model_task(study, rows), fit_many,
                      on_round=lambda stage, n: publish({"kind": "stage", "stage": stage, "total": n}))
    return finalize_model_task(study, rows)


def _submit_training(study: str, switches: dict) -> tuple[dict, dict]:
    """Summaries of the finished seeds (read from their stores: nothing is cached elsewhere), and a
    training task for the rest, in groups of the group size."""
    config = load_study(study)
    size = resolve_group_size(config)
    todo = [s for s in config.seeds if not is_finished(study, s)]
    done = {seed: finished_summary(study, seed) for seed in config.seeds if seed not in todo}
    futures: dict[tuple[int, ...], Any] = {}
    for i in range(0, len(todo), size):
        seeds = todo[i : i + size]
        futures[tuple(seeds)] = (train_seed_task.submit(study, seeds[0], switches)
                                 if len(seeds) == 1 else train_group_task.submit(study, seeds, switches))
    return done, futures


def _train(study: str, logger, switches: dict) -> tuple[dict, dict]:
    """Train what is not finished; each seed's summary, and the failed seeds with their errors."""
    for line in repair_seeds(study):
        logger.warning(line)  # the Prefect UI
        note(f"warning: {line}")  # the terminal
    runs, futures = _submit_training(study, switches)
    failed = {}
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
    return runs, failed


def _train_and_analyze(study: str, rerun_seeds: list[int] | None, logger, switches: dict,
                       reference: str | None = None) -> dict:
    for seed in rerun_seeds or []:
        reset_seed(study, seed)
    with live_states(study, load_study(study).name, reference):
        runs, failed = _train(study, logger, switches)
    if stop_requested():  # Ctrl-C or SIGTERM: nothing new starts, nothing is analysed
        raise StudyInterrupted(study, sorted(s for s, r in runs.items() if r["status"] == "interrupted"),
                               sorted(s for s, r in runs.items() if r["status"] == "missing"))

    def retrain(damaged: dict[int, list[str]]) -> dict:
        """Seeds found damaged while their metrics were read: retrained from scratch, once."""
        for seed, problems in sorted(damaged.items()):
            logger.warning("seed %d: %s; retraining it from scratch", seed, problems[0])
            note(f"warning: seed {seed}: {problems[0]}; retraining it from scratch")
            reset_seed(study, seed)
        more, more_failed = _train(study, logger, switches)
        runs.update(more)
        failed.update(more_failed)
        return _analyze(study, force=True)

    if not usable_seeds(study):  # nothing to analyse: say why, not "no seed has finished"
        ended = {s: f"diverged: {r['error']}" for s, r in runs.items() if r["status"] == "diverged"}
        raise SeedsFailedError(study, {**ended, **failed}, analysed=False)
    # in this flow, not as a subflow: a subflow would get its own default (thread) task runner, and
    # the metric and HMM tasks would not go to the Dask cluster the training went to
    result = _analyze(study, force=bool(rerun_seeds), retrain=retrain)
    result.update(runs=runs, failed=failed)
    if failed:  # the flow run ends Failed (so `prefect flow-run retry` applies), naming the seeds
        raise SeedsFailedError(study, failed)
    return result
