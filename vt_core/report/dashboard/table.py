"""The table of states: occupancy, seeds, first visit, stability, detour, and the mean of each
feature (original units in the header). The feature columns shown are the user's choice (the
first few by default), so that the table fits the page instead of scrolling sideways."""

from __future__ import annotations

import html

import numpy as np
from bokeh.models import (
    ColumnDataSource,
    CustomJS,
    DataTable,
    HTMLTemplateFormatter,
    MultiChoice,
    NumberFormatter,
    ScientificFormatter,
    TableColumn,
)

from vt_core.analysis.records import Analysis
from vt_core.report.labels import metric_label

SHOWN = 6  # feature columns shown at first


def state_table(a: Analysis, colors: list[str]):
    """(column chooser, table, source)."""
    states = a["states"]
    detours = set(a.get("detour_states") or [])
    feats = [f for f in a["features"] if all(f in s["means"] for s in states)]
    data = {"state": [s["state"] for s in states], "color": colors,
            "occupancy": [s["occupancy"] for s in states], "seeds": [len(s["seeds"]) for s in states],
            "first": [s["first_step_mean"] if s["first_step_mean"] is not None else np.nan for s in states],
            "stability": [s.get("stability") if s.get("stability") is not None else np.nan for s in states],
            "detour": ["yes" if s["state"] in detours else "no" for s in states]}
    for j, f in enumerate(feats):
        data[f"f{j}"] = [s["means"][f] for s in states]
    src = ColumnDataSource(data, name="state-table-source")
    swatch = HTMLTemplateFormatter(template='<span style="display:inline-block;width:12px;height:12px;'
                                            'background:<%= color %>;margin-right:6px"></span><%= value %>')
    base = [TableColumn(field="state", title="state", formatter=swatch, width=60),
            TableColumn(field="occupancy", title="occupancy", formatter=NumberFormatter(format="0.000"), width=80),
            TableColumn(field="seeds", title="seeds visiting", width=90),
            TableColumn(field="first", title="first visit (mean step)", formatter=NumberFormatter(format="0"),
                        width=140),
            TableColumn(field="stability", title="stability", formatter=NumberFormatter(format="0.00"), width=70),
            TableColumn(field="detour", title="detour", width=55)]
    fcols = []
    for j, f in enumerate(feats):
        units = metric_label(f).units
        title = html.escape(f) + (f" [{html.escape(units)}]" if units else "")
        fcols.append(TableColumn(field=f"f{j}", title=title, width=max(90, 7 * len(title)),
                                 formatter=ScientificFormatter(precision=3, power_limit_high=4, power_limit_low=-3)))
    table = DataTable(source=src, columns=base + fcols[:SHOWN], sizing_mode="stretch_width", min_width=480,
                      height=40 + 26 * len(states), index_position=None, name="state-table", selectable=True,
                      autosize_mode="force_fit")
    chooser = MultiChoice(title="Feature columns", value=[f"f{j}" for j in range(min(SHOWN, len(feats)))],
                          options=[(f"f{j}", f) for j, f in enumerate(feats)], name="table-columns",
                          sizing_mode="stretch_width")
    chooser.js_on_change("value", CustomJS(args={"table": table, "base": base, "fcols": fcols}, code="""
        table.columns = [...base, ...fcols.filter((c) => cb_obj.value.includes(c.field))];
    """))
    return chooser, table, src
