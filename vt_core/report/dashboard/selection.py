"""Model selection: BIC (bar: its spread over restarts), AIC and the held-out log-likelihood
against k, on integer ticks, the legend inside the frame above the data; k that were infeasible
or whose fits all failed marked at the foot with their reason; the chosen k, and below, the share of
bootstrap resamples choosing each k (its uncertainty)."""

from __future__ import annotations

import numpy as np
from bokeh.models import (
    ColumnDataSource,
    FixedTicker,
    HoverTool,
    Label,
    LabelSet,
    LinearAxis,
    Range1d,
    Span,
    Whisker,
)
from bokeh.plotting import figure

from vt_core.analysis.records import Selection
from vt_core.report.narrative import NO_BOOTSTRAP

BIC, AIC, HELD, BAD = "#0072b2", "#e69f00", "#009e73", "#cc3311"
HEADROOM = 0.42  # share of the y range kept free above the data for the legend


def _padded(values: np.ndarray) -> Range1d:
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    return Range1d(lo - 0.06 * span, hi + span * HEADROOM / (1 - HEADROOM))


def _bad_rows(sel: Selection) -> dict:
    """The k not fitted, and one label per run of consecutive k of one status (``infeasible 9–16``
    at the run's middle) instead of a word at every k, which ran together at 1280 px."""
    bad = [t for t in sel["table"] if t.get("status") in ("infeasible", "failed") or not t.get("n_ok")]
    status = [t.get("status") or "failed" for t in bad]
    label = [""] * len(bad)
    i = 0
    while i < len(bad):
        j = i
        while j + 1 < len(bad) and bad[j + 1]["k"] == bad[j]["k"] + 1 and status[j + 1] == status[i]:
            j += 1
        label[(i + j) // 2] = status[i] + (f" {bad[i]['k']}–{bad[j]['k']}" if j > i else "")
        i = j + 1
    return {"k": [t["k"] for t in bad], "y": [0.04] * len(bad), "status": status, "label": label,
            "reason": ["; ".join(t.get("failures") or []) or "no fit converged" for t in bad]}


def selection_figure(sel: Selection, ks: list[int], x_range: Range1d):
    rows = [t for t in sel["table"] if t.get("n_ok")]
    src = ColumnDataSource({
        "k": [t["k"] for t in rows], "bic": [t["bic"] for t in rows], "aic": [t["aic"] for t in rows],
        "bic_min": [t.get("bic_min", t["bic"]) for t in rows], "bic_max": [t.get("bic_max", t["bic"]) for t in rows],
        "heldout": [t["heldout_ll"] if t.get("heldout_ll") is not None else np.nan for t in rows],
        "n_ok": [t["n_ok"] for t in rows]}, name="selection-scores")
    scores = np.array(src.data["bic"] + src.data["aic"] + src.data["bic_max"], float)
    p = figure(title="Model selection (bar: BIC over restarts)",
               height=300, sizing_mode="stretch_width", min_width=360, x_range=x_range,
               y_range=_padded(scores) if scores.size else Range1d(0, 1), y_axis_label="BIC / AIC (lower is better)",
               tools="save,reset", toolbar_location="above", name="model-selection")
    p.xaxis.ticker = FixedTicker(ticks=ks)
    p.xaxis.axis_label = "k (states)"
    p.line("k", "bic", source=src, legend_label="BIC", color=BIC, line_width=2)
    p.scatter("k", "bic", source=src, color=BIC, size=7, legend_label="BIC")
    p.add_layout(Whisker(source=src, base="k", lower="bic_min", upper="bic_max", line_color=BIC))
    p.line("k", "aic", source=src, legend_label="AIC", color=AIC, line_width=2, line_dash="dashed")
    held = np.array(src.data["heldout"], float)
    if np.isfinite(held).any():
        p.extra_y_ranges = {"heldout": _padded(held)}
        p.add_layout(LinearAxis(y_range_name="heldout", axis_label="held-out log L (higher is better)"), "right")
        p.min_border_right = 90  # room for the right axis and its label (Bokeh measures it short)
        p.line("k", "heldout", source=src, y_range_name="heldout", color=HELD, line_width=2,
               legend_label="held-out log L")
        p.scatter("k", "heldout", source=src, y_range_name="heldout", color=HELD, size=6, marker="square",
                  legend_label="held-out log L")
    bad = ColumnDataSource(_bad_rows(sel))
    if bad.data["k"]:
        p.extra_y_ranges = {**p.extra_y_ranges, "unit": Range1d(0, 1)}
        marks = p.scatter("k", "y", source=bad, y_range_name="unit", marker="x", size=12, line_width=3,
                          color=BAD, legend_label="not fitted (hover: why)")
        p.add_layout(LabelSet(x="k", y="y", text="label", source=bad, y_range_name="unit", y_offset=10,
                              text_align="center", text_font_size="10px", text_color=BAD))
        p.add_tools(HoverTool(renderers=[marks], tooltips=[("k", "@k"), ("", "@status"), ("why", "@reason")]))
    _mark_chosen(p, sel)
    p.legend.location = "top_right"
    p.legend.orientation = "horizontal"
    p.legend.label_text_font_size = "10px"
    p.legend.background_fill_alpha = 0.85
    p.legend.click_policy = "hide"
    p.add_tools(HoverTool(renderers=[r for r in p.renderers if getattr(r, "data_source", None) is src][:2],
                          tooltips=[("k", "@k"), ("BIC", "@bic{0.0}"), ("BIC over restarts", "@bic_min{0.0} – "
                                    "@bic_max{0.0}"), ("AIC", "@aic{0.0}"), ("held-out log L", "@heldout{0.0}"),
                                    ("restarts converged", "@n_ok")]))
    return p


def _mark_chosen(p, sel: Selection) -> None:
    k = sel["chosen_k"]
    undetermined = sel.get("status") == "undetermined"
    p.add_layout(Span(location=k, dimension="height", line_color="black", line_dash="dotted", line_width=2))
    p.add_layout(Label(x=k, y=6, y_units="screen", x_offset=-4, text_align="right", text_font_size="11px",
                       text=f"chosen k = {k}" + (" (undetermined)" if undetermined else ""),
                       text_color="#b00020" if undetermined else "black", background_fill_color="white",
                       background_fill_alpha=0.8))


def bootstrap_figure(sel: Selection, x_range: Range1d):
    """The share of bootstrap resamples of the seeds that chose each k (empty note without any)."""
    boot = sel.get("bootstrap") or {}
    dist = {int(k): v for k, v in (boot.get("k_distribution") or {}).items()}
    src = ColumnDataSource({"k": list(dist), "share": list(dist.values()),
                            "pct": [f"{100 * v:.0f}%" for v in dist.values()],
                            "color": ["#333333" if k == sel["chosen_k"] else "#999999" for k in dist]})
    lo, hi = boot.get("k_interval") or (None, None)
    bar = "" if lo is None or hi is None else f" (bar: 95% range {lo}–{hi})"
    title = (f"k chosen by {boot['n']} bootstrap resamples of the seeds{bar}"
             if boot.get("n") else NO_BOOTSTRAP[0].upper() + NO_BOOTSTRAP[1:])
    p = figure(title=title, height=130, sizing_mode="stretch_width", min_width=360, x_range=x_range,
               y_range=Range1d(0, 1.25), y_axis_label="share", tools="save", toolbar_location=None,
               name="bootstrap-k")
    p.xaxis.ticker = FixedTicker(ticks=list(range(int(np.ceil(x_range.start)), int(x_range.end) + 1)))
    p.yaxis.ticker = FixedTicker(ticks=[0, 0.5, 1])
    p.vbar(x="k", top="share", width=0.6, color="color", source=src)
    p.add_layout(LabelSet(x="k", y="share", text="pct", source=src, y_offset=2, text_align="center",
                          text_font_size="10px"))
    if lo is not None and hi is not None:  # the 95% range of the resamples' k, as a bar above the shares
        p.segment(x0=[lo - 0.3], x1=[hi + 0.3], y0=[1.15], y1=[1.15], line_width=3, color="black")
    return p
