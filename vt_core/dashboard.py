"""The study dashboard: one standalone Bokeh HTML file with INLINE resources (opens offline).

Views, all in one categorical palette per state and linked:

- the state-transition graph, left to right by mean first-visit step, node size by occupancy, edge
  width by the number of seeds taking it; hover shows a transition's top features and mean changes;
  tapping a state (or its row in the table) highlights it in every view;
- metric curves against step per seed, with background bands coloured by the selected seed's
  decoded state; a metric selector, a seed selector, linear or log x (the log view plots step + 1);
- a seed x step state timeline with each seed's convergence step marked (x-range linked with the
  linear curves);
- model selection: BIC (with its spread over restarts), AIC and held-out log-likelihood against k,
  the chosen k marked;
- a table of states: occupancy, seeds visiting, first visit, detour flag, mean of each feature.

Large studies: the curves show at most ``max_points`` checkpoints per seed (every n-th one, plus
every checkpoint where the decoded state changes, plus the last); bands and the timeline are drawn
from every checkpoint as run-length segments. The page says when curves are thinned.
"""

from __future__ import annotations

import html

import numpy as np
from bokeh.embed import file_html
from bokeh.layouts import column, row
from bokeh.models import (
    BooleanFilter,
    CDSView,
    ColumnDataSource,
    CustomJS,
    DataTable,
    Div,
    HoverTool,
    HTMLTemplateFormatter,
    Label,
    LabelSet,
    LinearAxis,
    NumberFormatter,
    RadioButtonGroup,
    Range1d,
    ScientificFormatter,
    Select,
    Span,
    TableColumn,
    TapTool,
    Whisker,
)
from bokeh.plotting import figure
from bokeh.resources import INLINE

from vt_core import narrative
from vt_core.layout import layout as study_layout
from vt_core.location import Location, location, read_json, write_text_atomic
from vt_core.palette import NO_STATE, graph_layout, state_palette
from vt_core.study import load_study

MAX_POINTS = 300
WIDTH = 1180


def thin(n: int, states: np.ndarray | None, max_points: int) -> np.ndarray:
    """Indices kept of ``n`` checkpoints: every k-th, the last, and each change of state."""
    if n <= max_points:
        return np.arange(n)
    keep = set(np.linspace(0, n - 1, max_points // 2).round().astype(int).tolist())
    if states is not None and len(states) == n:
        keep.update((np.flatnonzero(np.diff(states) != 0) + 1).tolist())
    return np.array(sorted(keep))


def segments(steps: np.ndarray, states: np.ndarray) -> list[tuple[float, float, int]]:
    """Run-length segments ``(start, end, state)``; a segment ends where the next one starts (the
    last one a step gap after the last checkpoint)."""
    if len(steps) == 0:
        return []
    gap = steps[-1] - steps[-2] if len(steps) > 1 else 1.0
    edges = np.append(steps, steps[-1] + gap).astype(float)
    change = np.flatnonzero(np.diff(states) != 0) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(states)]])
    return [(edges[s], edges[e], int(states[s])) for s, e in zip(starts, ends)]


# ------------------------------------------------------------------------------------------------
# views


