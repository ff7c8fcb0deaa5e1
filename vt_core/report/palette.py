"""States' colours and the state graph's placement, the same in the dashboard, the summary
artifact's PNG and the paper figures (:mod:`vt_core.report.figures`).

The palette starts from Okabe & Ito's colour-blind safe set and adds Paul Tol's colours, chosen
greedily so that every pair stays apart (CIELAB distance) for normal vision and under simulated
deuteranopia, protanopia and tritanopia (tests/report/test_palette.py measures it). ``NO_STATE``, the
pale grey of checkpoints without a decoded state, is never one of them, nor close to one.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from vt_core.analysis.records import Analysis

NO_STATE = "#dddddd"

#: one colour per state for up to 12 states
STATE_COLORS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#661100", "#cc3311", "#332288", "#88ccee",
                "#882255", "#ee7733", "#6699cc", "#117733")


def state_palette(k: int) -> list[str]:
    """One colour per state, the same in every view; past 12 states, evenly spaced hues (Turbo)
    that are still never the "no state" grey."""
    if k <= len(STATE_COLORS):
        return list(STATE_COLORS[:k])
    from bokeh.palettes import Turbo256

    extra = [Turbo256[int(i)] for i in np.linspace(20, 235, k - len(STATE_COLORS))]
    return list(STATE_COLORS) + extra


def text_color(fill: str) -> str:
    """Black or white, whichever reads better on ``fill`` (relative luminance)."""
    r, g, b = (int(fill[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def _layers(g: nx.DiGraph, first: dict[int, float]) -> dict[int, int]:
    """Each state's layer: 0 without an earlier-visited predecessor, else one more than the
    deepest such predecessor (edges back to earlier states do not count: the graph is layered as
    the seeds first went through it)."""
    forward = nx.DiGraph()
    forward.add_nodes_from(g)
    forward.add_edges_from((u, v) for u, v in g.edges if (first[u], u) < (first[v], v))
    layer: dict[int, int] = {}
    for n in nx.topological_sort(forward):
        layer[n] = max((layer[p] + 1 for p in forward.predecessors(n)), default=0)
    return layer


def entry_steps(a: Analysis) -> dict[int, float]:
    """When each state is first entered: the median over the seeds that visit it of the step at
    which each first enters it (the first step of the earliest transition into it; a seed that
    starts in the state enters it at its first step). The median, not the mean of first visits
    that labels the states: a state that a few seeds enter early but most enter late (a state
    entered from the last one) is placed late, where the seeds meet it. Inf: never visited."""
    into: dict[int, dict[str, float]] = {}
    for t in a.get("transitions") or []:
        for seed, step in (t.get("first_step") or {}).items():
            seeds = into.setdefault(t["to"], {})
            seeds[seed] = min(seeds.get(seed, np.inf), step)
    out = {}
    for s in a["states"]:
        mean, visitors, entries = s.get("first_step_mean"), [str(v) for v in s.get("seeds") or []], into.get(s["state"])
        if mean is None:
            out[s["state"]] = np.inf
        elif not visitors or (not entries and s.get("step_min")):
            out[s["state"]] = float(mean)  # a record without each seed's entries: the mean first visit
        else:  # a visitor with no transition into the state started in it, at its first step
            start = float(s.get("step_min") or 0)
            out[s["state"]] = float(np.median([(entries or {}).get(v, start) for v in visitors]))
    return out


def graph_layout(a: Analysis) -> tuple[np.ndarray, np.ndarray]:
    """Node positions from the graph itself: layers left to right by first entry (:func:`entry_steps`; a state's layer
    follows its earlier-visited predecessors'), states of one layer stacked in y and ordered by
    the mean position of their predecessors (fewer crossings). x: layer index; y within [-1, 1]."""
    states = a["states"]
    k = len(states)
    first = entry_steps(a)
    g = nx.DiGraph()
    g.add_nodes_from(range(k))
    g.add_edges_from((e["source"], e["target"]) for e in a["graph"]["edges"] if e["source"] != e["target"])
    layer = _layers(g, first)
    for n in range(k):  # never-visited states: a last layer of their own
        if first[n] == np.inf:
            layer[n] = max(layer.values(), default=0) + 1
    y = np.zeros(k)
    for depth in sorted(set(layer.values())):
        members = [n for n in range(k) if layer[n] == depth]
        preds = {n: [y[p] for p in g.predecessors(n) if layer[p] < depth] for n in members}
        members.sort(key=lambda n: (np.mean(preds[n]) if preds[n] else 0.0, first[n], n))
        ordered = nx.DiGraph()
        for n in members:
            ordered.add_node(n, layer=depth)
        pos = nx.multipartite_layout(ordered, subset_key="layer", align="vertical", scale=1)
        if len(members) > 1:
            span = np.array([pos[n][1] for n in members])
            y[members] = -(span - span.mean()) / max(np.ptp(span), 1e-9) * min(1.6, 0.8 * (len(members) - 1))
    x = np.array([layer[n] for n in range(k)], float)
    return x, y
