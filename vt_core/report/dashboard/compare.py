"""The comparison dashboard (``OUT/dashboard/index.html`` of `vt compare`): one standalone page, one
state palette for all studies (the joint HMM's states).

- the joint state graph once per study, at the same positions, node size by that study's
  occupancy and edge width by the number of its seeds taking the transition (tap for the joint
  explanation, as in a study's dashboard);
- occupancy of each state by study, and the share of each study's seeds visiting it;
- the convergence steps of each study's seeds, their means, and the difference with its interval;
- each study's timeline (decoded state per seed), linear or log x, one x range for all.
"""

from __future__ import annotations

import copy
import html

import numpy as np
from bokeh.embed import file_html
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, CustomJS, DataRange1d, Div, FactorRange, HoverTool, RadioButtonGroup
from bokeh.plotting import figure
from bokeh.resources import INLINE

from vt_core.analysis.records import Analysis
from vt_core.report import narrative
from vt_core.report.compare_markdown import detour_lines, difference_sentence
from vt_core.report.dashboard.graph import graph_figure
from vt_core.report.dashboard.panel import PROMPT, STYLE
from vt_core.report.dashboard.timeline import timelines
from vt_core.report.palette import state_palette
from vt_core.storage.layout import layout
from vt_core.storage.location import Location, location, read_json, write_text_atomic

STRETCH = {"sizing_mode": "stretch_width"}
EXPLAIN = """
    const n = nodes.selected.indices, e = edges.selected.indices;
    if (cb_obj === nodes.selected && n.length) { panel.text = nodes.data['explain'][n[0]]; }
    else if (cb_obj === edges.selected && e.length) { panel.text = edges.data['explain'][e[0]]; }
"""


def _members(c: dict, study: str) -> dict[int, int]:
    """joint id -> the study's own seed number, for one study."""
    return {m["id"]: m["seed"] for m in c["members"] if m["study"] == study}


def study_view(a: Analysis, study: str) -> Analysis:
    """The joint analysis seen from one study: its occupancy as node sizes, its seeds on the edges
    (positions stay the joint graph's, which the layout takes from the joint first visits)."""
    c = a["comparison"]
    ids = _members(c, study)
    view = copy.deepcopy(a)
    for s in view["states"]:
        s["occupancy"] = c["per_study"][study]["occupancy"][s["state"]]
        s["seeds"] = [ids[i] for i in s["seeds"] if i in ids]
    for e in view["graph"]["edges"]:
        e["seeds"] = [ids[i] for i in e.get("seeds", []) if i in ids]
        e["n_seeds"] = len(e["seeds"])
    view["graph"]["edges"] = [e for e in view["graph"]["edges"] if e["n_seeds"] > 0]  # this study's moves only
    for t in view["transitions"]:
        t["seeds"] = [ids[i] for i in t.get("seeds", []) if i in ids]
        t["n_seeds"] = len(t["seeds"])
        t["first_step"] = {str(ids[int(i)]): v for i, v in t.get("first_step", {}).items() if int(i) in ids}
    view["detour_states"] = c["per_study"][study]["detours"]
    return view


def _graphs(a: Analysis, colors: list[str], panel: Div) -> list:
    out = []
    for study in a["comparison"]["studies"]:
        n = a["comparison"]["per_study"][study]["n_seeds"]
        p, nodes, edges = graph_figure(study_view(a, study), colors, n)
        seen = [o > 0 for o in nodes.data["occupancy"]]  # a state this study never visits is not drawn in its panel
        nodes.data = dict(nodes.data, size=[s if v else 0 for s, v in zip(nodes.data["size"], seen)],
                          label=[lab if v else "" for lab, v in zip(nodes.data["label"], seen)])
        p.title.text = f"{study}: states (size: its occupancy), transitions (width: its seeds taking them)"
        p.name = "compare-graph"
        explain = CustomJS(args={"nodes": nodes, "edges": edges, "panel": panel}, code=EXPLAIN)
        nodes.selected.js_on_change("indices", explain)
        edges.selected.js_on_change("indices", explain)
        out.append(p)
    return out


def occupancy_figure(c: dict, colors: list[str]):
    studies, k = c["studies"], c["k"]
    x = [(str(s), n) for s in range(k) for n in studies]
    src = ColumnDataSource({
        "x": x, "occ": [c["per_study"][n]["occupancy"][s] for s in range(k) for n in studies],
        "visit": [c["per_study"][n]["seeds_visiting"][s] for s in range(k) for n in studies],
        "color": [colors[s] for s in range(k) for _ in studies], "study": [n for _ in range(k) for n in studies],
        "state": [s for s in range(k) for _ in studies]}, name="compare-occupancy")
    p = figure(title="Occupancy of each state by study (share of its checkpoints)", x_range=FactorRange(*x),
               height=300, tools="save", name="compare-occupancy", **STRETCH, min_width=360)
    p.vbar(x="x", top="occ", width=0.85, color="color", source=src, line_color="black")
    p.add_tools(HoverTool(tooltips=[("state", "@state"), ("study", "@study"), ("occupancy", "@occ{0.000}"),
                                    ("seeds visiting", "@visit{0%}")]))
    p.xaxis.major_label_orientation = 0.8
    p.y_range.start = 0
    p.yaxis.axis_label = "share of checkpoints"
    return p


