"""What `vt states` leaves beside a table's analysis, as a study gets it: the dashboard
(``OUT/dashboard/index.html``) and the report (``OUT/report.md``), from the files the analysis
wrote under ``OUT`` (``hmm/``, ``analysis.json``) and the table's own values (kept, raw, in
``hmm/input.npz``): no study, no metrics store."""

from __future__ import annotations

import numpy as np
import xarray as xr

from vt_core.analysis.records import load_analysis, load_selection
from vt_core.analysis.states import load_input
from vt_core.report import narrative
from vt_core.report.dashboard.page import render
from vt_core.report.markdown import analysis_markdown
from vt_core.storage.layout import layout
from vt_core.storage.location import Location, location, read_json, write_text_atomic


def table_values(root: str | Location) -> xr.DataArray:
    """The modelled features (seed, step, metric) in the table's units, NaN where a run has no row."""
    data = load_input(root)
    steps = np.unique(np.concatenate(data.steps))
    out = np.full((len(data.seeds), len(steps), len(data.raw_features)), np.nan)
    for i, (st, raw) in enumerate(zip(data.steps, data.raw)):
        out[i, np.searchsorted(steps, st)] = raw
    return xr.DataArray(out, dims=("seed", "step", "metric"),
                        coords={"seed": data.seeds, "step": steps, "metric": data.raw_features})


def write_trajectory_outputs(root: str | Location, name: str) -> dict[str, Location]:
    """Write the dashboard and the report of the analysis under ``root``; where they are."""
    root = location(root)
    files = layout(root)
    a = load_analysis(root)
    labels = a.get("seed_labels") or {}
    runs = f"{len(a['convergence_step'])} runs" + (" (named by label: seed_labels in analysis.json)" if labels else "")
    context = f"a table of trajectories · {runs} · {len(a['features'])} features"
    page = render(name, narrative.header_html(a, context), a, load_selection(root), read_json(files.paths),
                  table_values(root))
    files.dashboard.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(files.dashboard, page)
    text = analysis_markdown(a, f"# vt states: `{narrative.md(name)}`")
    if labels:
        text += ["", "## Runs", "", "| seed | run |", "|---|---|",
                 *[f"| {s} | {narrative.md(label)} |" for s, label in sorted(labels.items(), key=lambda kv: int(kv[0]))]]
    write_text_atomic(files.report, "\n".join(text) + "\n")
    return {"dashboard": files.dashboard, "report": files.report}
