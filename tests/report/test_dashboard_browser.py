"""The dashboard in a real browser: headless Chromium over the DevTools protocol.

Skipped only where no chromium exists; CI installs Debian's chromium and sets
VT_REQUIRE_BROWSER=1, so there a missing browser fails instead. Screenshots go to tmp_path, or to
$VT_SCREENSHOTS when set."""

import os
import shutil
import time
from pathlib import Path

import pytest

from benchmarks.dashboard_scale import synthetic
from tests.browser import BOKEH_READY, Chromium, find_chromium
from vt_core.report.dashboard import render

pytestmark = pytest.mark.browser
EXPECTED = {"header", "state-graph", "model-selection", "bootstrap-k", "explain-panel", "metric-select", "seed-select",
            "x-scale", "metric-curves", "metric-curves-log", "state-timeline", "state-timeline-log", "timeline-order",
            "timeline-labels", "table-columns", "state-table"}

# Where every named view lies (viewport CSS px), the page's widths, and the model-selection legend
# against its frame and its data (canvas px): the layout checks of the tests below.
LAYOUT = """
(() => {
  const views = [...Bokeh.index.all_views()];
  const rect = (v) => { const r = v.el.getBoundingClientRect();
                        return {l: r.left, r: r.right, t: r.top + scrollY, b: r.bottom + scrollY, w: r.width}; };
  const named = {};
  for (const v of views) { if (v.model.name && !(v.model.name in named)) named[v.model.name] = rect(v); }
  const pv = views.find((v) => v.model.name === 'model-selection');
  const legend = pv.model.center.find((r) => r.type === 'Legend');
  const lb = views.find((v) => v.model === legend).bbox, fb = pv.frame.bbox;
  const d = Bokeh.documents[0].get_model_by_name('selection-scores').data;
  const top = Math.max(...d.bic_max, ...d.aic);
  const held = d.heldout.filter(Number.isFinite);
  const ys = pv.frame.y_scales;
  return {client: document.documentElement.clientWidth, scroll: document.documentElement.scrollWidth,
          named, legend: [lb.left, lb.top, lb.right, lb.bottom], frame: [fb.left, fb.top, fb.right, fb.bottom],
          data_top: pv.frame.y_scale.compute(top),
          held_top: held.length ? ys.get('heldout').compute(Math.max(...held)) : null};
})()
"""

# The screen position of the first transition's arrow (its tap handle) in the state graph.
EDGE_AT = """
(() => {
  const d = Bokeh.documents[0], src = d.get_model_by_name('graph-edges');
  const v = [...Bokeh.index.all_views()].find((v) => v.model.name === 'state-graph');
  const r = v.canvas_view.el.getBoundingClientRect();
  return {x: r.left + v.frame.x_scale.compute(src.data.mx[IDX]), y: r.top + v.frame.y_scale.compute(src.data.my[IDX]),
          edge: src.data.edge[IDX]};
})()
"""
NODE_AT = EDGE_AT.replace("graph-edges", "graph-nodes").replace("mx", "x").replace("my", "y").replace(
    "src.data.edge", "src.data.label")


@pytest.fixture(scope="module")
def browser():
    if find_chromium() is None:
        if os.environ.get("VT_REQUIRE_BROWSER"):
            pytest.fail("VT_REQUIRE_BROWSER is set but no chromium was found (apt-get install chromium)")
        pytest.skip("no chromium on this machine (apt-get install chromium, or set VT_CHROMIUM)")
    with Chromium() as b:
        yield b


