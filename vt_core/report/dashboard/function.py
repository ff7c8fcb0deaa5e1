"""The function's trajectory (:mod:`vt_core.metrics.function`): each seed's path through the first two
principal components of its per-example losses, points coloured by the decoded state, hover with
step and accuracies, the explained-variance ratios on the axes; dimmed with the other views when
a state is selected."""

from __future__ import annotations

import numpy as np
from bokeh.models import ColumnDataSource, CustomJS, HoverTool
from bokeh.plotting import figure

NO_STATE = "#bbbbbb"

DIM = """
    const idx = cb_obj.indices;
    const s = idx.length ? (cb_obj === table.selected ? table.data['state'][idx[0]]
                                                      : Number(nodes.data['label'][idx[0]])) : null;
    src.data['alpha'] = Array.from(src.data['state'], (v) => (s === null || v === s) ? 0.9 : 0.08);
    src.change.emit();
"""


def _accuracy(value, metric: str, seed: int, steps: np.ndarray) -> np.ndarray:
    if value is None or metric not in [str(m) for m in value["metric"].values]:
        return np.full(len(steps), np.nan)
    v = value.sel(metric=metric, seed=seed)
    return v.reindex(step=steps).values.astype(float)


def function_source(f: dict, paths: dict, value, colors: list[str]) -> ColumnDataSource:
    """One row per checkpoint with per-example losses: its seed, step, PC1, PC2, state, accuracies."""
    seeds, steps, pcs = f["seed"], f["step"], f["pcs"]
    state = np.full(len(seeds), -1)
    for seed in np.unique(seeds):
        d = paths.get(str(int(seed)))
        rows = np.flatnonzero(seeds == seed)
        if d:
            at = dict(zip(d["steps"], d["states"]))
            state[rows] = [at.get(int(s), -1) for s in steps[rows]]
    train, test = np.empty(len(seeds)), np.empty(len(seeds))
    for seed in np.unique(seeds):
        rows = np.flatnonzero(seeds == seed)
        train[rows] = _accuracy(value, "train_accuracy", int(seed), steps[rows])
        test[rows] = _accuracy(value, "test_accuracy", int(seed), steps[rows])
    pc2 = pcs[:, 1] if pcs.shape[1] > 1 else np.zeros(len(seeds))
    return ColumnDataSource({
        "pc1": pcs[:, 0], "pc2": pc2, "seed": seeds.astype(int), "step": steps.astype(int), "state": state,
        "color": [colors[s] if s >= 0 else NO_STATE for s in state], "alpha": np.full(len(seeds), 0.9),
        "train_accuracy": train, "test_accuracy": test}, name="function-points")


def function_figure(f: dict, paths: dict, value, colors: list[str]):
    """(figure, point source): the paths of every seed through PC1-PC2, points by decoded state."""
    ratio = f["explained_variance_ratio"]
    src = function_source(f, paths, value, colors)
    p = figure(title="The function: per-example losses on their first two principal components, each seed's path "
                     "(colour: decoded state)", height=380, sizing_mode="stretch_width", min_width=360,
               x_axis_label=f"function PC1 ({100 * ratio[0]:.1f}% of the variance)",
               y_axis_label=(f"function PC2 ({100 * ratio[1]:.1f}% of the variance)" if len(ratio) > 1
                             else "function PC2 (none)"),
               tools="pan,wheel_zoom,box_zoom,reset,save", name="function-trajectory")
    seeds, pcs = f["seed"], f["pcs"]
    xs, ys = [], []
    for seed in np.unique(seeds):
        rows = np.flatnonzero(seeds == seed)
        rows = rows[np.argsort(f["step"][rows])]
        xs.append(pcs[rows, 0].tolist())
        ys.append((pcs[rows, 1] if pcs.shape[1] > 1 else np.zeros(len(rows))).tolist())
    p.multi_line(xs, ys, color="#999999", alpha=0.45, line_width=1)
    pts = p.scatter("pc1", "pc2", source=src, color="color", alpha="alpha", size=6, line_color=None)
    p.add_tools(HoverTool(renderers=[pts], tooltips=[
        ("seed", "@seed"), ("step", "@step"), ("state", "@state"), ("training accuracy", "@train_accuracy{0.000}"),
        ("held-out accuracy", "@test_accuracy{0.000}")]))
    return p, src


def link(src: ColumnDataSource, nodes: ColumnDataSource, table: ColumnDataSource) -> None:
    """Dim the points of other states when a state is selected in the graph or the table."""
    dim = CustomJS(args={"src": src, "nodes": nodes, "table": table}, code=DIM)
    nodes.selected.js_on_change("indices", dim)
    table.selected.js_on_change("indices", dim)
