"""The live page (dashboard/live.html) in headless Chromium at two moments of a run: a third of
each seed's checkpoints decoded, then all of them. The timeline grows, every bar has its state's
colour, the page names each seed's state and reloads itself; no console error. Screenshots go to
tmp_path, or to $VT_SCREENSHOTS when set."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.browser import BOKEH_READY, Chromium, find_chromium
from vt_core.report.palette import state_palette
from vt_core.stages import live
from vt_core.storage.run_store import RunStore

pytestmark = pytest.mark.browser


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


SEGMENTS = """(() => { const d = Bokeh.documents[0].get_model_by_name('live-segments').data;
  return {n: d.seed.length, right: Math.max(...d.right), colors: Array.from(d.color), states: Array.from(d.state)}; })()"""


def _look(browser, page_path: Path, shot: Path) -> dict:
    page = browser.open(page_path)
    info = page.wait_for(BOKEH_READY)
    assert {"live-timeline", "live-accuracy"} <= set(info["names"]), info
    assert page.errors == []
    seen = page.evaluate(SEGMENTS)
    seen["text"] = page.evaluate("(() => { const d = Bokeh.documents[0]; return d.get_model_by_name('live-header').text "
                                 "+ d.get_model_by_name('live-events').text; })()")
    seen["refresh"] = page.evaluate("document.querySelector('meta[http-equiv=refresh]').content")
    assert page.screenshot(shot).stat().st_size > 20_000
    _keep(shot)
    return seen


def test_the_live_page_grows_as_checkpoints_are_decoded(browser, analysed_study, tmp_path, monkeypatch):
    study = tmp_path / "live-study"
    study.mkdir()
    shutil.copy(analysed_study / "study.json", study / "study.json")
    shutil.copytree(analysed_study / "runs", study / "runs")
    real = RunStore.committed
    monkeypatch.setattr(RunStore, "committed", property(lambda self: min(real.fget(self), 16)))
    w = live.Watcher(study, analysed_study)
    w.page_written = -float("inf")  # drawn at once (unserved, the watcher draws it every 30 s)
    w.poll()
    early = _look(browser, study / "dashboard" / "live.html", tmp_path / "live-early.png")
    monkeypatch.undo()
    w.page_written = -float("inf")
    w.poll()
    late = _look(browser, study / "dashboard" / "live.html", tmp_path / "live-late.png")
    assert early["right"] == 30 and late["right"] == 96  # the 16th checkpoint's step, then the last one's
    assert late["n"] >= early["n"] >= 3  # a bar per seed at least
    colors = state_palette(w.ref.k)
    assert all(c == colors[s] for c, s in zip(late["colors"], late["states"]))
    assert "seed 0: state" in late["text"] and "latest events" in late["text"] and late["refresh"] == "5"
    assert "did not decide" in late["text"]  # the tiny reference's k is undetermined, and the page says so