def _graph_figure(a: dict, colors: list[str]):
    states = a["states"]
    x, y = graph_layout(a)
    occ = np.array([s["occupancy"] for s in states])
    detours = set(a.get("detour_states") or [])
    nodes = ColumnDataSource({
        "x": x, "y": y, "size": 22 + 58 * np.sqrt(occ / max(occ.max(), 1e-9)), "color": colors,
        "label": [str(s["state"]) for s in states], "occupancy": occ,
        "first": [f"{s['first_step_mean']:.0f}" if s["first_step_mean"] is not None else "never" for s in states],
        "seeds": [len(s["seeds"]) for s in states],
        "detour": ["yes" if s["state"] in detours else "no" for s in states],
    }, name="graph-nodes")
    changes = {(t["from"], t["to"]): "; ".join(
        f"{html.escape(f['feature'])} {f['z_mean_change']:+.2f} sd ({f['raw_mean_change']:+.3g})"
        for f in t["top_features"][:3]) for t in a["transitions"]}
    edges = [e for e in a["graph"]["edges"] if e["source"] != e["target"]]
    n_seeds = max([len(s["seeds"]) for s in states] + [e["n_seeds"] for e in edges] + [1])
    # edges bow away from the straight line so that i -> j and j -> i do not overlap
    xs, ys = [], []
    for e in edges:
        x0, y0, x1, y1 = x[e["source"]], y[e["source"]], x[e["target"]], y[e["target"]]
        t = np.linspace(0, 1, 20)
        bow = 0.18 * (1 if x1 >= x0 else -1)
        xs.append((x0 + (x1 - x0) * t).tolist())
        ys.append((y0 + (y1 - y0) * t + bow * np.sin(np.pi * t)).tolist())
    esrc = ColumnDataSource({
        "xs": xs, "ys": ys, "w": [1.5 + 12 * e["n_seeds"] / n_seeds for e in edges],
        "n_seeds": [e["n_seeds"] for e in edges], "prob": [e["prob"] for e in edges],
        "edge": [f"{e['source']} → {e['target']}" for e in edges],
        "top": [changes.get((e["source"], e["target"]), "") for e in edges],
        "ax": [xx[-3] for xx in xs], "ay": [yy[-3] for yy in ys], "color": [colors[e["target"]] for e in edges],
    })
    p = figure(title="State-transition graph (left to right by mean first-visit step; tap a state)",
               height=340, width=WIDTH // 2, x_range=(-0.7, len(states) - 0.3), y_range=(-1, 1),
               tools="reset,save", toolbar_location="above", name="state-graph")
    p.axis.visible = False
    p.grid.visible = False
    lines = p.multi_line("xs", "ys", source=esrc, line_width="w", line_alpha=0.45, color="#555555")
    p.scatter("ax", "ay", source=esrc, marker="triangle", size=9, color="color", alpha=0.8)
    p.add_tools(HoverTool(renderers=[lines], tooltips=[
        ("transition", "@edge"), ("probability", "@prob{0.000}"), ("seeds taking it", "@n_seeds"),
        ("top features (mean change: z, raw)", "@top")]))
    circ = p.scatter("x", "y", size="size", color="color", source=nodes, line_color="black", alpha=0.95,
                     nonselection_alpha=0.35, selection_line_width=4, selection_line_color="black")
    p.add_tools(HoverTool(renderers=[circ], tooltips=[
        ("state", "@label"), ("occupancy", "@occupancy{0.000}"), ("first visit (mean step)", "@first"),
        ("seeds visiting", "@seeds"), ("detour", "@detour")]))
    p.add_tools(TapTool(renderers=[circ]))
    p.add_layout(LabelSet(x="x", y="y", text="label", source=nodes, text_align="center",
                          text_baseline="middle", text_color="white", text_font_style="bold"))
    return p, nodes


