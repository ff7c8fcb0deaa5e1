"""Publishing: the dashboard page, then the flow's artifacts (a pointer to the dashboard, a markdown
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


def publish_artifacts(study: str, dashboard_path: str, selection: dict) -> dict:
    """Not a task: called in the flow itself, so that the Prefect UI lists the artifacts under the
    flow run (created in a task, they showed under "Task runs" with "Flow run: None")."""
    a = publish.artifacts(study, dashboard_path, selection)  # type: ignore[arg-type]
    name = a["name"]
    key = artifact_key(study, name, "dashboard")
    if a["dashboard_url"]:  # served over HTTP: a link the UI opens
        pointer = create_link_artifact(link=a["dashboard_url"], link_text=f"vt dashboard: {name}", key=key,
                                       description=f"Dashboard of study {name}, served by `vt dashboard --serve`")
    else:  # a file the UI cannot open: its path and the command that opens it
        pointer = create_markdown_artifact(markdown=a["dashboard_markdown"], key=key,
                                           description=f"Where the dashboard of study {name} is, and how to open it")
    ids = {
        "dashboard": pointer,
        "markdown": create_markdown_artifact(markdown=a["markdown"], key=artifact_key(study, name, "summary"),
                                             description=f"Study {name}"),
        "table": create_table_artifact(table=a["table"], key=artifact_key(study, name, "model-selection"),
                                       description="HMM model selection per k (best restart)"),
    }
    return {k: str(v) for k, v in ids.items()}
