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
from vt_core.dashboard import render

pytestmark = pytest.mark.browser
EXPECTED = {"header", "state-graph", "model-selection", "metric-select", "seed-select", "x-scale",
            "metric-curves", "metric-curves-log", "state-timeline", "state-table"}


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
    assert got == {"same": True, "all_visible": True, "label": "spectral"}
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