def _selection_figure(sel: dict):
    rows = [t for t in sel["table"] if t["n_ok"]]
    k = np.array([t["k"] for t in rows], float)
    src = ColumnDataSource({
        "k": k, "bic": [t["bic"] for t in rows], "aic": [t["aic"] for t in rows],
        "bic_min": [t.get("bic_min", t["bic"]) for t in rows], "bic_max": [t.get("bic_max", t["bic"]) for t in rows],
        "heldout": [t["heldout_ll"] if t.get("heldout_ll") is not None else np.nan for t in rows],
        "n_ok": [t["n_ok"] for t in rows],
    })
    p = figure(title="Model selection: BIC (bar: spread over restarts), AIC; held-out log L (right)",
               height=340, width=WIDTH // 2, x_axis_label="k (states)", y_axis_label="BIC / AIC (lower is better)",
               tools="save,reset", name="model-selection")
    p.line("k", "bic", source=src, legend_label="BIC", color="#1f77b4", line_width=2)
    p.scatter("k", "bic", source=src, color="#1f77b4", size=7)
    p.add_layout(Whisker(source=src, base="k", lower="bic_min", upper="bic_max", line_color="#1f77b4"))
    p.line("k", "aic", source=src, legend_label="AIC", color="#ff7f0e", line_width=2, line_dash="dashed")
    held = np.array(src.data["heldout"], float)
    if np.isfinite(held).any():
        lo, hi = np.nanmin(held), np.nanmax(held)
        pad = 0.05 * (hi - lo) if hi > lo else 1.0
        p.extra_y_ranges = {"heldout": Range1d(lo - pad, hi + pad)}
        p.add_layout(LinearAxis(y_range_name="heldout", axis_label="held-out log L (higher is better)"), "right")
        p.line("k", "heldout", source=src, y_range_name="heldout", color="#2ca02c", line_width=2,
               legend_label="held-out log L")
        p.scatter("k", "heldout", source=src, y_range_name="heldout", color="#2ca02c", size=6, marker="square")
    p.add_layout(Span(location=sel["chosen_k"], dimension="height", line_color="black", line_dash="dotted",
                      line_width=2))
    p.add_layout(Label(x=sel["chosen_k"], y=10, y_units="screen", x_offset=-4, text=f"chosen k = {sel['chosen_k']}",
                       text_font_size="11px", text_align="right"))
    p.legend.orientation = "horizontal"
    p.legend.label_text_font_size = "10px"
    p.add_layout(p.legend[0], "below")
    p.add_tools(HoverTool(tooltips=[("k", "@k"), ("BIC", "@bic{0.0}"),
                                    ("BIC over restarts", "@bic_min{0.0} – @bic_max{0.0}"),
                                    ("AIC", "@aic{0.0}"), ("held-out log L", "@heldout{0.0}"),
                                    ("restarts converged", "@n_ok")]))
    return p


def _curve_data(value, paths: dict, colors: list[str], max_points: int):
    """One flat source of points (all seeds, thinned) and the per-seed offsets into it."""
    metrics = [str(m) for m in value["metric"].values]
    cols: dict[str, list] = {k: [] for k in ("step", "seed", "state", "color")}
    per_metric: dict[str, list] = {m: [] for m in metrics}
    offsets, seeds, thinned = [0], [], False
    arr = value.values  # (seed, step, metric)
    all_steps = value["step"].values
    for i, seed in enumerate(value["seed"].values):
        ok = np.isfinite(arr[i]).any(axis=1)
        steps = all_steps[ok]
        stored = paths.get(str(int(seed)), {"steps": [], "states": []})
        state_at = dict(zip(stored["steps"], stored["states"]))
        states = np.array([state_at.get(int(s), -1) for s in steps])
        idx = thin(len(steps), states, max_points)
        thinned |= len(idx) < len(steps)
        cols["step"].append(steps[idx].astype(np.float64))
        cols["seed"].append(np.full(len(idx), int(seed)))
        cols["state"].append(states[idx])
        cols["color"] += [colors[s] if s >= 0 else NO_STATE for s in states[idx]]
        vals = arr[i][ok][idx]
        for j, m in enumerate(metrics):
            per_metric[m].append(vals[:, j].astype(np.float32))
        offsets.append(offsets[-1] + len(idx))
        seeds.append(int(seed))
    data: dict = {k: np.concatenate(v) if k != "color" else v for k, v in cols.items()}
    data["step1"] = data["step"] + 1
    data["alpha"] = np.ones(len(data["step"]), np.float32)
    data["state_label"] = [str(s) if s >= 0 else "none" for s in data["state"]]
    for m in metrics:
        data[m] = np.concatenate(per_metric[m])
    return metrics, data, offsets, seeds, thinned


