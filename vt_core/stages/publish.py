"""Stage 5, publishing: the dashboard page, and what the Prefect UI shows of a study: the flow
run's name and tags, and the content of the flow's artifacts (a pointer to the dashboard, a
markdown summary, the model-selection table) under keys unique to the study's location. The
Prefect side (flows/run_names.py, tasks/publish.py) only hands these to Prefect."""

from __future__ import annotations

import hashlib
import re
import shlex
import socket
from typing import TypedDict

from vt_core.report import dashboard
from vt_core.report.markdown import summary_markdown
from vt_core.report.narrative import md
from vt_core.report.serving import served_url
from vt_core.stages.hmm import Selection
from vt_core.storage.handle import Study, StudyRef
from vt_core.storage.location import Location, is_remote, location, url
from vt_core.storage.seed_status import seed_status

#: the model-selection table's columns in the artifact
#: Prefect's artifact keys: lowercase letters, digits and dashes
_KEY_CHARS = re.compile(r"[^a-z0-9-]+")


class Artifacts(TypedDict):
    name: str
    #: the dashboard's http URL while ``vt dashboard --serve`` serves it (a link artifact) ...
    dashboard_url: str | None
    #: ... otherwise where the file is and how to open it (a markdown artifact)
    dashboard_markdown: str
    markdown: str
    table: list[dict]


def build_dashboard(study: str | Location) -> str:
    """Write ``STUDY/dashboard/index.html``; its location as a string."""
    return url(dashboard.build_dashboard(study))


def location_id(study: str | Location) -> str:
    """Eight hex digits naming where the study lives (its absolute path or URL): two studies of the
    same name in different directories differ in it."""
    return hashlib.sha256(url(location(study)).encode()).hexdigest()[:8]


def artifact_key(study: str | Location, name: str, kind: str) -> str:
    """``vt-NAME-LOCATION-KIND``: unique per study location (Prefect keeps the history of each key)."""
    slug = _KEY_CHARS.sub("-", name.lower()).strip("-")[:40].strip("-") or "study"
    return f"vt-{slug}-{location_id(study)}-{_KEY_CHARS.sub('-', kind.lower()).strip('-')}"


def location_tag(study: str | Location) -> str:
    """The tag of every flow run on the study at this location (and of no other study's)."""
    return f"location:{location_id(study)}"


def run_tags(study: str | Location, name: str, training_hash: str) -> list[str]:
    """The flow run's tags: what the Prefect UI's runs list can filter on."""
    return ["vt", f"study:{name}", f"training:{training_hash}", location_tag(study)]


def run_name(name: str, verb: str, number: int, seeds: list[int] | None = None) -> str:
    """``sparse_parity · run 3``; ``sparse_parity · rerun 4 (seeds 1, 2)``."""
    text = f"{name} · {verb} {number}"
    if seeds:
        text += f" (seed{'s' if len(seeds) > 1 else ''} {', '.join(str(s) for s in seeds)})"
    return text


def dashboard_markdown(study: str | Location, dashboard_path: str, name: str) -> str:
    """Where the standalone dashboard is and how to open it, for a UI that cannot open files."""
    page, where = location(dashboard_path), url(location(study))
    host = "" if is_remote(page) else f" on host `{md(socket.gethostname())}`"
    return "\n".join([
        f"## Dashboard of study `{md(name)}`", "",
        f"A standalone HTML file{host} (a browser opens it offline; the Prefect UI cannot open files):", "",
        "```", url(page), "```", "",
        "Open it in a browser on that machine:", "",
        "```", f"vt dashboard {shlex.quote(where)} --open", "```", "",
        "or serve it over HTTP (while it is served, later runs link to it from here):", "",
        "```", f"vt dashboard {shlex.quote(where)} --serve", "```"])


def artifacts(study: StudyRef, dashboard_path: str, selection: Selection) -> Artifacts:
    """What the flow publishes: a pointer to the dashboard, the summary, the selection table."""
    study = Study.open(study)
    name = study.config.name
    return {
        "name": name,
        "dashboard_url": served_url(study),
        "dashboard_markdown": dashboard_markdown(study, dashboard_path, name),
        "markdown": summary_markdown(study, seed_status(study)),
        "table": selection_rows(selection),
    }


def _number(value, digits: int = 1) -> str:
    """``-1,217.3`` for the UI's table (raw floats such as -1217.3184202012253 say nothing more)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def selection_rows(selection: Selection) -> list[dict]:
    """The model-selection table as the Prefect UI shows it: one row per k fitted, the chosen k
    marked, numbers rounded, short statuses first; every k not fitted (infeasible) in one row with
    its reason rather than a row of blanks each."""
    chosen = selection["chosen_k"]
    rows, skipped = [], []
    for row in selection["table"]:
        if row.get("status") == "infeasible":
            skipped.append(row)
            continue
        rows.append({"k": str(row["k"]) + ("  ← chosen" if row["k"] == chosen else ""),
                     "status": row.get("status", ""), "BIC": _number(row.get("bic")), "AIC": _number(row.get("aic")),
                     "held-out log L": _number(row.get("heldout_ll")),
                     "cv log L / obs": _number(row.get("cv_ll"), 3), "train log L": _number(row.get("train_ll")),
                     "fits ok": f"{row.get('n_ok', 0)} of {row.get('n_ok', 0) + row.get('n_failed', 0)}",
                     "parameters": _number(row.get("n_params"))})
    if skipped:
        ks = [r["k"] for r in skipped]
        span = f"{ks[0]}–{ks[-1]}" if len(ks) > 1 else str(ks[0])
        why = "; ".join(skipped[0].get("failures") or [])
        rows.append({"k": span, "status": "not fitted", "BIC": f"infeasible: {why}" if why else "infeasible"}
                    | {c: "" for c in ("AIC", "held-out log L", "cv log L / obs", "train log L", "fits ok", "parameters")})
    return rows
