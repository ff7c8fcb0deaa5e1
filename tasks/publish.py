"""Publishing: the dashboard page, then the flow's artifacts (a link to the dashboard, a markdown
summary and the model-selection table). Logic: :mod:`vt_core.stages.publish`."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from vt_core.stages import publish
from vt_core.stages.publish import artifact_key


@task(name="build-dashboard", cache_policy=NO_CACHE)
def build_dashboard_task(study: str) -> str:
    return publish.build_dashboard(study)


@task(name="publish-artifacts", cache_policy=NO_CACHE)
def publish_artifacts_task(study: str, dashboard_path: str, selection: dict) -> dict:
    a = publish.artifacts(study, dashboard_path, selection)  # type: ignore[arg-type]
    name = a["name"]
    ids = {
        "link": create_link_artifact(link=a["link"], link_text=f"vt dashboard: {name}",
                                     key=artifact_key(name, "dashboard"),
                                     description=f"Standalone dashboard of study {name} (open in a browser)"),
        "markdown": create_markdown_artifact(markdown=a["markdown"], key=artifact_key(name, "summary"),
                                             description=f"Study {name}"),
        "table": create_table_artifact(table=a["table"], key=artifact_key(name, "model-selection"),
                                       description="HMM model selection per k (best restart)"),
    }
    return {k: str(v) for k, v in ids.items()}
