import base64
import io
import re

import numpy as np
from PIL import Image

from benchmarks.dashboard_scale import synthetic
from vt_core.report.dashboard import render, segments, thin
from vt_core.report.figures.graph import state_graph_png
from vt_core.report.markdown import summary_markdown
from vt_core.report.palette import state_palette


def test_dashboard_is_standalone_html(analysed_study):
    html = (analysed_study / "dashboard" / "index.html").read_text()
    assert not re.findall(r"<script[^>]+src=", html), "resources must be INLINE (works offline)"
    assert "Bokeh" in html and "State-transition graph" in html and "Model selection" in html
    assert "Decoded state per seed" in html
    for name in ("state-graph", "model-selection", "metric-curves", "metric-curves-log", "state-timeline",
                 "state-table", "metric-select", "seed-select", "x-scale"):
        assert f'"name":"{name}"' in html.replace(" ", ""), name


def test_palette_is_stable_and_distinct():
    assert state_palette(4) == state_palette(8)[:4]
    assert len(set(state_palette(10))) == 10


def test_segments_against_a_naive_run_length_encoding():
    rng = np.random.default_rng(1)
    steps = np.cumsum(rng.integers(1, 5, size=200)).astype(float)
    states = np.repeat(rng.integers(0, 4, size=20), 10)
    segs = segments(steps, states)
    # naive: every checkpoint paints [step_i, step_{i+1}) in its state; merging runs gives the segments
    painted = [(steps[i], steps[i + 1] if i + 1 < len(steps) else steps[-1] + steps[-1] - steps[-2], states[i])
               for i in range(len(steps))]
    merged = []
    for a, b, s in painted:
        if merged and merged[-1][2] == s and merged[-1][1] == a:
            merged[-1] = (merged[-1][0], b, s)
        else:
            merged.append((a, b, s))
    assert segs == [(float(a), float(b), int(s)) for a, b, s in merged]


def test_thinning_keeps_every_change_of_state_and_the_ends():
    states = np.repeat([0, 1, 0, 2, 3], [400, 3, 300, 250, 47])
    idx = thin(len(states), states, 300)
    assert idx[0] == 0 and idx[-1] == len(states) - 1 and len(idx) < 200
    changes = np.flatnonzero(np.diff(states)) + 1
    assert set(changes) <= set(idx)
    assert (thin(50, states[:50], 300) == np.arange(50)).all()


def test_config_strings_are_escaped():
    a, sel, paths, value = synthetic(3, 40)
    a["features"] = ["l2"] + a["features"][1:]
    html = render("<script>alert('study')</script>", "sub", a, sel, paths, value)
    assert "<script>alert('study')</script>" not in html
    assert "<title>vt: &lt;script&gt;alert(" in html
    # the header Div holds escaped text, which Bokeh's embedded JSON escapes once more
    assert "&amp;lt;script&amp;gt;alert(" in html


def test_large_study_is_thinned_to_a_bounded_page():
    a, sel, paths, value = synthetic(100, 1000)
    small, full = render("big", "", a, sel, paths, value), render("big", "", a, sel, paths, value, max_points=2000)
    assert len(small) < 6e6 < len(full)
    assert "Curves show at most 300 checkpoints per seed" in small


def test_state_graph_png_and_markdown_data_uri(analysed_study):
    import json

    a = json.loads((analysed_study / "analysis.json").read_text())
    img = Image.open(io.BytesIO(state_graph_png(a)))
    assert img.format == "PNG" and 400 < img.size[0] <= 520
    md = summary_markdown(analysed_study, [])
    uri = re.search(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert uri and Image.open(io.BytesIO(base64.b64decode(uri.group(1)))).size == img.size


def test_hover_text_has_words_for_missing_numbers():
    """Bokeh shows NaN for a missing number in a tooltip: the graph and the timeline hover text."""
    from bokeh.models import Range1d

    from vt_core.report.dashboard.graph import graph_figure
    from vt_core.report.dashboard.timeline import timelines

    a, _, paths, _ = synthetic(4, 40)
    conv = {"0": None, "1": 5077, "2": 10, "3": None}
    _, src, _ = timelines(paths, conv, state_palette(6), [Range1d(0, 400), Range1d(1, 401)])
    assert set(src.data["conv"]) == {"never", "at step 5,077", "at step 10"}
    a["graph"]["nodes"] = [{"id": 0, "stay": 0.98765}]  # the other states: no stay probability
    _, nodes, _ = graph_figure(a, state_palette(6), 4)
    assert nodes.data["stay"] == ["0.988", "–", "–", "–", "–", "–"]


def test_edge_and_node_tooltips_do_not_stack(analysed_study):
    """Issue 34, item 8: an edge's line starts under its node, so hovering a node showed the node's
    tooltip and its edges' stacked. Edges answer at their middle handle only."""
    from bokeh.models import HoverTool

    from vt_core.analysis.records import load_analysis
    from vt_core.report.dashboard.graph import graph_figure
    from vt_core.report.palette import state_palette

    a = load_analysis(analysed_study)
    p, _, _ = graph_figure(a, state_palette(a["chosen_k"]), 3)
    hovered = {r.name for h in p.select(type=HoverTool) for r in h.renderers}
    assert "graph-edge-handles" in hovered and "graph-node-circles" in hovered
    assert "graph-edge-lines" not in hovered
