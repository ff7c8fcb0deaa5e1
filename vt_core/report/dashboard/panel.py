"""The explanation panel: what a tapped transition or state means, in the paper's terms.

A transition: its top features ranked by the paper's gradient (the mean absolute gradient of
log p(s_t+1 = j | z_1..t+1)) and, separately, by the change in within-state standard deviations,
each with the mean change in the metric's own units; the seeds that make the transition and at
which step. A state: occupancy, seeds, first visit, stability, detour regression, the edges in and
out, and its feature means in original units. Built as HTML in Python (escaped), shown by JS."""

from __future__ import annotations

import html

import numpy as np

from vt_core.analysis.records import Analysis, FeatureChange, StateSummary, Transition
from vt_core.report.labels import metric_label
from vt_core.report.narrative import num
from vt_core.report.palette import text_color

PROMPT = ("<p class='vt-hint'>Tap a transition (an edge, or its arrow) or a state in the graph to see what "
          "drives it here.</p>")
STYLE = ("<style>.vt-panel{font:12px/1.35 sans-serif;overflow-wrap:anywhere}.vt-panel h3{margin:2px 0 4px;"
         "font-size:14px}.vt-panel table{border-collapse:collapse;margin:2px 0 6px;width:100%}.vt-panel td,"
         ".vt-panel th{padding:1px 6px 1px 0;text-align:left;vertical-align:top}.vt-panel th{border-bottom:1px "
         "solid #999;font-weight:600}.vt-panel td.n{text-align:right;font-variant-numeric:tabular-nums}"
         ".vt-cols{display:flex;flex-wrap:wrap;gap:4px 18px}.vt-cols>div{flex:1 1 260px;min-width:0}"
         ".vt-hint{color:#555}</style>")
MAX_SEEDS_LISTED = 12


def _swatch(state: int, colors: list[str]) -> str:
    c = colors[state]
    return (f"<span style='display:inline-block;min-width:18px;padding:0 4px;border-radius:3px;background:{c};"
            f"color:{text_color(c)};text-align:center;font-weight:600'>{state}</span>")


def _feature_rows(feats: list[FeatureChange]) -> str:
    rows = []
    for f in feats:
        label = metric_label(f["feature"])
        units = f" {html.escape(label.units)}" if label.units else ""
        rows.append(f"<tr><td title='{html.escape(label.long_name)}'>{html.escape(f['feature'])}</td>"
                    f"<td class='n'>{num(f['mean_abs_gradient'], 2)}</td><td class='n'>{f['sd_change']:+.2g}</td>"
                    f"<td class='n'>{f['raw_mean_change']:+.3g}{units}</td></tr>")
    head = "<tr><th>feature</th><th>|gradient|</th><th>Δ (within-state sd)</th><th>Δ mean (units)</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _when(t: Transition) -> str:
    first = sorted(((int(s), int(step)) for s, step in (t.get("first_step") or {}).items()), key=lambda x: (x[1], x[0]))
    if not first:
        return ""
    steps = np.array([st for _, st in first])
    listed = ", ".join(f"{s} (step {num(st)})" for s, st in first[:MAX_SEEDS_LISTED])
    more = f", and {len(first) - MAX_SEEDS_LISTED} more" if len(first) > MAX_SEEDS_LISTED else ""
    return (f"<p><b>When</b>: first made at step {num(float(np.median(steps)))} (median; "
            f"{num(int(steps.min()))}–{num(int(steps.max()))}). Seeds, earliest first: {listed}{more}.</p>")


def transition_html(t: Transition, colors: list[str], n_seeds: int) -> str:
    """One transition's explanation (``t``: an entry of ``analysis.json``'s ``transitions``)."""
    top = t.get("top_features") or []
    by_sd = t.get("top_by_sd_change") or []
    return (f"{STYLE}<div class='vt-panel'><h3>Transition {_swatch(t['from'], colors)} → {_swatch(t['to'], colors)}"
            f"</h3><p>p = {num(t['prob'])} per checkpoint · made by {t['n_seeds']} of {n_seeds} seeds.</p>"
            f"<div class='vt-cols'><div><b>Top features by the paper's gradient</b>{_feature_rows(top[:5])}</div>"
            f"<div><b>Largest changes in within-state sd</b>{_feature_rows(by_sd[:5])}</div></div>{_when(t)}</div>")


def _detour(s: StateSummary, a: Analysis) -> str:
    reg = a.get("regression") or {}
    coef = (reg.get("coefficients") or {}).get(str(s["state"]))
    if coef is None:
        return "not an optional state in the detour regression" if s["state"] not in (a.get("detour_states") or []) \
            else "detour"
    lo, hi = (reg.get("intervals") or {}).get(str(s["state"])) or (None, None)
    verdict = "a detour" if s["state"] in (a.get("detour_states") or []) else "not a detour"
    interval = "no 95% interval" if lo is None or hi is None else f"95% interval {num(lo, 2)} to {num(hi, 2)}"
    return f"{verdict}: {num(coef, 2)} steps of delay per step spent here ({interval})"


def state_html(s: StateSummary, a: Analysis, colors: list[str], n_seeds: int) -> str:
    """One state's explanation (``s``: an entry of ``analysis.json``'s ``states``)."""
    i = s["state"]
    ins = [f"{_swatch(t['from'], colors)} ({t['n_seeds']} seeds)" for t in a["transitions"] if t["to"] == i]
    outs = [f"{_swatch(t['to'], colors)} ({t['n_seeds']} seeds)" for t in a["transitions"] if t["from"] == i]
    means = "".join(f"<tr><td title='{html.escape(metric_label(f).long_name)}'>{html.escape(f)}</td>"
                    f"<td class='n'>{num(v)}</td><td>{html.escape(metric_label(f).units)}</td></tr>"
                    for f, v in s.get("means", {}).items())
    facts = [("occupancy", f"{num(100 * s['occupancy'], 3)}% of checkpoints"),
             ("seeds visiting", f"{len(s['seeds'])} of {n_seeds}"),
             ("first visit", f"step {num(s['first_step_mean'])} on average"),
             ("steps", f"{num(s['step_min'])}–{num(s['step_max'])}"),
             ("stability (bootstrap)", num(s.get("stability"), 2)), ("detour", _detour(s, a)),
             ("entered from", ", ".join(ins) or "none (a start)"), ("left to", ", ".join(outs) or "none (an end)")]
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in facts)
    return (f"{STYLE}<div class='vt-panel'><h3>State {_swatch(i, colors)}</h3><div class='vt-cols'>"
            f"<div><table>{rows}</table></div><div><b>Feature means</b><table><tr><th>feature</th><th>mean</th>"
            f"<th>units</th></tr>{means}</table></div></div></div>")