def _keep(path: Path) -> None:
    out = os.environ.get("VT_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(out) / path.name)


def _js(page, body: str):
    return page.evaluate("(() => { const d = Bokeh.documents[0]; const m = (n) => d.get_model_by_name(n); "
                         f"{body} }})()")


def _settle(page):
    page.evaluate("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))")
    time.sleep(0.1)


def test_demo_dashboard_renders_without_errors_and_views_are_linked(browser, analysed_study, tmp_path):
    page = browser.open(analysed_study / "dashboard" / "index.html")
    info = page.wait_for(BOKEH_READY)
    assert EXPECTED <= set(info["names"]), info
    assert page.errors == []
    shot = page.screenshot(tmp_path / "dashboard.png")
    assert shot.stat().st_size > 20_000  # a painted page, not a blank one
    _keep(shot)

    # tapping a state highlights it in the table, the curves and the timeline
    _js(page, "m('graph-nodes').selected.indices = [1]; return true;")
    _settle(page)
    sel = _js(page, """
        const pts = m('curve-points').data, tl = m('timeline-segments').data;
        const ok = (src) => Array.from(src.state).every((s, i) => (s === 1) === (src.alpha[i] === 1.0));
        return {table: m('state-table-source').selected.indices, pts: ok(pts), tl: ok(tl)};""")
    assert sel == {"table": [1], "pts": True, "tl": True}
    # a row of the table selects the state in the graph
    _js(page, "m('state-table-source').selected.indices = [2]; return true;")
    _settle(page)
    assert _js(page, "return m('graph-nodes').selected.indices;") == [2]

    # metric and seed selectors, and the log-x switch
    _js(page, "m('metric-select').value = 'spectral'; m('seed-select').value = 'all seeds'; return true;")
    _settle(page)
    got = _js(page, """
        const pts = m('curve-points').data;
        const same = Array.from(pts.y).every((v, i) => Object.is(v, pts['spectral'][i]));
        const fig = m('metric-curves');
        const view = fig.renderers.find((r) => r.data_source === m('curve-points')).view;
        return {same, all_visible: view.filter.booleans.every((b) => b), label: fig.left[0].axis_label};""")
    assert got == {"same": True, "all_visible": True, "label": "spectral norm, mean over matrices [weight units]"}
    _js(page, "m('x-scale').active = 1; return true;")
    _settle(page)
    assert _js(page, "return [m('metric-curves').visible, m('metric-curves-log').visible];") == [False, True]
    _keep(page.screenshot(tmp_path / "dashboard-interacted.png"))
    assert page.errors == []


def test_hundred_seeds_by_thousand_checkpoints_render(browser, tmp_path):
    a, sel, paths, value = synthetic(100, 1000)
    html = tmp_path / "large.html"
    html.write_text(render("large", "100 seeds x 1000 checkpoints", a, sel, paths, value), encoding="utf-8")
    page = browser.open(html)
    info = page.wait_for(BOKEH_READY, timeout=120)
    assert EXPECTED <= set(info["names"])
    _js(page, "m('seed-select').value = 'all seeds'; return true;")
    _settle(page)
    _keep(page.screenshot(tmp_path / "large.png"))
    assert page.errors == []


def _overlaps(a: dict, b: dict) -> bool:
    return a["l"] < b["r"] - 1 and b["l"] < a["r"] - 1 and a["t"] < b["b"] - 1 and b["t"] < a["b"] - 1


def _check_layout(page, width: int) -> dict:
    lay = page.evaluate(LAYOUT)
    assert lay["scroll"] <= lay["client"] <= width, lay  # nothing wider than the viewport
    for name, r in lay["named"].items():
        assert r["r"] <= lay["client"] + 1, (name, r)
    figs = [n for n in ("state-graph", "model-selection", "bootstrap-k", "explain-panel", "metric-curves",
                        "state-timeline", "state-table")]
    for i, a in enumerate(figs):
        for b in figs[i + 1:]:
            assert not _overlaps(lay["named"][a], lay["named"][b]), (a, b, lay["named"][a], lay["named"][b])
    (ll, lt, lr, lb), (fl, ft, fr, fb) = lay["legend"], lay["frame"]
    assert fl <= ll and lr <= fr and ft <= lt and lb <= fb, ("legend outside its frame", lay)
    assert lb < lay["data_top"] and (lay["held_top"] is None or lb < lay["held_top"]), ("legend over the data", lay)
    return lay


def _click_and_explain(page, what: str, index: int, expect: str) -> str:
    """Click, then wait (a loaded machine renders slowly) until the panel shows ``expect``."""
    import time

    page.evaluate("""(() => { const v = [...Bokeh.index.all_views()].find((v) => v.model.name === 'state-graph');
        v.el.scrollIntoView({block: 'center'}); })()""")  # a click outside the viewport reaches nothing
    _settle(page)
    at = page.evaluate((EDGE_AT if what == "edge" else NODE_AT).replace("IDX", str(index)))
    page.click(at["x"], at["y"])
    deadline = time.monotonic() + 20
    while True:
        _settle(page)
        text = _js(page, "return m('explain-panel').text;")
        if expect in text or time.monotonic() > deadline:
            break
    panel = page.evaluate("""(() => { const v = [...Bokeh.index.all_views()].find((v) => v.model.name ===
        'explain-panel'); const r = v.el.getBoundingClientRect(); return [r.top, r.bottom, innerHeight]; })()""")
    assert panel[0] < panel[2] and panel[1] > 0 and panel[1] - panel[0] > 100, ("panel not in view", panel)
    return text


@pytest.mark.parametrize("width", [1280, 1920])
def test_layout_fits_the_window_and_a_click_explains_a_transition(browser, analysed_study, tmp_path, width):
    page = browser.open(analysed_study / "dashboard" / "index.html", width=width, height=1000)
    page.wait_for(BOKEH_READY)
    _settle(page)
    lay = _check_layout(page, width)
    graph, sel = lay["named"]["state-graph"], lay["named"]["model-selection"]
    assert graph["w"] > 0.4 * width and sel["w"] > 0.4 * width  # the page stretches to the window
    _keep(page.screenshot(tmp_path / f"dashboard-{width}.png"))

    text = _click_and_explain(page, "edge", 0, "Transition")
    assert "Transition" in text and "paper's gradient" in text and "within-state sd" in text
    assert "When</b>: first made at step" in text and "weight units" in text
    assert _js(page, "return m('graph-edges').selected.indices;") == [0]
    _keep(page.screenshot(tmp_path / f"dashboard-{width}-transition.png", full_page=False))
    node = min(2, _js(page, "return m('graph-nodes').data.x.length;") - 1)  # the study's k may be small
    text = _click_and_explain(page, "node", node, "Feature means")
    assert "State" in text and "Feature means" in text and "seeds visiting" in text
    assert _js(page, "return m('state-table-source').selected.indices;") == [node]  # and highlighted everywhere
    assert page.errors == []


def test_many_seeds_timeline_orders_and_labels(browser, tmp_path):
    a, sel, paths, value = synthetic(120, 200)
    html = tmp_path / "many.html"
    html.write_text(render("many", "120 seeds", a, sel, paths, value), encoding="utf-8")
    page = browser.open(html, width=1280, height=1000)
    page.wait_for(BOKEH_READY, timeout=120)
    _check_layout(page, 1280)
    conv = {int(s): c for s, c in a["convergence_step"].items()}
    factors = _js(page, "return m('state-timeline').y_range.factors;")[::-1]  # listed bottom to top
    never = float("inf")
    assert factors == sorted(factors, key=lambda s: (conv[int(s)] if conv[int(s)] is not None else never, int(s)))
    _js(page, "m('timeline-order').active = 2; m('timeline-labels').active = true; "
              "m('x-scale').active = 1; m('seed-select').value = 'all seeds'; return true;")
    _settle(page)
    got = _js(page, """return {groups: m('timeline-groups').visible, font: m('state-timeline').left[0].major_label_text_font_size,
                              log: [m('state-timeline-log').visible, m('metric-curves-log').visible],
                              band: m('band-quads').visible};""")
    assert got == {"groups": True, "font": "8px", "log": [True, True], "band": True}
    _keep(page.screenshot(tmp_path / "many-seeds.png"))
    assert page.errors == []
