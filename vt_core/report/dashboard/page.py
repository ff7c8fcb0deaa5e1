"""The page: every view laid out to stretch with the window, linked by one selected state."""

from __future__ import annotations

import html

from bokeh.embed import file_html
from bokeh.layouts import column, row
from bokeh.models import CustomJS, Div, Range1d
from bokeh.resources import INLINE

from vt_core.analysis.records import Analysis, Selection
from vt_core.report import narrative
from vt_core.report.dashboard.curves import curves
from vt_core.report.dashboard.graph import graph_figure
from vt_core.report.dashboard.panel import PROMPT, STYLE
from vt_core.report.dashboard.selection import bootstrap_figure, selection_figure
from vt_core.report.dashboard.table import state_table
from vt_core.report.dashboard.timeline import timelines
from vt_core.report.outputs import load_outputs
from vt_core.report.palette import state_palette
from vt_core.storage.layout import layout as study_layout
from vt_core.storage.location import Location, location, write_text_atomic

MAX_POINTS = 300
STRETCH = {"sizing_mode": "stretch_width"}

HIGHLIGHT = """
    const idx = cb_obj.indices;
    const s = idx.length ? (cb_obj === table.selected ? table.data['state'][idx[0]]
                                                      : Number(nodes.data['label'][idx[0]])) : null;
    const dim = (src, col, on, off) => {
        src.data[col] = Array.from(src.data['state'], (v) => (s === null || v === s) ? on : off);
        src.change.emit();
    };
    dim(pts, 'alpha', 1.0, 0.08); dim(bands, 'alpha', 0.16, 0.03); dim(tl, 'alpha', 1.0, 0.15);
    const want = s === null ? [] : [s];
    const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
    if (cb_obj !== table.selected && !same(table.selected.indices, want)) { table.selected.indices = want; }
    if (cb_obj !== nodes.selected && !same(nodes.selected.indices, want)) { nodes.selected.indices = want; }
"""

EXPLAIN = """
    const n = nodes.selected.indices, e = edges.selected.indices;
    // a tap on a state that an edge passes under selects both: the state wins
    if (n.length) { panel.text = style + nodes.data['explain'][n[0]]; }
    else if (e.length) { panel.text = style + edges.data['explain'][e[0]]; }
    else if (!n.length && !e.length) { panel.text = style + prompt; }
"""


def _k_range(sel: Selection) -> tuple[list[int], Range1d]:
    ks = sorted(int(t["k"]) for t in sel["table"]) or [1]
    return ks, Range1d(min(ks) - 0.6, max(ks) + 0.6)


def _wire(nodes, edges, panel, table_src, pts, bands, tsrc, curve_figs, timeline_figs, scale) -> None:
    """One selected state everywhere; the explanation of what was tapped; linear or log x for all."""
    highlight = CustomJS(args={"nodes": nodes, "table": table_src, "pts": pts, "bands": bands, "tl": tsrc},
                         code=HIGHLIGHT)
    nodes.selected.js_on_change("indices", highlight)
    table_src.selected.js_on_change("indices", highlight)
    explain = CustomJS(args={"nodes": nodes, "edges": edges, "panel": panel, "prompt": PROMPT, "style": ""},
                       code=EXPLAIN)
    nodes.selected.js_on_change("indices", explain)
    edges.selected.js_on_change("indices", explain)
    scale.js_on_change("active", CustomJS(args={"pairs": [curve_figs, timeline_figs]}, code="""
        for (const [lin, log] of pairs) { lin.visible = cb_obj.active === 0; log.visible = cb_obj.active === 1; }
    """))


def render(name: str, subtitle: str, a: Analysis, sel: Selection, paths: dict, value, max_points: int = MAX_POINTS,
           function: dict | None = None) -> str:
    """The dashboard's HTML from the analysis outputs (``value``: metrics DataArray (seed, step, metric);
    ``function``: the function's PCA, :func:`vt_core.metrics.function.load_function`, when recorded)."""
    colors = state_palette(a["chosen_k"])
    n_seeds = len(paths)
    graph, nodes, edges = graph_figure(a, colors, n_seeds)
    ks, k_range = _k_range(sel)
    selection = column(selection_figure(sel, ks, k_range), bootstrap_figure(sel, k_range), **STRETCH)
    panel = Div(text=STYLE + PROMPT, name="explain-panel", min_height=120, **STRETCH,
                styles={"border": "1px solid #ccc", "border-radius": "4px", "padding": "6px 10px",
                        "background": "#fafafa"})
    (metric, seed, scale), curve_figs, pts, bands, thinned = curves(
        value, paths, a["features"], colors, max_points, a.get("convergence_threshold"))
    timeline_figs, tsrc, order_controls = timelines(paths, a["convergence_step"], colors,
                                                    [f.x_range for f in curve_figs], a.get("accuracy_unrecorded"))
    chooser, table, table_src = state_table(a, colors)
    _wire(nodes, edges, panel, table_src, pts, bands, tsrc, curve_figs, timeline_figs, scale)
    extra = []
    if function is not None:
        from vt_core.report.dashboard.function import function_figure, link

        fig, fsrc = function_figure(function, paths, value, colors)
        link(fsrc, nodes, table_src)
        extra.append(fig)
    note = (f"Curves show at most {max_points} checkpoints per seed (evenly spaced, plus every change of "
            f"state); bands and the timeline use every checkpoint." if thinned else "Every checkpoint is shown.")
    header = Div(text=(f"<h2 style='margin:0'>vt study: {html.escape(name)}</h2><p>{subtitle}</p>"
                       f"<p style='color:#555;font-size:12px'>Tap a state or a transition in the graph (or a row "
                       f"of the table) for its explanation; the state is highlighted in every view; tap empty "
                       f"space to clear. {note}</p>"), name="header", **STRETCH)
    layout = column(header, row(graph, selection, **STRETCH), panel, row(metric, seed, scale), *curve_figs,
                    row(*order_controls), *timeline_figs, *extra, Div(text="<b>States</b>", **STRETCH), chooser,
                    table, **STRETCH)
    return file_html(layout, INLINE, title=f"vt: {name}")


def build_dashboard(study: str | Location, max_points: int = MAX_POINTS) -> Location:
    """Write ``STUDY/dashboard/index.html`` (atomically) from the study's analysis outputs."""
    study = location(study)
    out = load_outputs(study)
    subtitle = narrative.header_html(out.analysis, out.context)
    path = study_layout(study).dashboard
    path.parent.mkdir(exist_ok=True)
    function = None
    if study_layout(study).function.is_file():  # per-example losses recorded (hooks.per_example_loss)
        from vt_core.metrics.function import load_function

        function = load_function(study)
    write_text_atomic(path, render(out.name, subtitle, out.analysis, out.selection, out.paths, out.value, max_points,
                                   function))
    return path
