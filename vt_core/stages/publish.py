"""Stage 5, publishing: the dashboard page, and the content of the flow's artifacts (a link to
the dashboard, a markdown summary, the model-selection table). The Prefect task only creates the
artifacts from what :func:`artifacts` returns."""

from __future__ import annotations

import re
from typing import TypedDict

from vt_core import dashboard
from vt_core.location import Location, is_remote, location, url
from vt_core.report import summary_markdown
from vt_core.stages.hmm import Selection
from vt_core.study import load_study, seed_status

#: the model-selection table's columns in the artifact
TABLE_COLUMNS = ("k", "status", "n_ok", "n_failed", "train_ll", "heldout_ll", "cv_ll", "cv_ll_sd", "aic", "bic",
                 "n_params")


class Artifacts(TypedDict):
    name: str
    link: str
    markdown: str
    table: list[dict]


def build_dashboard(study: str | Location) -> str:
    """Write ``STUDY/dashboard/index.html``; its location as a string."""
    return url(dashboard.build_dashboard(study))


def artifact_key(name: str, kind: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return f"vt-{re.sub(r'[^a-z0-9-]+', '-', name.lower()).strip('-')}-{kind}"


def artifacts(study: str | Location, dashboard_path: str, selection: Selection) -> Artifacts:
    """What the flow publishes: a link to the dashboard, the summary, the selection table."""
    page = location(dashboard_path)
    return {
        "name": load_study(study).name,
        "link": str(page) if is_remote(page) else page.as_uri(),
        "markdown": summary_markdown(study, seed_status(study)),
        "table": [{k: v for k, v in row.items() if k in TABLE_COLUMNS} for row in selection["table"]],
    }