def _curves(value, paths: dict, features: list[str], colors: list[str], max_points: int):
    metrics, data, offsets, seeds, thinned = _curve_data(value, paths, colors, max_points)
    default = next((f for f in features if f in metrics), metrics[0])
    data["y"] = data[default]
    pts = ColumnDataSource(data, name="curve-points")
    lines = ColumnDataSource({
        "xs": [data["step"][a:b] for a, b in zip(offsets, offsets[1:])],
        "xs1": [data["step1"][a:b] for a, b in zip(offsets, offsets[1:])],
        "ys": [data[default][a:b] for a, b in zip(offsets, offsets[1:])],
        "seed": seeds, "alpha": [0.6] * len(seeds)})
    band_rows = [(a, b, s, int(seed)) for seed in seeds
                 for a, b, s in segments(np.asarray(paths.get(str(seed), {}).get("steps", []), float),
                                         np.asarray(paths.get(str(seed), {}).get("states", []), int))]
    bands = ColumnDataSource({
        "x0": [r[0] for r in band_rows], "x1": [r[1] for r in band_rows],
        "x0p1": [r[0] + 1 for r in band_rows], "x1p1": [r[1] + 1 for r in band_rows],
        "state": [r[2] for r in band_rows], "seed": [r[3] for r in band_rows],
        "color": [colors[r[2]] for r in band_rows], "alpha": [0.18] * len(band_rows)})
    first = seeds[0] if seeds else None
    pts_filter = BooleanFilter(booleans=[bool(s == first) for s in data["seed"]])
    band_filter = BooleanFilter(booleans=[r[3] == first for r in band_rows])
    lines.data["alpha"] = [0.8 if s == first else 0.0 for s in seeds]
    figs = []
    hi = max([r[1] for r in band_rows] + [float(data["step"].max()) if len(data["step"]) else 1.0])
    pad = 0.02 * hi
    for log in (False, True):
        x, x0, x1 = ("step1", "x0p1", "x1p1") if log else ("step", "x0", "x1")
        p = figure(title="Metric against step (bands: the selected seed's decoded state)", height=380, width=WIDTH,
                   x_axis_label="step + 1 (log scale)" if log else "step", y_axis_label=default,
                   x_axis_type="log" if log else "linear", tools="pan,wheel_zoom,box_zoom,reset,save",
                   x_range=Range1d(1, hi + 1 + pad) if log else Range1d(-pad, hi + pad),
                   name="metric-curves-log" if log else "metric-curves", visible=not log)
        p.vstrip(x0=x0, x1=x1, source=bands, view=CDSView(filter=band_filter), color="color",
                 fill_alpha="alpha", line_alpha=0)
        p.multi_line("xs1" if log else "xs", "ys", source=lines, color="#888888", line_alpha="alpha", line_width=1.2)
        r = p.scatter(x, "y", source=pts, view=CDSView(filter=pts_filter), color="color", alpha="alpha", size=5)
        p.add_tools(HoverTool(renderers=[r], tooltips=[("seed", "@seed"), ("step", "@step{0}"),
                                                       ("state", "@state_label"), ("value", "@y")]))
        figs.append(p)
    figs[1].y_range = figs[0].y_range
    metric, seed, scale = _curve_controls(metrics, default, seeds, figs, {
        "pts": pts, "lines": lines, "bands": bands, "pf": pts_filter, "bf": band_filter, "offsets": offsets})
    return metric, seed, scale, figs, pts, bands, thinned


