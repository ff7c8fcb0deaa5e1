"""States' colours and the state graph's static drawing, the same in the dashboard and the
artifacts: one palette per state, nodes placed left to right by mean first visit."""

from __future__ import annotations

import base64
import io

import numpy as np
from bokeh.palettes import Category10, Category20

NO_STATE = "#cccccc"


def state_palette(k: int) -> list[str]:
    """One categorical palette for states, the same in every view."""
    if k <= 10:
        return list(Category10[10][:k])
    return list(Category20[20][: min(k, 20)]) + ["#999999"] * max(0, k - 20)


def graph_layout(a: dict) -> tuple[np.ndarray, np.ndarray]:
    """Node positions: x = rank of the mean first-visit step, y alternating so edges stay apart."""
    states = a["states"]
    firsts = np.array([s["first_step_mean"] if s["first_step_mean"] is not None else np.inf for s in states], float)
    order = np.argsort(firsts, kind="stable")
    x = np.empty(len(states))
    x[order] = np.arange(len(states))
    y = np.where(x.astype(int) % 2 == 0, 0.35, -0.35)
    return x, y


def state_graph_png(a: dict, width: int = 480, height: int = 220) -> bytes:
    """A small PNG of the state graph (same layout and colours as the dashboard), for artifacts."""
    from PIL import Image, ImageDraw

    x, y = graph_layout(a)
    k = len(a["states"])
    colors = state_palette(a["chosen_k"])
    occ = np.array([s["occupancy"] for s in a["states"]])
    n_seeds = max([len(s["seeds"]) for s in a["states"]] + [e["n_seeds"] for e in a["graph"]["edges"]] + [1])
    sx = lambda v: 30 + (width - 60) * (v / max(k - 1, 1))  # noqa: E731
    sy = lambda v: height / 2 - v * height * 0.8  # noqa: E731
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    for e in a["graph"]["edges"]:
        if e["source"] == e["target"]:
            continue
        d.line([(sx(x[e["source"]]), sy(y[e["source"]])), (sx(x[e["target"]]), sy(y[e["target"]]))],
               fill=(120, 120, 120), width=int(1 + 6 * e["n_seeds"] / n_seeds))
    for i in range(k):
        r = 8 + 20 * np.sqrt(occ[i] / max(occ.max(), 1e-9))
        cx, cy = sx(x[i]), sy(y[i])
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colors[i], outline="black")
        d.text((cx, cy), str(i), fill="white", anchor="mm")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def state_graph_data_uri(a: dict) -> str:
    return "data:image/png;base64," + base64.b64encode(state_graph_png(a)).decode()
