"""The study dashboard: one standalone Bokeh HTML file with INLINE resources (opens offline).

Views: the state-transition graph (left to right by mean first-visit step, node size by occupancy,
edge width by the number of seeds taking it), metric curves per seed coloured by decoded state
(with a metric selector), a seed x step state timeline, and the model-selection curve.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import xarray as xr
from bokeh.embed import file_html
from bokeh.layouts import column, row
from bokeh.models import (ColumnDataSource, CustomJS, Div, HoverTool, LabelSet, Select, Span)
from bokeh.palettes import Category10, Category20
from bokeh.plotting import figure
from bokeh.resources import INLINE

from vt_core.metrics.incremental import METRICS_ZARR
from vt_core.stages import ANALYSIS_JSON, HMM_DIR
from vt_core.study import load_study

DASHBOARD = Path("dashboard") / "index.html"


def state_palette(k: int) -> list[str]:
    """One categorical palette for states, the same in every view."""
    if k <= 10:
        return list(Category10[10][:k])
    return list(Category20[20][: min(k, 20)]) + ["#999999"] * max(0, k - 20)


def _graph_figure(a: dict, colors: list[str]):
    states = a["states"]
    firsts = [s["first_step_mean"] if s["first_step_mean"] is not None else np.nan for s in states]
    order = np.argsort(np.nan_to_num(firsts, nan=np.inf))
    x = np.empty(len(states))
    x[order] = np.arange(len(states))
    y = np.array([(i % 2) * 0.6 - 0.3 for i in range(len(states))])[np.argsort(order)]
    occ = np.array([s["occupancy"] for s in states])
    nodes = ColumnDataSource({
        "x": x, "y": y, "size": 20 + 60 * np.sqrt(occ / max(occ.max(), 1e-9)), "color": colors,
        "label": [str(s["state"]) for s in states], "occupancy": occ,
        "first": [f"{f:.0f}" if np.isfinite(f) else "never" for f in np.asarray(firsts, float)],
        "seeds": [len(s["seeds"]) for s in states],
    })
    top = {(t["from"], t["to"]): ", ".join(
        f"{f['feature']} {f['z_mean_change']:+.2f}sd" for f in t["top_features"][:3]) for t in a["transitions"]}
    edges = a["graph"]["edges"]
    esrc = ColumnDataSource({
        "x0": [x[e["source"]] for e in edges], "y0": [y[e["source"]] for e in edges],
        "x1": [x[e["target"]] for e in edges], "y1": [y[e["target"]] for e in edges],
        "w": [1 + 2 * e["n_seeds"] for e in edges], "n_seeds": [e["n_seeds"] for e in edges],
        "prob": [e["prob"] for e in edges], "edge": [f"{e['source']} → {e['target']}" for e in edges],
        "top": [top.get((e["source"], e["target"]), "") for e in edges],
    })
    p = figure(title="State-transition graph (left to right by mean first-visit step)", height=320,
               width=560, x_range=(-0.7, len(states) - 0.3), y_range=(-1, 1), tools="tap,reset,save",
               toolbar_location="above")
    p.axis.visible = False
    p.grid.visible = False
    seg = p.segment("x0", "y0", "x1", "y1", source=esrc, line_width="w", line_alpha=0.5, color="#555555")
    p.add_tools(HoverTool(renderers=[seg], tooltips=[("transition", "@edge"), ("p", "@prob{0.000}"),
                                                     ("seeds", "@n_seeds"), ("top features", "@top")]))
    circ = p.scatter("x", "y", size="size", color="color", source=nodes, line_color="black", alpha=0.9)
    p.add_tools(HoverTool(renderers=[circ], tooltips=[("state", "@label"), ("occupancy", "@occupancy{0.00}"),
                                                      ("first visit (mean step)", "@first"),
                                                      ("seeds visiting", "@seeds")]))
    p.add_layout(LabelSet(x="x", y="y", text="label", source=nodes, text_align="center",
                          text_baseline="middle", text_color="white", text_font_style="bold"))
    return p


def _curves_figure(value: xr.DataArray, paths: dict, features: list[str], colors: list[str]):
    metrics = [str(m) for m in value["metric"].values]
    default = features[0] if features else metrics[0]
    p = figure(title="Metric per seed, points coloured by decoded state", height=360, width=1120,
               x_axis_label="step", y_axis_label=default, tools="pan,wheel_zoom,box_zoom,reset,save")
    sources = []
    for seed in value["seed"].values:
        v = value.sel(seed=seed)
        ok = np.isfinite(v.sel(metric=metrics[0]).values)
        steps = v["step"].values[ok]
        stored = paths.get(str(int(seed)), {"steps": [], "states": []})
        state_at = dict(zip(stored["steps"], stored["states"]))
        states = [state_at.get(int(s), -1) for s in steps]
        data = {"step": steps, "state": [str(s) if s >= 0 else "none" for s in states],
                "color": [colors[s] if s >= 0 else "#cccccc" for s in states], "seed": [int(seed)] * len(steps)}
        for m in metrics:
            data[m] = v.sel(metric=m).values[ok]
        data["y"] = data[default]
        src = ColumnDataSource(data)
        sources.append(src)
        p.line("step", "y", source=src, color="#bbbbbb", line_width=1)
        p.scatter("step", "y", source=src, color="color", size=5)
    p.add_tools(HoverTool(tooltips=[("seed", "@seed"), ("step", "@step"), ("state", "@state"), ("value", "@y")]))
    select = Select(title="Metric", value=default, options=metrics)
    select.js_on_change("value", CustomJS(args={"sources": sources, "axis": p.yaxis[0]}, code="""
        for (const s of sources) { s.data['y'] = s.data[cb_obj.value]; s.change.emit(); }
        axis.axis_label = cb_obj.value;
    """))
    return select, p


def _timeline_figure(paths: dict, conv: dict, colors: list[str], x_range):
    xs, ys, ws, cs, st = [], [], [], [], []
    for seed, d in paths.items():
        steps = np.asarray(d["steps"], float)
        if len(steps) < 2:
            continue
        width = np.diff(steps, append=steps[-1] + (steps[-1] - steps[-2]))
        xs += list(steps + width / 2)
        ws += list(width)
        ys += [seed] * len(steps)
        cs += [colors[s] for s in d["states"]]
        st += [str(s) for s in d["states"]]
    seeds = list(paths)
    p = figure(title="Decoded state per seed (black tick: held-out accuracy passes the threshold)",
               height=60 + 28 * len(seeds), width=1120, y_range=seeds, x_range=x_range, x_axis_label="step",
               tools="reset,save")
    p.rect(x="x", y="seed", width="w", height=0.9, color="color", source=ColumnDataSource(
        {"x": xs, "seed": ys, "w": ws, "color": cs, "state": st}), line_color=None)
    p.add_tools(HoverTool(tooltips=[("seed", "@seed"), ("state", "@state"), ("step", "@x{0}")]))
    cx = [conv[s] for s in seeds if conv.get(s) is not None]
    cy = [s for s in seeds if conv.get(s) is not None]
    p.scatter(cx, cy, marker="dash", size=24, color="black", line_width=3, angle=np.pi / 2)
    return p


def _selection_figure(sel: dict):
    rows = [t for t in sel["table"] if t["n_ok"]]
    p = figure(title="Model selection (lower is better)", height=320, width=560, x_axis_label="k (states)",
               tools="save,reset")
    src = ColumnDataSource({"k": [t["k"] for t in rows], "bic": [t["bic"] for t in rows],
                            "aic": [t["aic"] for t in rows]})
    p.line("k", "bic", source=src, legend_label="BIC", color="#1f77b4", line_width=2)
    p.scatter("k", "bic", source=src, color="#1f77b4", size=7)
    p.line("k", "aic", source=src, legend_label="AIC", color="#ff7f0e", line_width=2, line_dash="dashed")
    p.add_layout(Span(location=sel["chosen_k"], dimension="height", line_color="black", line_dash="dotted"))
    p.add_tools(HoverTool(tooltips=[("k", "@k"), ("BIC", "@bic{0.0}"), ("AIC", "@aic{0.0}")]))
    return p


def build_dashboard(study: str | Path) -> Path:
    study = Path(study)
    config = load_study(study)
    a = json.loads((study / ANALYSIS_JSON).read_text())
    sel = json.loads((study / HMM_DIR / "selection.json").read_text())
    paths = json.loads((study / HMM_DIR / "paths.json").read_text())
    value = xr.open_zarr(str(study / METRICS_ZARR), consolidated=False)["value"].load()
    colors = state_palette(a["chosen_k"])
    select, curves = _curves_figure(value, paths, a["features"], colors)
    header = Div(text=(f"<h2>vt study: {html.escape(config.name)}</h2><p>{len(config.seeds)} seeds · "
                       f"{html.escape(config.model.name)} on {html.escape(config.data.name)} · chosen k = "
                       f"<b>{a['chosen_k']}</b> (lowest BIC over k = 1..{config.hmm.max_states})</p>"),
                 width=1120)
    layout = column(header, row(_graph_figure(a, colors), _selection_figure(sel)), select, curves,
                    _timeline_figure(paths, a["convergence_step"], colors, curves.x_range))
    out = study / DASHBOARD
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_name(".index.html.tmp")
    tmp.write_text(file_html(layout, INLINE, title=f"vt: {config.name}"), encoding="utf-8")
    tmp.replace(out)
    return out