def _curve_controls(metrics: list[str], default: str, seeds: list[int], figs: list, sources: dict):
    """The metric and seed selectors and the linear/log switch, wired to the curves' sources."""
    metric = Select(title="Metric", value=default, options=metrics, name="metric-select", width=260)
    seed = Select(title="Seed", value=str(seeds[0] if seeds else None), options=[str(s) for s in seeds] + ["all seeds"],
                  name="seed-select", width=160)
    scale = RadioButtonGroup(labels=["linear x", "log x"], active=0, name="x-scale")
    args = {**sources, "seeds": seeds, "metric": metric, "seed": seed, "axes": [f.yaxis[0] for f in figs]}
    update = CustomJS(args=args, code="""
        const m = metric.value;
        const col = pts.data[m];
        pts.data['y'] = col;
        lines.data['ys'] = seeds.map((_, i) => col.slice(offsets[i], offsets[i + 1]));
        const all = seed.value === 'all seeds';
        const s = all ? null : Number(seed.value);
        pf.booleans = Array.from(pts.data['seed'], (v) => all || v === s);
        bf.booleans = Array.from(bands.data['seed'], (v) => !all && v === s);
        lines.data['alpha'] = seeds.map((v) => (all ? 0.35 : (v === s ? 0.8 : 0.0)));
        pts.change.emit(); lines.change.emit(); bands.change.emit();
        for (const ax of axes) { ax.axis_label = m; }
    """)
    metric.js_on_change("value", update)
    seed.js_on_change("value", update)
    scale.js_on_change("active", CustomJS(args={"figs": figs}, code="""
        figs[0].visible = cb_obj.active === 0; figs[1].visible = cb_obj.active === 1;
    """))
    return metric, seed, scale


def _timeline(paths: dict, conv: dict, colors: list[str], x_range):
    rows = [(a, b, s, seed) for seed, d in paths.items()
            for a, b, s in segments(np.asarray(d["steps"], float), np.asarray(d["states"], int))]
    seeds = list(paths)
    src = ColumnDataSource({
        "x": [(r[0] + r[1]) / 2 for r in rows], "w": [r[1] - r[0] for r in rows], "seed": [r[3] for r in rows],
        "start": [r[0] for r in rows], "end": [r[1] for r in rows], "state": [r[2] for r in rows],
        "color": [colors[r[2]] for r in rows], "alpha": [1.0] * len(rows)}, name="timeline-segments")
    per_seed = int(np.clip(640 / max(len(seeds), 1), 6, 28))
    p = figure(title="Decoded state per seed (black tick: held-out accuracy passes the threshold)",
               height=70 + per_seed * len(seeds), width=WIDTH, y_range=seeds, x_range=x_range, x_axis_label="step",
               y_axis_label="seed", tools="xpan,xwheel_zoom,reset,save", name="state-timeline")
    p.rect(x="x", y="seed", width="w", height=0.9, color="color", alpha="alpha", source=src, line_color=None)
    p.add_tools(HoverTool(tooltips=[("seed", "@seed"), ("state", "@state"), ("steps", "@start{0} – @end{0}")]))
    cx = [conv[s] for s in seeds if conv.get(s) is not None]
    cy = [s for s in seeds if conv.get(s) is not None]
    p.scatter(cx, cy, marker="dash", size=min(24, per_seed), color="black", line_width=3, angle=np.pi / 2)
    if len(seeds) > 40:
        p.yaxis.major_label_text_font_size = "0px"
    return p, src


def _state_table(a: dict, colors: list[str]):
    states = a["states"]
    detours = set(a.get("detour_states") or [])
    feats = [f for f in a["features"] if all(f in s["means"] for s in states)]
    data = {"state": [s["state"] for s in states], "color": colors,
            "occupancy": [s["occupancy"] for s in states], "seeds": [len(s["seeds"]) for s in states],
            "first": [s["first_step_mean"] if s["first_step_mean"] is not None else np.nan for s in states],
            "detour": ["yes" if s["state"] in detours else "no" for s in states]}
    for j, f in enumerate(feats):
        data[f"f{j}"] = [s["means"][f] for s in states]
    src = ColumnDataSource(data, name="state-table-source")
    swatch = HTMLTemplateFormatter(template='<span style="display:inline-block;width:12px;height:12px;'
                                            'background:<%= color %>;margin-right:6px"></span><%= value %>')
    cols = [TableColumn(field="state", title="state", formatter=swatch, width=60),
            TableColumn(field="occupancy", title="occupancy", formatter=NumberFormatter(format="0.000"), width=75),
            TableColumn(field="seeds", title="seeds visiting", width=90),
            TableColumn(field="first", title="first visit (mean step)", formatter=NumberFormatter(format="0"),
                        width=140),
            TableColumn(field="detour", title="detour", width=55)]
    cols += [TableColumn(field=f"f{j}", title=html.escape(f), width=max(80, 8 * len(f)),
                         formatter=ScientificFormatter(precision=3, power_limit_high=4, power_limit_low=-3))
             for j, f in enumerate(feats)]
    table = DataTable(source=src, columns=cols, width=WIDTH, height=38 + 26 * len(states), index_position=None,
                      name="state-table", selectable=True, autosize_mode="none")
    return table, src


