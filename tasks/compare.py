"""`vt compare`: the joint HMM over several studies' seeds, one task per fit, then the comparison
and its dashboard, report and artifacts. Logic: :mod:`vt_core.stages.compare`."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from vt_core.stages import compare
from vt_core.stages.publish import artifact_key


@task(name="prepare-comparison", cache_policy=NO_CACHE)
def prepare_comparison_task(studies: list[str], out: str | None) -> dict:
    return dict(compare.prepare_comparison(studies, out))


@task(name="fit-comparison-hmm", cache_policy=NO_CACHE)
def fit_comparison_task(root: str, job: dict) -> dict:
    return compare.fit_comparison(root, job)


@task(name="select-comparison-model", cache_policy=NO_CACHE)
def select_comparison_task(root: str, rows: list[dict]) -> dict:
    return compare.select_comparison(root, rows)


@task(name="finalize-comparison", cache_policy=NO_CACHE)
def finalize_comparison_task(root: str, rows: list[dict]) -> dict:
    return compare.finalize_comparison(root, rows)


def publish_comparison(root: str) -> dict:
    """Not a task: called in the flow itself, so that the UI lists the artifacts under its run."""
    a = compare.publish_comparison(root)
    name = a["name"]
    create_link_artifact(link=a["link"], link_text=f"vt comparison: {name}", key=artifact_key(root, name, "comparison"),
                         description=f"Standalone comparison dashboard {name} (open in a browser)")
    create_markdown_artifact(markdown=a["markdown"], key=artifact_key(root, name, "comparison-report"),
                             description=f"Comparison {name}")
    create_table_artifact(table=a["table"], key=artifact_key(root, name, "comparison-table"),
                          description="Per study: seeds, convergence, specific states, detours")
    return {"dashboard": a["dashboard"], "report": a["report"]}
