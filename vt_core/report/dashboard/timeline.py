"""The decoded state of every seed over training, one row per seed, readable at 100+ seeds:
rows ordered by seed, by convergence step (the default) or grouped by the path of states taken
(each group labelled); seed labels shown up to 40 seeds and on demand above; linear and log x,
sharing the curves' x ranges."""

from __future__ import annotations

import numpy as np
from bokeh.models import ColumnDataSource, CustomJS, FactorRange, HoverTool, LabelSet, RadioButtonGroup, Toggle
from bokeh.plotting import figure

from vt_core.report.narrative import num
from vt_core.report.outputs import path_groups, path_text, seed_orders, segments

ORDERS = ("seed", "convergence", "path")
LABELLED_UP_TO = 40


def _rows(paths: dict, conv: dict, colors: list[str], unmeasured: frozenset = frozenset()):
    rows = [(a, b, s, seed) for seed, d in paths.items()
            for a, b, s in segments(np.asarray(d["steps"], float), np.asarray(d["states"], int))]
    return ColumnDataSource({
        "x": [(r[0] + r[1]) / 2 for r in rows], "w": [r[1] - r[0] for r in rows], "seed": [r[3] for r in rows],
        "start": [r[0] for r in rows], "end": [r[1] for r in rows], "start1": [r[0] + 1 for r in rows],
        "end1": [r[1] + 1 for r in rows], "state": [r[2] for r in rows], "color": [colors[r[2]] for r in rows],
        "alpha": [1.0] * len(rows), "conv": [_converged(conv, r[3], unmeasured) for r in rows]},
        name="timeline-segments")


def _converged(conv: dict, seed: str, unmeasured: frozenset = frozenset()) -> str:
    """The hover's words for a seed's convergence (a tooltip shows NaN for a missing number)."""
    if seed in unmeasured:
        return "no held-out accuracy recorded"
    return "never" if conv.get(seed) is None else f"at step {num(conv[seed])}"


def _figure(log: bool, src, conv: dict, order: list[str], groups, x_range, per_seed: int):
    n = len(order)
    p = figure(title="Decoded state per seed (black tick: held-out accuracy passes the threshold)",
               height=80 + per_seed * n, sizing_mode="stretch_width", min_width=480, y_range=FactorRange(*order),
               x_range=x_range, x_axis_type="log" if log else "linear", x_axis_label="step + 1 (log scale)"
               if log else "step", y_axis_label="seed", tools="xpan,xwheel_zoom,reset,save",
               name="state-timeline-log" if log else "state-timeline", visible=not log)
    x0, x1 = ("start1", "end1") if log else ("start", "end")
    p.hbar(y="seed", left=x0, right=x1, height=0.9, color="color", alpha="alpha", source=src, line_color=None)
    p.add_tools(HoverTool(tooltips=[("seed", "@seed"), ("state", "@state"), ("steps", "@start{0} – @end{0}"),
                                    ("converged", "@conv")]))
    cy = [s for s in order if conv.get(s) is not None]
    cx = [conv[s] + (1 if log else 0) for s in cy]
    p.scatter(cx, cy, marker="dash", size=min(24, per_seed + 4), color="black", line_width=3, angle=np.pi / 2)
    p.yaxis.major_label_text_font_size = "0px" if n > LABELLED_UP_TO else f"{min(11, per_seed)}px"
    p.ygrid.visible = False
    glabels = LabelSet(x=6, x_units="screen", y="seed", text="text", source=groups, text_font_size="10px",
                       text_font_style="bold", background_fill_color="white", background_fill_alpha=0.8,
                       y_offset=-2, visible=False, name="timeline-groups-log" if log else "timeline-groups")
    p.add_layout(glabels)
    return p, glabels


def timelines(paths: dict, conv: dict, colors: list[str], x_ranges: list, unmeasured: list | None = None):
    """([linear figure, log figure], segment source, [order buttons, labels toggle])."""
    conv = {str(k): v for k, v in conv.items()}
    # a categorical axis runs bottom to top: reversed, so that the first seed of an order is on top
    orders = {name: order[::-1] for name, order in seed_orders(paths, conv).items()}
    groups = path_groups(paths, conv)
    gsrc = ColumnDataSource({"seed": [m[0] for _, m in groups],  # a group's label on its top row
                             "text": [f"{path_text(p)} ({len(m)} seeds)" for p, m in groups]})
    src = _rows(paths, conv, colors, frozenset(str(s) for s in unmeasured or []))
    n = len(orders["seed"])
    per_seed = int(np.clip(640 / max(n, 1), 8, 28))
    figs, labels = zip(*(_figure(log, src, conv, orders["convergence"], gsrc, xr, per_seed)
                         for log, xr in zip((False, True), x_ranges)))
    order = RadioButtonGroup(labels=["by seed", "by convergence step", "grouped by path"], active=1,
                             name="timeline-order")
    order.js_on_change("active", CustomJS(args={"figs": list(figs), "orders": [orders[o] for o in ORDERS],
                                                "labels": list(labels)}, code="""
        for (const f of figs) { f.y_range.factors = orders[cb_obj.active]; }
        for (const l of labels) { l.visible = cb_obj.active === 2; }
    """))
    toggle = Toggle(label="seed labels", active=n <= LABELLED_UP_TO, name="timeline-labels", width=110)
    toggle.js_on_change("active", CustomJS(args={"axes": [f.yaxis[0] for f in figs], "size": f"{min(11, per_seed)}px"},
                                           code="for (const ax of axes) { ax.major_label_text_font_size = "
                                                "cb_obj.active ? size : '0px'; }"))
    return list(figs), src, [order, toggle]
