"""The live page (``dashboard/live.html``): while seeds train under `vt run --reference`, each
seed's decoded states as a timeline, its held-out accuracy as it grows, its current state and
predicted convergence, and the events so far, drawn from ``live.json`` as the watcher
(:mod:`vt_core.stages.live`) writes it. While `vt dashboard STUDY --serve` serves the page, that
process redraws it as ``live.json`` changes (:func:`redrawing`); otherwise the watcher does, every
30 s. The page reloads itself every few seconds, so the browser follows training with no reload by hand.

The timeline is drawn from the events (each seed's most probable state under the *filtered*
posterior, as it was decoded at each checkpoint: not the smoothed states the analysis shows once
training has ended, which may place a boundary differently); the accuracy from the run stores'
committed rows (chunk checksums verified by the read)."""

from __future__ import annotations

import contextlib
import html
import logging
import os
import threading
import time
from collections.abc import Iterator

import numpy as np
from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, Div, FactorRange, HoverTool
from bokeh.plotting import figure
from bokeh.resources import INLINE

from vt_core.analysis.live import ReferenceError, describe, describe_event, read_live
from vt_core.report.palette import state_palette
from vt_core.storage.handle import Study, StudyRef
from vt_core.storage.layout import layout
from vt_core.storage.location import DamagedFileError, Location, write_text_atomic
from vt_core.storage.run_store import RunStore, StoreError

REFRESH_S = 5  # the page reloads itself this often, and is redrawn as often while served
log = logging.getLogger("vt")


def _segments(doc: dict) -> dict[str, list]:
    """One bar per (seed, state visit) of the current training run of each seed."""
    out: dict[str, list] = {"seed": [], "left": [], "right": [], "state": [], "color": []}
    colors = state_palette(int(doc["k"]))
    for seed, entry in doc.get("seeds", {}).items():
        run = str(entry.get("run_id"))
        entered = sorted((e["step"], e["state"]) for e in doc.get("events", [])
                         if e["kind"] == "entered" and str(e["seed"]) == seed and e["key"].split(":")[1] == run)
        ends = [s for s, _ in entered[1:]] + [entry["step"]]
        for (start, state), end in zip(entered, ends):
            out["seed"].append(f"seed {seed}")
            out["left"].append(start)
            out["right"].append(max(end, start + 1e-9))
            out["state"].append(state)
            out["color"].append(colors[state])
    return out


def _accuracy(study: str | Location, seeds: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for seed in seeds:
        try:
            store = RunStore(layout(study).run(int(seed)), mode="r")
            n = store.committed
            if n and "test_accuracy" in store.root:
                out[seed] = (np.asarray(store.root["step"][:n]), np.asarray(store.root["test_accuracy"][:n]))
        except (StoreError, OSError, KeyError, ValueError):
            continue  # being written: the next rewrite shows it
    return out


def render_live(study: str | Location, doc: dict, name: str) -> str:
    seeds = sorted(doc.get("seeds", {}), key=int)
    when = time.strftime("%H:%M:%S", time.localtime(doc.get("updated", time.time())))
    head = (f"<h2>{html.escape(name)}: live states</h2><p>decoded under {html.escape(str(doc['reference']))}'s model "
            f"(k = {doc['k']}, {html.escape(str(doc.get('status')))}; detour states: "
            f"{', '.join(map(str, doc.get('detour_states', []))) or 'none'}); updated {when}, this page reloads "
            f"every {REFRESH_S} s</p><ul>" +
            "".join(f"<li>{html.escape(describe(int(s), doc['seeds'][s]))}</li>" for s in seeds) + "</ul>")
    if doc.get("status") != "decided":
        head += ("<p><b>The reference did not decide its number of states:</b> these states are one reading of "
                 "several.</p>")
    order = [f"seed {s}" for s in reversed(seeds)] or ["(no checkpoint decoded yet)"]
    timeline = figure(title="most probable state as each checkpoint committed (filtered)", height=60 + 28 * len(order),
                      sizing_mode="stretch_width", y_range=FactorRange(*order), x_axis_label="step",
                      tools="xpan,xwheel_zoom,reset", name="live-timeline")
    bars = ColumnDataSource(_segments(doc), name="live-segments")
    timeline.hbar(y="seed", left="left", right="right", height=0.7, color="color", source=bars)
    timeline.add_tools(HoverTool(tooltips=[("", "@seed"), ("state", "@state"), ("steps", "@left – @right")]))
    curves = figure(title="held-out accuracy", height=260, sizing_mode="stretch_width", x_axis_label="step",
                    x_range=timeline.x_range, tools="xpan,xwheel_zoom,reset", name="live-accuracy")
    accuracy = _accuracy(study, seeds)
    dashes = ("solid", "dashed", "dotted", "dashdot")
    for i, (seed, (steps, acc)) in enumerate(accuracy.items()):  # seeds told apart by grey level and dash,
        grey = "#" + f"{0x20 + (i % 5) * 0x22:02x}" * 3                # not by the states' colours
        curves.line(steps, acc, legend_label=f"seed {seed}", line_width=2, color=grey, line_dash=dashes[i // 5 % 4])
    if curves.legend:
        curves.legend.location = "bottom_right"
    shown = curves if accuracy else Div(text="<p>held-out accuracy: no checkpoint committed yet</p>")
    events = "".join(f"<li>{html.escape(describe_event(e))}</li>" for e in doc.get("events", [])[-12:][::-1])
    tail = Div(text=f"<h3>latest events</h3><ul>{events or '<li>none yet</li>'}</ul>", sizing_mode="stretch_width",
               name="live-events")
    page = file_html(column(Div(text=head, sizing_mode="stretch_width", name="live-header"), timeline, shown, tail,
                            sizing_mode="stretch_width"), INLINE, title=f"vt: {name} (live)")
    return page.replace("<head>", f'<head>\n<meta http-equiv="refresh" content="{REFRESH_S}">', 1)


def write_live_page(study: str | Location, doc: dict, name: str) -> Location:
    path = layout(study).live_page
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, render_live(study, doc, name))
    return path


def draw_live_page(study: StudyRef) -> Location:
    """``dashboard/live.html`` from ``live.json`` as the watcher last wrote it."""
    study = Study.open(study)
    doc = read_live(study.location)
    if doc is None:
        raise ReferenceError(f"{study.location} has no live states (no live.json): `vt run CONFIG --reference STUDY`")
    return write_live_page(study.location, doc, study.config.name)


@contextlib.contextmanager
def redrawing(study: StudyRef) -> Iterator[None]:
    """While `vt dashboard --serve` serves the live page: redraw it every :data:`REFRESH_S` when
    ``live.json`` has changed, in that process (bokeh imported already, a thread at nice 10). The
    watcher drew it before: its first draw imports bokeh, 1.2 s of CPU at nice 10 beside training,
    and the served page stood 20-25 s behind the terminal."""
    stop, path = threading.Event(), layout(study).live

    def mtime() -> int | None:
        try:
            return path.stat().st_mtime_ns
        except OSError:
            return None

    def run() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # this thread only (Linux)
        except (OSError, AttributeError):
            pass
        seen = mtime()
        while not stop.wait(REFRESH_S):
            now = mtime()
            if now is None or now == seen:
                continue
            seen = now
            try:
                draw_live_page(study)
            except (ReferenceError, DamagedFileError, OSError) as err:  # a live.json being replaced: the next one
                log.debug("live page not redrawn: %s", err)

    thread = threading.Thread(target=run, name="vt-live-page", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