# ------------------------------------------------------------------------------------------------


def render(name: str, subtitle: str, a: dict, sel: dict, paths: dict, value, max_points: int = MAX_POINTS) -> str:
    """The dashboard's HTML from the analysis outputs (``value``: metrics DataArray (seed, step, metric))."""
    colors = state_palette(a["chosen_k"])
    graph, nodes = _graph_figure(a, colors)
    metric, seed, scale, curves, pts, bands, thinned = _curves(value, paths, a["features"], colors, max_points)
    timeline, tsrc = _timeline(paths, {str(k): v for k, v in a["convergence_step"].items()}, colors, curves[0].x_range)
    table, table_src = _state_table(a, colors)
    # one selected state, highlighted everywhere; tapping a node or a table row selects it
    highlight = CustomJS(args={"nodes": nodes, "table": table_src, "pts": pts, "bands": bands, "tl": tsrc}, code="""
        const idx = cb_obj.indices;
        const s = idx.length ? (cb_obj === table.selected ? table.data['state'][idx[0]]
                                                          : Number(nodes.data['label'][idx[0]])) : null;
        const dim = (src, col, on, off) => {
            src.data[col] = Array.from(src.data['state'], (v) => (s === null || v === s) ? on : off);
            src.change.emit();
        };
        dim(pts, 'alpha', 1.0, 0.08); dim(bands, 'alpha', 0.18, 0.03); dim(tl, 'alpha', 1.0, 0.15);
        const want = s === null ? [] : [s];
        const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
        if (cb_obj !== table.selected && !same(table.selected.indices, want)) { table.selected.indices = want; }
        if (cb_obj !== nodes.selected && !same(nodes.selected.indices, want)) { nodes.selected.indices = want; }
    """)
    nodes.selected.js_on_change("indices", highlight)
    table_src.selected.js_on_change("indices", highlight)
    note = (f"Curves show at most {max_points} checkpoints per seed (evenly spaced, plus every change of "
            f"state); bands and the timeline use every checkpoint." if thinned else
            "Every checkpoint is shown.")
    header = Div(text=(f"<h2 style='margin:0'>vt study: {html.escape(name)}</h2><p>{subtitle}</p>"
                       f"<p style='color:#555;font-size:12px'>Tap a state in the graph or the table to "
                       f"highlight it in every view; tap empty space to clear. {note}</p>"),
                 width=WIDTH, name="header")
    layout = column(header, row(graph, _selection_figure(sel)), row(metric, seed, scale), *curves, timeline,
                    Div(text="<b>States</b>", width=WIDTH), table)
    return file_html(layout, INLINE, title=f"vt: {name}")


def build_dashboard(study: str | Location, max_points: int = MAX_POINTS) -> Location:
    """Write ``STUDY/dashboard/index.html`` (atomically) from the study's analysis outputs."""
    from vt_core.metrics.incremental import open_metrics
    from vt_core.stages.explain import load_analysis

    study = location(study)
    files = study_layout(study)
    config = load_study(study)
    a = load_analysis(study)
    sel = read_json(files.selection, "`vt analyze STUDY` recomputes it")
    paths = read_json(files.paths, "`vt analyze STUDY` recomputes it")
    value = open_metrics(study)["value"].load()
    subtitle = narrative.header_html(a, f"{len(config.seeds)} seeds · {config.model.name} on {config.data.name} · "
                              f"{len(a['features'])} features")
    out = files.dashboard
    out.parent.mkdir(exist_ok=True)
    write_text_atomic(out, render(config.name, subtitle, a, sel, paths, value, max_points))
    return out
