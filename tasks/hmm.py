"""HMMs: prepare the input once, one task per fit (main, cross-validation, bootstrap), select k,
finalize. Logic: :mod:`vt_core.stages.hmm`."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from vt_core.analysis.selection import job_name
from vt_core.progress import publish
from vt_core.stages import hmm


@task(name="prepare-hmm", cache_policy=NO_CACHE)
def prepare_hmm_task(study: str) -> dict:
    return dict(hmm.prepare_hmm(study))


def _fit_name() -> str:
    from prefect.runtime import task_run

    return f"fit-hmm-{job_name(task_run.parameters['job'])}"


@task(name="fit-hmm", cache_policy=NO_CACHE, task_run_name=_fit_name)
def fit_hmm_task(study: str, job: dict) -> dict:
    row = hmm.fit_hmm(study, job)
    publish({"kind": "advance", "stage": "bootstrap" if str(job.get("kind")) == "boot" else "hmm"})
    return row


@task(name="select-model", cache_policy=NO_CACHE)
def select_model_task(study: str, rows: list[dict]) -> dict:
    return dict(hmm.select_model(study, rows))


@task(name="finalize-model", cache_policy=NO_CACHE)
def finalize_model_task(study: str, rows: list[dict]) -> dict:
    return dict(hmm.finalize_model(study, rows))
