"""HMMs: prepare the input once, one task per (k, restart) fit, then select, explain, draw."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from vt_core import dashboard, stages
from vt_core.location import url


@task(name="prepare-hmm", cache_policy=NO_CACHE)
def prepare_hmm_task(study: str) -> dict:
    return stages.prepare_hmm(study)


@task(name="fit-hmm", cache_policy=NO_CACHE, task_run_name="fit-hmm-k{k}-r{restart}")
def fit_hmm_task(study: str, k: int, restart: int) -> dict:
    return stages.fit_hmm(study, k, restart)


@task(name="select-model", cache_policy=NO_CACHE)
def select_model_task(study: str, fits: list[dict]) -> dict:
    return stages.select_model(study, fits)


@task(name="explain", cache_policy=NO_CACHE)
def explain_task(study: str) -> dict:
    return stages.explain(study)


@task(name="build-dashboard", cache_policy=NO_CACHE)
def build_dashboard_task(study: str) -> str:
    return url(dashboard.build_dashboard(study))
