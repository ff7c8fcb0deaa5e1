"""HMMs: prepare the input once, one task per (k, restart) fit, then select k.
Logic: :mod:`vt_core.stages.hmm`."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from vt_core.stages import hmm


@task(name="prepare-hmm", cache_policy=NO_CACHE)
def prepare_hmm_task(study: str) -> dict:
    return dict(hmm.prepare_hmm(study))


@task(name="fit-hmm", cache_policy=NO_CACHE, task_run_name="fit-hmm-k{k}-r{restart}")
def fit_hmm_task(study: str, k: int, restart: int) -> dict:
    return hmm.fit_hmm(study, k, restart)


@task(name="select-model", cache_policy=NO_CACHE)
def select_model_task(study: str, fits: list[dict]) -> dict:
    return dict(hmm.select_model(study, fits))
