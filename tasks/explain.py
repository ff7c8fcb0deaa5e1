"""Explanations: state graph, transitions, convergence -> analysis.json.
Logic: :mod:`vt_core.stages.explain`."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from vt_core.stages.explain import explain


@task(name="explain", cache_policy=NO_CACHE)
def explain_task(study: str) -> dict:
    return explain(study)
