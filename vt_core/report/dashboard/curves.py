"""Metric curves against step, linear and log x: one seed at a time (its decoded states as
background bands, the other seeds faint behind it) or every seed with the mean and the 10-90%
quantile band over seeds, coloured by the state most seeds are in. The convergence threshold is
drawn on held-out accuracy; axes say the metric's long name and units."""

from __future__ import annotations

import numpy as np
from bokeh.core.properties import value as fixed
from bokeh.models import (
    BooleanFilter,
    CDSView,
    ColumnDataSource,
    CustomJS,
    HoverTool,
    Label,
    Legend,
    LegendItem,
    RadioButtonGroup,
    Range1d,
    Select,
    Span,
)
from bokeh.plotting import figure

from vt_core.report.labels import THRESHOLD_METRIC, axis_label, metric_label
from vt_core.report.outputs import band, modal_state, segments, state_grid, thin
from vt_core.report.palette import NO_STATE

CURVE_HEIGHT = 400


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


def _band_source(value, paths: dict, colors: list[str], metrics: list[str], default: str, max_points: int):
    """Quads from one kept step to the next: the 10-90% band and the mean, coloured by the modal state."""
    steps = value["step"].values.astype(float)
    idx = thin(len(steps), None, max_points)
    modal = modal_state(state_grid(value, paths))[idx]
    left = steps[idx]
    right = np.append(left[1:], left[-1] + (left[-1] - left[-2] if len(left) > 1 else 1.0))
    data: dict = {"left": left, "right": right, "left1": left + 1, "right1": right + 1,
                  "color": [colors[s] if s >= 0 else NO_STATE for s in modal],
                  "state": modal, "alpha": np.ones(len(left), np.float32)}
    b = band(value, steps=idx)  # (step, metric) each
    for j, m in enumerate(metrics):
        mean = b["mean"][:, j]
        data[f"{m}|lo"], data[f"{m}|hi"], data[f"{m}|mean"] = b["lo"][:, j], b["hi"][:, j], mean
        data[f"{m}|next"] = np.append(mean[1:], mean[-1])
    for col in ("lo", "hi", "mean", "next"):
        data[col] = data[f"{default}|{col}"]
    return ColumnDataSource(data, name="curve-band")


def _figure(log: bool, hi: float, default: str):
    pad = 0.02 * hi
    return figure(title="Metric against step", height=CURVE_HEIGHT, sizing_mode="stretch_width", min_width=480,
                  x_axis_label="step + 1 (log scale)" if log else "step", y_axis_label=axis_label(default),
                  x_axis_type="log" if log else "linear", tools="pan,wheel_zoom,box_zoom,reset,save",
                  x_range=Range1d(1, hi + 1 + pad) if log else Range1d(-pad, hi + pad),
                  name="metric-curves-log" if log else "metric-curves", visible=not log)


def _draw(p, log: bool, src: dict, views: dict, colors: list[str], threshold: float | None, default: str):
    x, x0, x1 = ("step1", "x0p1", "x1p1") if log else ("step", "x0", "x1")
    suffix = "-log" if log else ""
    left, right, sx = ("left1", "right1", "x1") if log else ("left", "right", "x")
    p.vstrip(x0=x0, x1=x1, source=src["bands"], view=CDSView(filter=views["bf"]), color="color",
             fill_alpha="alpha", line_alpha=0)
    quads = p.quad(left=left, right=right, bottom="lo", top="hi", source=src["band"], color="color",
                   fill_alpha=0.28, line_alpha=0, visible=False, name=f"band-quads{suffix}")
    mean = p.segment(x0=left, x1=right, y0="mean", y1="next", source=src["band"], color="color", line_width=3,
                     visible=False, name=f"band-mean{suffix}")
    others = p.multi_line("xs1" if log else "xs", "ys", source=src["lines"], color="#8a8a8a",
                          line_alpha="alpha", line_width=1.1)
    chosen = p.line(sx, "y", source=src["sel"], color="#222222", line_width=1.8)
    r = p.scatter(x, "y", source=src["pts"], view=CDSView(filter=views["pf"]), color="color", alpha="alpha", size=5)
    p.add_tools(HoverTool(renderers=[r], tooltips=[("seed", "@seed"), ("step", "@step{0}"),
                                                   ("state", "@state_label"), ("value", "@y")]))
    p.add_tools(HoverTool(renderers=[quads], tooltips=[("step", "@left{0}"), ("modal state", "@state"),
                                                       ("mean", "@mean"), ("10–90%", "@lo – @hi")]))
    span = Span(location=threshold if threshold is not None else 0, dimension="width", line_dash="dashed",
                line_color="#b00020", line_width=1.5, visible=threshold is not None and default == THRESHOLD_METRIC)
    note = Label(x=4, x_units="screen", y=threshold if threshold is not None else 0, y_offset=3,
                 text=f"convergence threshold {threshold}", text_font_size="10px", text_color="#b00020",
                 visible=span.visible)
    p.add_layout(span)
    p.add_layout(note)
    items = [LegendItem(label=fixed("seed"), renderers=[chosen], name="seed-item"),
             LegendItem(label=fixed("other seeds"), renderers=[others]),
             LegendItem(label=fixed("mean, 10–90% of seeds"), renderers=[mean, quads])]
    items += [LegendItem(label=fixed(f"state {i}"), renderers=[p.scatter(x=[np.nan], y=[np.nan], color=c, size=9)])
              for i, c in enumerate(colors)]
    legend = Legend(items=items, label_text_font_size="10px", click_policy="hide", name=f"curve-legend{suffix}")
    p.add_layout(legend, "right")
    return {"quads": quads, "mean": mean, "span": span, "note": note, "item": items[0]}


