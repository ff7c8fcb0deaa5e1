"""The state-transition graph: laid out from the graph itself (:func:`vt_core.report.palette.graph_layout`),
node size by occupancy, edge width by the number of seeds taking it, an arrow at each edge's middle.
States and edges are tappable; the explanation panel shows what was tapped."""

from __future__ import annotations

import numpy as np
from bokeh.models import Arrow, ColumnDataSource, HoverTool, LabelSet, Range1d, TapTool, VeeHead
from bokeh.plotting import figure

from vt_core.analysis.records import Analysis
from vt_core.report.dashboard.panel import state_html, transition_html
from vt_core.report.narrative import num
from vt_core.report.palette import graph_layout, text_color

GRAPH_HEIGHT = 380


def _edge_curves(edges: list[dict], x: np.ndarray, y: np.ndarray) -> tuple[list, list]:
    """Each edge as a bowed curve, so that i -> j and j -> i stay apart (bow to the right of travel)."""
    t = np.linspace(0, 1, 21)
    xs, ys = [], []
    for e in edges:
        x0, y0, x1, y1 = x[e["source"]], y[e["source"]], x[e["target"]], y[e["target"]]
        dx, dy = x1 - x0, y1 - y0
        length = max(np.hypot(dx, dy), 1e-9)
        bow = 0.12 + 0.06 * min(length, 3)
        nx_, ny_ = dy / length, -dx / length  # right of the direction of travel
        arc = bow * np.sin(np.pi * t)
        xs.append((x0 + dx * t + nx_ * arc).tolist())
        ys.append((y0 + dy * t + ny_ * arc).tolist())
    return xs, ys


def _sources(a: Analysis, colors: list[str], n_seeds: int):
    states = a["states"]
    x, y = graph_layout(a)
    occ = np.array([s["occupancy"] for s in states])
    detours = set(a.get("detour_states") or [])
    stay = {n["id"]: n.get("stay") for n in a["graph"].get("nodes", [])}
    nodes = ColumnDataSource({
        "x": x, "y": y, "size": 26 + 40 * np.sqrt(occ / max(occ.max(), 1e-9)), "color": colors,
        "text_color": [text_color(c) for c in colors], "label": [str(s["state"]) for s in states],
        "occupancy": occ, "seeds": [len(s["seeds"]) for s in states],
        "first": [num(round(s["first_step_mean"])) if s["first_step_mean"] is not None else "never" for s in states],
        "stay": [num(stay.get(s["state"])) for s in states],  # text: a tooltip shows NaN for a missing number
        "detour": ["yes" if s["state"] in detours else "no" for s in states],
        "explain": [state_html(s, a, colors, n_seeds) for s in states],
    }, name="graph-nodes")
    edges = [e for e in a["graph"]["edges"] if e["source"] != e["target"]]
    by_edge = {(t["from"], t["to"]): t for t in a["transitions"]}
    most = max([e["n_seeds"] for e in edges] + [1])
    xs, ys = _edge_curves(edges, x, y)
    explain = [transition_html(by_edge[(e["source"], e["target"])], colors, n_seeds)
               if (e["source"], e["target"]) in by_edge else "" for e in edges]
    esrc = ColumnDataSource({
        "xs": xs, "ys": ys, "w": [1.5 + 10 * e["n_seeds"] / most for e in edges],
        "n_seeds": [e["n_seeds"] for e in edges], "prob": [e["prob"] for e in edges],
        "edge": [f"{e['source']} → {e['target']}" for e in edges], "explain": explain,
        "mx": [xx[10] for xx in xs], "my": [yy[10] for yy in ys],
        "ax0": [xx[9] for xx in xs], "ay0": [yy[9] for yy in ys], "ax1": [xx[12] for xx in xs],
        "ay1": [yy[12] for yy in ys], "color": [colors[e["target"]] for e in edges],
    }, name="graph-edges")
    return nodes, esrc, x, y


def graph_figure(a: Analysis, colors: list[str], n_seeds: int):
    """(figure, node source, edge source)."""
    nodes, esrc, x, y = _sources(a, colors, n_seeds)
    pad_x, pad_y = 0.55, 0.45
    p = figure(title="State-transition graph (layered by first entry; tap a state or a transition)",
               height=GRAPH_HEIGHT, sizing_mode="stretch_width", min_width=360,
               x_range=Range1d(float(x.min()) - pad_x, float(x.max()) + pad_x),
               y_range=Range1d(min(float(y.min()), -0.6) - pad_y, max(float(y.max()), 0.6) + pad_y),
               tools="reset,save", toolbar_location="above", name="state-graph")
    p.axis.visible = False
    p.grid.visible = False
    p.outline_line_color = None
    lines = p.multi_line("xs", "ys", source=esrc, line_width="w", line_alpha=0.5, color="#666666",
                         hover_line_alpha=0.9, selection_line_color="black", selection_line_alpha=0.9,
                         nonselection_line_alpha=0.25, name="graph-edge-lines")
    p.add_layout(Arrow(end=VeeHead(size=12, line_color="#333333", line_width=2, fill_color="#333333"), source=esrc,
                       x_start="ax0", y_start="ay0", x_end="ax1", y_end="ay1", line_alpha=0))
    handles = p.scatter("mx", "my", source=esrc, size=16, marker="circle", fill_alpha=0, line_alpha=0,
                        selection_fill_alpha=0, nonselection_fill_alpha=0, name="graph-edge-handles")
    edge_tips = [("transition", "@edge"), ("probability", "@prob{0.000}"), ("seeds taking it", "@n_seeds"),
                 ("", "tap for its explanation")]
    # an edge answers the hover at its middle (the handle, where its arrow is), not along its line:
    # lines start under the nodes, and a node's tooltip and its edges' stacked there (issue 34)
    p.add_tools(HoverTool(renderers=[handles], tooltips=edge_tips))
    circ = p.scatter("x", "y", size="size", color="color", source=nodes, line_color="black", alpha=0.95,
                     nonselection_alpha=0.35, selection_line_width=4, selection_line_color="black",
                     name="graph-node-circles")
    p.add_tools(HoverTool(renderers=[circ], tooltips=[
        ("state", "@label"), ("occupancy", "@occupancy{0.000}"), ("first visit (mean step)", "@first"),
        ("stays (p per checkpoint)", "@stay"), ("seeds visiting", "@seeds"), ("detour", "@detour")]))
    p.add_tools(TapTool(renderers=[circ, lines, handles]))
    p.add_layout(LabelSet(x="x", y="y", text="label", source=nodes, text_align="center", text_baseline="middle",
                          text_color="text_color", text_font_style="bold"))
    return p, nodes, esrc
