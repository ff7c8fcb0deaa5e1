"""The state graph as a static drawing: the same layout and palette as the dashboard
(:mod:`vt_core.report.palette`), arrows, edge width by the number of seeds, node area by occupancy,
nothing clipped (limits include every node's radius). Used by ``vt figures`` and, as a small PNG,
by the summary artifact."""

from __future__ import annotations

import base64

import numpy as np
from matplotlib.patches import Circle, FancyArrowPatch

from vt_core.analysis.records import Analysis
from vt_core.report.figures.style import new_figure, paper_style, to_bytes
from vt_core.report.palette import graph_layout, state_palette, text_color

MAX_RADIUS, MIN_RADIUS = 0.3, 0.13


def draw_state_graph(ax, a: Analysis) -> None:
    states = a["states"]
    x, y = graph_layout(a)
    colors = state_palette(a["chosen_k"])
    occ = np.array([s["occupancy"] for s in states], float)
    radius = MIN_RADIUS + (MAX_RADIUS - MIN_RADIUS) * np.sqrt(occ / max(occ.max(), 1e-9))
    detours = set(a.get("detour_states") or [])
    circles = []
    for i, s in enumerate(states):
        c = Circle((x[i], y[i]), radius[i], facecolor=colors[i], edgecolor="black",
                   linewidth=1.6 if s["state"] in detours else 0.7, linestyle="--" if s["state"] in detours else "-",
                   zorder=3)
        ax.add_patch(c)
        circles.append(c)
        ax.text(x[i], y[i], str(s["state"]), ha="center", va="center", fontsize=8, fontweight="bold",
                color=text_color(colors[i]), zorder=4)
    edges = [e for e in a["graph"]["edges"] if e["source"] != e["target"]]
    most = max([e["n_seeds"] for e in edges] + [1])
    for e in edges:
        i, j = e["source"], e["target"]
        ax.add_patch(FancyArrowPatch((x[i], y[i]), (x[j], y[j]), patchA=circles[i], patchB=circles[j],
                                     connectionstyle="arc3,rad=-0.18", arrowstyle="-|>",
                                     mutation_scale=8 + 4 * e["n_seeds"] / most,
                                     linewidth=0.6 + 3.4 * e["n_seeds"] / most, color="#555555", alpha=0.8,
                                     shrinkA=1, shrinkB=1, zorder=2))
    pad = MAX_RADIUS + 0.15  # the largest node, plus room for the arcs' bow
    ax.set_xlim(float(x.min()) - pad, float(x.max()) + pad)
    ax.set_ylim(min(float(y.min()), -0.5) - pad, max(float(y.max()), 0.5) + pad)
    ax.set_aspect("equal")
    ax.set_axis_off()


def state_graph_figure(a: Analysis, width: float):
    x, y = graph_layout(a)
    span_x = float(x.max() - x.min()) + 2 * (MAX_RADIUS + 0.15)
    span_y = max(float(y.max() - y.min()), 1.0) + 2 * (MAX_RADIUS + 0.15)
    fig = new_figure(width, max(1.2, min(width * span_y / span_x, 0.8 * width)))
    draw_state_graph(fig.add_subplot(), a)
    return fig


def state_graph_png(a: Analysis, width_px: int = 480) -> bytes:
    """A small PNG of the state graph (the dashboard's layout and colours), for artifacts."""
    with paper_style():
        fig = state_graph_figure(a, width_px / 100)
        return to_bytes(fig, "png", dpi=100)


def state_graph_data_uri(a: Analysis) -> str:
    return "data:image/png;base64," + base64.b64encode(state_graph_png(a)).decode()