def _sources(value, paths: dict, colors: list[str], max_points: int, default: str | None):
    metrics, data, offsets, seeds, thinned = _curve_data(value, paths, colors, max_points)
    default = default if default is not None and default in metrics else metrics[0]
    data["y"] = data[default]
    first = seeds[0] if seeds else None
    cut = [(a, b) for a, b in zip(offsets, offsets[1:])]
    lines = ColumnDataSource({"xs": [data["step"][a:b] for a, b in cut], "xs1": [data["step1"][a:b] for a, b in cut],
                              "ys": [data[default][a:b] for a, b in cut], "seed": seeds,
                              "alpha": [0.0 if s == first else 0.12 for s in seeds]}, name="curve-lines")
    a0, b0 = cut[0] if cut else (0, 0)
    sel = ColumnDataSource({"x": data["step"][a0:b0], "x1": data["step1"][a0:b0], "y": data[default][a0:b0]},
                           name="curve-seed")
    band_rows = [(x0, x1, s, int(seed)) for seed in seeds
                 for x0, x1, s in segments(np.asarray(paths.get(str(seed), {}).get("steps", []), float),
                                           np.asarray(paths.get(str(seed), {}).get("states", []), int))]
    bands = ColumnDataSource({
        "x0": [r[0] for r in band_rows], "x1": [r[1] for r in band_rows],
        "x0p1": [r[0] + 1 for r in band_rows], "x1p1": [r[1] + 1 for r in band_rows],
        "state": [r[2] for r in band_rows], "seed": [r[3] for r in band_rows],
        "color": [colors[r[2]] for r in band_rows], "alpha": [0.16] * len(band_rows)})
    src = {"pts": ColumnDataSource(data, name="curve-points"), "lines": lines, "sel": sel, "bands": bands,
           "band": _band_source(value, paths, colors, metrics, default, max_points)}
    views = {"pf": BooleanFilter(booleans=[bool(s == first) for s in data["seed"]]),
             "bf": BooleanFilter(booleans=[r[3] == first for r in band_rows])}
    hi = max([r[1] for r in band_rows] + [float(data["step"].max()) if len(data["step"]) else 1.0])
    return metrics, default, seeds, offsets, thinned, src, views, hi


def curves(value, paths: dict, features: list[str], colors: list[str], max_points: int, threshold: float | None):
    """(controls, [linear figure, log figure], point source, band source, thinned)."""
    default = next((f for f in features if f in [str(m) for m in value["metric"].values]), None)
    metrics, default, seeds, offsets, thinned, src, views, hi = _sources(value, paths, colors, max_points, default)
    figs, parts = [], []
    for log in (False, True):
        p = _figure(log, hi, default)
        parts.append(_draw(p, log, src, views, colors, threshold, default))
        figs.append(p)
    figs[1].y_range = figs[0].y_range
    parts[0]["item"].label = parts[1]["item"].label = fixed(f"seed {seeds[0]}" if seeds else "seed")
    controls = _controls(metrics, default, seeds, figs, parts,
                         {**src, **views, "offsets": offsets, "has_t": threshold is not None})
    return controls, figs, src["pts"], src["bands"], thinned


def _controls(metrics: list[str], default: str, seeds: list[int], figs: list, parts: list, sources: dict):
    """The metric and seed selectors and the linear/log switch, wired to the curves' sources."""
    metric = Select(title="Metric", value=default, name="metric-select", width=340,
                    options=[(m, f"{m}: {metric_label(m).long_name}") for m in metrics])
    seed = Select(title="Seed", value=str(seeds[0] if seeds else None), options=[str(s) for s in seeds] + ["all seeds"],
                  name="seed-select", width=140)
    args = {**sources, "seeds": seeds, "metric": metric, "seed": seed, "axes": [f.yaxis[0] for f in figs],
            "parts": parts, "labels": {m: axis_label(m) for m in metrics}, "tmetric": THRESHOLD_METRIC}
    update = CustomJS(args=args, code="""
        const m = metric.value, col = pts.data[m];
        pts.data['y'] = col;
        lines.data['ys'] = seeds.map((_, i) => col.slice(offsets[i], offsets[i + 1]));
        const all = seed.value === 'all seeds';
        const s = all ? null : Number(seed.value), i = seeds.indexOf(s);
        pf.booleans = Array.from(pts.data['seed'], (v) => all || v === s);
        bf.booleans = Array.from(bands.data['seed'], (v) => !all && v === s);
        lines.data['alpha'] = seeds.map((v) => (all ? 0.3 : (v === s ? 0.0 : 0.12)));
        const cut = (c) => (i < 0 ? [] : c.slice(offsets[i], offsets[i + 1]));
        sel.data = {x: cut(pts.data['step']), x1: cut(pts.data['step1']), y: cut(col)};
        for (const c of ['lo', 'hi', 'mean', 'next']) { band.data[c] = band.data[m + '|' + c]; }
        for (const p of parts) {
            p.quads.visible = all; p.mean.visible = all;
            p.span.visible = has_t && m === tmetric; p.note.visible = p.span.visible;
            p.item.label = {value: all ? 'seeds (pick one above)' : 'seed ' + s};
        }
        pts.change.emit(); lines.change.emit(); bands.change.emit(); band.change.emit();
        for (const ax of axes) { ax.axis_label = labels[m]; }
    """)
    metric.js_on_change("value", update)
    seed.js_on_change("value", update)
    scale = RadioButtonGroup(labels=["linear x", "log x"], active=0, name="x-scale")
    return metric, seed, scale