def convergence_figure(c: dict):
    studies = c["studies"]
    xs, ys, seeds = [], [], []
    rng = np.random.default_rng(0)
    for n in studies:
        for seed, step in c["per_study"][n]["convergence"]["steps"].items():
            if step is not None:
                xs.append(step)
                ys.append((n, float(rng.uniform(-0.25, 0.25))))
                seeds.append(seed)
    p = figure(title="Convergence step of each seed (bar: the study's mean)", y_range=FactorRange(*studies),
               height=90 + 50 * len(studies), tools="xpan,xwheel_zoom,reset,save", name="compare-convergence",
               **STRETCH, min_width=360, x_axis_label="step")
    src = ColumnDataSource({"x": xs, "y": ys, "seed": seeds}, name="compare-convergence-points")
    p.scatter("x", "y", source=src, size=7, alpha=0.7, color="#333333")
    means = [(n, c["per_study"][n]["convergence"].get("mean")) for n in studies]
    p.scatter([m for _, m in means if m is not None], [n for n, m in means if m is not None], marker="dash",
              size=40, line_width=4, color="#b00020", angle=np.pi / 2)
    p.add_tools(HoverTool(renderers=p.renderers[:1], tooltips=[("seed", "@seed"), ("converged at step", "@x{0}")]))
    return p


#: one colour per compared study in the survival figure (colour-blind safe, none a state's)
STUDY_COLORS = ("#333333", "#b00020", "#1b5e20", "#4a148c", "#e65100", "#01579b")


def survival_figure(c: dict):
    """The share of each study's seeds not yet converged against step (Kaplan-Meier; a seed that
    never converged is censored at its last checkpoint, marked +): the comparison that holds even
    when a study's seeds never converge."""
    p = figure(title="Seeds not yet converged (Kaplan-Meier; +: never converged, censored at its last step)",
               height=240, tools="xpan,xwheel_zoom,reset,save", name="compare-survival", **STRETCH, min_width=360,
               x_axis_label="step", y_axis_label="share not converged", y_range=(-0.02, 1.05))
    for n, color in zip(c["studies"], STUDY_COLORS * 8):
        km = c["per_study"][n]["convergence"].get("survival")
        if not km:
            continue
        end = max([*km["step"], *km["censored_at"]])
        xs, ys = [*km["step"], end], [*km["not_converged"], km["not_converged"][-1]]
        p.step(xs, ys, mode="after", line_width=2, color=color, legend_label=n)
        if km["censored_at"]:
            left = [km["not_converged"][int(np.searchsorted(km["step"], t, side="right")) - 1] for t in km["censored_at"]]
            p.scatter(km["censored_at"], left, marker="cross", size=10, color=color)
    if p.legend:
        p.legend.location = "top_right"
    return p


def _timelines(a: Analysis, colors: list[str], root: Location) -> tuple[list, RadioButtonGroup]:
    c = a["comparison"]
    paths = read_json(layout(root).paths)
    lin, log = DataRange1d(), DataRange1d()
    figs: list = []
    for study in c["studies"]:
        ids = _members(c, study)
        own = {str(seed): paths[str(i)] for i, seed in ids.items()}
        conv = c["per_study"][study]["convergence"]["steps"]
        (f_lin, f_log), _, _ = timelines(own, conv, colors, [lin, log])
        for f in (f_lin, f_log):
            f.title.text = f"{study}: decoded state per seed (black tick: converged)"
        figs.append((f_lin, f_log))
    scale = RadioButtonGroup(labels=["linear x", "log x"], active=0, name="compare-scale")
    scale.js_on_change("active", CustomJS(args={"pairs": figs}, code="""
        for (const [lin, log] of pairs) { lin.visible = cb_obj.active === 0; log.visible = cb_obj.active === 1; }
    """))
    return [f for pair in figs for f in pair], scale


def render_comparison(a: Analysis, root: Location) -> str:
    """The comparison page's HTML from its analysis (``root``: the comparison directory)."""
    c = a["comparison"]
    colors = state_palette(a["chosen_k"])
    title = " vs ".join(c["studies"])
    lines = [difference_sentence(n, d) for n, d in c["convergence_difference"].items()] + detour_lines(c)
    specific = [f"{n}: states only it visits: {c['per_study'][n]['specific_states'] or 'none'}" for n in c["studies"]]
    context = f"{len(c['members'])} seeds, one joint HMM"
    header = Div(text=(f"<h2 style='margin:0'>vt comparison: {html.escape(title)}</h2>"
                       f"<p>{narrative.header_html(a, context)}</p><ul>"
                       + "".join(f"<li>{html.escape(t)}</li>" for t in lines + specific) + "</ul>"),
                 name="header", **STRETCH)
    panel = Div(text=STYLE + PROMPT, name="explain-panel", min_height=100, **STRETCH,
                styles={"border": "1px solid #ccc", "border-radius": "4px", "padding": "6px 10px",
                        "background": "#fafafa"})
    graphs = _graphs(a, colors, panel)
    timeline_figs, scale = _timelines(a, colors, root)
    page = column(header, row(*graphs, **STRETCH), panel,
                  row(occupancy_figure(c, colors), convergence_figure(c), **STRETCH), survival_figure(c), scale,
                  *timeline_figs,
                  **STRETCH)
    return file_html(page, INLINE, title=f"vt: {title}")


def build_comparison_dashboard(root: str | Location) -> Location:
    """Write ``OUT/dashboard/index.html`` of a comparison (atomically)."""
    root = location(root)
    a: Analysis = read_json(layout(root).analysis, "`vt compare` with the same studies writes it again")  # type: ignore[assignment]
    path = layout(root).dashboard
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, render_comparison(a, root))
    return path
