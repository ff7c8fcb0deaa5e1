"""Artifacts: a link to the dashboard, a markdown summary and the model-selection table."""

from __future__ import annotations

import re

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from vt_core import stages
from vt_core.location import is_remote, location
from vt_core.study import load_study, seed_status


def artifact_key(name: str, kind: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return f"vt-{re.sub(r'[^a-z0-9-]+', '-', name.lower()).strip('-')}-{kind}"


@task(name="publish-artifacts", cache_policy=NO_CACHE)
def publish_artifacts_task(study: str, dashboard_path: str, selection: dict) -> dict:
    name = load_study(study).name
    page = location(dashboard_path)
    link = str(page) if is_remote(page) else page.as_uri()
    ids = {
        "link": create_link_artifact(link=link, link_text=f"vt dashboard: {name}", key=artifact_key(name, "dashboard"),
                                     description=f"Standalone dashboard of study {name} (open in a browser)"),
        "markdown": create_markdown_artifact(markdown=stages.summary_markdown(study, seed_status(study)),
                                             key=artifact_key(name, "summary"), description=f"Study {name}"),
        "table": create_table_artifact(
            table=[{k: v for k, v in row.items() if k in ("k", "n_ok", "n_failed", "train_ll", "heldout_ll",
                                                           "aic", "bic", "n_params")} for row in selection["table"]],
            key=artifact_key(name, "model-selection"), description="HMM model selection per k (best restart)"),
    }
    return {k: str(v) for k, v in ids.items()}
