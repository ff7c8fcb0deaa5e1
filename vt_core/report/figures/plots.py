"""Paper figures from a study's outputs: the state timeline, metric curves by state, model
selection with the bootstrap distribution of k, and the convergence regression behind detours.
Each function takes :class:`vt_core.report.outputs.Outputs` and returns a matplotlib Figure."""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from vt_core.analysis.detours import time_before
from vt_core.analysis.records import Selection
from vt_core.report.figures.style import ONE_COLUMN, TWO_COLUMN, new_figure
from vt_core.report.labels import THRESHOLD_METRIC, axis_label
from vt_core.report.narrative import NO_BOOTSTRAP
from vt_core.report.outputs import Outputs, band, modal_state, path_groups, path_text, segments, state_grid
from vt_core.report.palette import NO_STATE, state_palette

MAX_CURVE_PANELS = 9
LABELLED_UP_TO = 40


def timeline(out: Outputs):
    """One row per seed, grouped by the path of states taken (commonest first), by convergence
    step within a group; a black tick where held-out accuracy passes the threshold."""
    a, paths = out.analysis, out.paths
    conv = {str(k): v for k, v in a["convergence_step"].items()}
    colors = state_palette(a["chosen_k"])
    groups = path_groups(paths, conv)
    order = [s for _, members in groups for s in members]
    fig = new_figure(TWO_COLUMN, min(7.5, 1.5 + 0.11 * len(order)))
    ax = fig.add_subplot()
    for row, seed in enumerate(order):
        segs = segments(np.asarray(paths[seed]["steps"], float), np.asarray(paths[seed]["states"], int))
        ax.broken_barh([(s0, s1 - s0) for s0, s1, _ in segs], (row - 0.45, 0.9),
                       facecolors=[colors[s] for _, _, s in segs], linewidth=0)
        if (at := conv.get(seed)) is not None:
            ax.plot([at] * 2, [row - 0.45, row + 0.45], color="black", linewidth=1.4)
    start = 0
    for path, members in groups:
        if start:
            ax.axhline(start - 0.5, color="white", linewidth=1.5)
        ax.text(0.005, start - 0.45, f"{path_text(path)} ({len(members)} seeds)", transform=ax.get_yaxis_transform(),
                va="top", fontsize=6, bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0, "pad": 1})
        start += len(members)
    ax.set_ylim(len(order) - 0.5, -0.5)
    if len(order) <= LABELLED_UP_TO:
        ax.set_yticks(range(len(order)), order, fontsize=6)
    else:
        ax.set_yticks([])
    ax.set_ylabel("seed")
    ax.set_xlabel("step")
    ax.margins(x=0)
    ax.set_title("Decoded state per seed, grouped by path, by convergence step within a group", loc="left")
    fig.legend(handles=[Patch(color=c, label=f"state {i}") for i, c in enumerate(colors)]
               + [Line2D([], [], color="black", linewidth=1.4,
                         label=f"held-out accuracy reaches {a.get('convergence_threshold', 'the threshold')}")],
               loc="outside lower center", ncol=min(a["chosen_k"] + 1, 9))
    return fig


def _log_x(steps: np.ndarray) -> bool:
    """Checkpoints spaced over orders of magnitude (log_spaced schedules) are drawn on log x."""
    gaps = np.diff(np.unique(steps))
    return len(gaps) > 2 and gaps.max() / max(gaps.min(), 1e-9) > 50


def _curve_panel(ax, out: Outputs, metric: str, modal: np.ndarray, colors: list[str], log: bool) -> None:
    steps = out.value["step"].values.astype(float) + (1 if log else 0)
    b = band(out.value, metric)
    c = [colors[s] if s >= 0 else NO_STATE for s in modal]
    for s0, s1, _ in segments(np.arange(len(steps), dtype=float), modal):  # the band, a run of one modal state
        i, j = int(s0), min(int(s1), len(steps) - 1)
        ax.fill_between(steps[i:j + 1], b["lo"][i:j + 1], b["hi"][i:j + 1], color=c[i], alpha=0.3, linewidth=0)
    pts = np.column_stack([steps, b["mean"]])
    ax.add_collection(LineCollection(list(np.stack([pts[:-1], pts[1:]], axis=1)), colors=c[:-1], linewidths=1.6))
    ax.autoscale_view()
    threshold = out.analysis.get("convergence_threshold")
    if metric == THRESHOLD_METRIC and threshold is not None:
        ax.axhline(threshold, color="#b00020", linestyle="--", linewidth=0.8)
        ax.text(0.01, threshold, f" threshold {threshold}", transform=ax.get_yaxis_transform(), color="#b00020",
                fontsize=6, va="bottom")
    if log:
        ax.set_xscale("log")
    ax.set_title(metric, loc="left", fontsize=7.5)
    ax.set_ylabel("\n".join(textwrap.wrap(axis_label(metric), 28)), fontsize=6.5)


def curves(out: Outputs):
    """The HMM's features against step: mean over seeds and the 10-90% band, coloured by the state
    most seeds are in."""
    metrics = [str(m) for m in out.value["metric"].values]
    feats = [f for f in out.analysis["features"] if f in metrics][:MAX_CURVE_PANELS] or metrics[:MAX_CURVE_PANELS]
    colors = state_palette(out.analysis["chosen_k"])
    modal = modal_state(state_grid(out.value, out.paths))
    log = _log_x(out.value["step"].values)
    ncol = 3 if len(feats) > 4 else 2
    nrow = int(np.ceil(len(feats) / ncol))
    fig = new_figure(TWO_COLUMN, 0.4 + 1.55 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True)
    for ax, metric in zip(axes.flat, feats):
        _curve_panel(ax, out, metric, modal, colors, log)
    for ax in list(axes.flat)[len(feats):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("step + 1 (log scale)" if log else "step")
    handles = [Patch(color=c, label=f"state {i}") for i, c in enumerate(colors)]
    handles.append(Patch(color="#888888", alpha=0.3, label="10–90% of seeds"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 7))
    fig.suptitle(f"Features over training: mean of {out.value.sizes['seed']} seeds, coloured by the modal state",
                 fontsize=8.5, x=0.01, ha="left")
    return fig


def _boot(ax, sel: Selection) -> None:
    boot = sel.get("bootstrap") or {}
    dist = {int(k): v for k, v in (boot.get("k_distribution") or {}).items()}
    ax.bar(list(dist), list(dist.values()), width=0.6,
           color=["#333333" if k == sel["chosen_k"] else "#999999" for k in dist])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of\nresamples")
    if not boot.get("n"):
        ax.text(0.5, 0.5, NO_BOOTSTRAP.replace(": ", ":\n"), transform=ax.transAxes, ha="center", fontsize=6.5)
    ax.set_xlabel("k (states)")


def selection(out: Outputs):
    """BIC and AIC against k (BIC's spread over restarts as a bar), the held-out log-likelihood on
    the right axis, k not fitted marked with why, the chosen k, and the bootstrap distribution of k."""
    sel = out.selection
    rows = [t for t in sel["table"] if t.get("n_ok")]
    bad = [t for t in sel["table"] if not t.get("n_ok")]
    fig = new_figure(ONE_COLUMN, 3.0)
    ax, bx = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    k = np.array([t["k"] for t in rows])
    bic = np.array([t["bic"] for t in rows])
    ax.errorbar(k, bic, yerr=[bic - [t.get("bic_min", t["bic"]) for t in rows],
                              np.array([t.get("bic_max", t["bic"]) for t in rows]) - bic],
                color="#0072b2", marker="o", markersize=3, capsize=2, label="BIC")
    ax.plot(k, [t["aic"] for t in rows], color="#e69f00", linestyle="--", label="AIC")
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + 0.6 * (hi - lo))  # room for the legend above the data
    ax.set_ylabel("BIC / AIC (lower is better)")
    held = [t.get("heldout_ll") for t in rows]
    handles = ax.get_legend_handles_labels()[0]
    if any(h is not None for h in held):
        tx = ax.twinx()
        tx.spines["right"].set_visible(True)
        tx.plot(k, [np.nan if h is None else h for h in held], color="#009e73", marker="s", markersize=3,
                label="held-out log L")
        lo, hi = tx.get_ylim()
        tx.set_ylim(lo, hi + 0.6 * (hi - lo))
        tx.set_ylabel("held-out log L (higher is better)")
        handles += tx.get_legend_handles_labels()[0]
    for t in bad:
        ax.plot([t["k"]], [0.04], transform=ax.get_xaxis_transform(), marker="x", color="#cc3311", markersize=5)
        ax.text(t["k"], 0.1, t.get("status") or "failed", transform=ax.get_xaxis_transform(), ha="center",
                fontsize=5.5, color="#cc3311", rotation=90, va="bottom")
    if bad:
        handles.append(Line2D([], [], color="#cc3311", marker="x", linestyle="", label="not fitted"))
    chosen = sel["chosen_k"]
    for a_ in (ax, bx):
        a_.axvline(chosen, color="black", linestyle=":", linewidth=1)
    status = " (undetermined)" if sel.get("status") == "undetermined" else ""
    ax.set_title(f"Model selection: chosen k = {chosen}{status}", loc="left")
    ax.legend(handles=handles, loc="upper right", ncol=2)
    _boot(bx, sel)
    bx.xaxis.set_major_locator(MaxNLocator(integer=True))
    bx.set_xticks(sorted(t["k"] for t in sel["table"]))
    return fig


def _conv_steps(out: Outputs) -> dict[str, float]:
    return {str(s): float(c) for s, c in out.analysis["convergence_step"].items() if c is not None}


def _time_before_convergence(out: Outputs, conv: dict, colors: list[str], conclusion: str):
    """With no optional state there is no regression to draw: instead, where each converged seed's
    steps before convergence went, state by state (stacked, seeds by convergence step), so that a
    reader sees every seed pass through the same states and which of them take the time; the
    regression's conclusion as a caption. No seed converged: nothing but the conclusion."""
    k = out.analysis["chosen_k"]
    seeds = sorted((c, seed) for seed, c in conv.items() if out.paths.get(seed))
    fig = new_figure(ONE_COLUMN, 1.2 + 0.12 * min(len(seeds), 40))
    ax = fig.add_subplot()
    left = np.zeros(len(seeds))
    for s in range(k):
        width = np.array([time_before(out.paths[seed]["states"], out.paths[seed]["steps"], int(c), k)[s]
                          for c, seed in seeds], dtype=float)
        if width.any():
            ax.barh(range(len(seeds)), width, left=left, color=colors[s], height=0.8, label=f"state {s}")
        left += width
    ax.set_yticks(range(len(seeds)), [f"seed {seed}" for _, seed in seeds] if len(seeds) <= 12 else [])
    ax.set_xlabel("steps before converging, by state")
    ax.set_title("Where the steps before convergence go", loc="left")
    if seeds:
        fig.legend(loc="outside upper right", fontsize=5.5, ncol=min(k, 4), frameon=False)
    fig.supxlabel("\n".join(textwrap.wrap(conclusion, 80)), fontsize=5.5, x=0.02, ha="left")
    return fig


def regression(out: Outputs):
    """Convergence step against the steps each converged seed spent in every optional state before
    converging, with the fitted slope, and each coefficient's 95% bootstrap interval (the detour
    test); with no optional state, :func:`_time_before_convergence`."""
    a = out.analysis
    reg = a.get("regression") or {}
    conv = _conv_steps(out)
    colors = state_palette(a["chosen_k"])
    optional = [int(s) for s in reg.get("states") or []]
    if not optional:
        return _time_before_convergence(out, conv, colors, reg.get("conclusion") or "no detour analysis")
    fig = new_figure(TWO_COLUMN, 2.4)
    ax, cx = fig.subplots(1, 2, width_ratios=[2, 1])
    for s in optional:
        xs, ys = [], []
        for seed, c in conv.items():
            d = out.paths.get(seed)
            if d:
                xs.append(time_before(d["states"], d["steps"], int(c), a["chosen_k"])[s])
                ys.append(c)
        ax.scatter(xs, ys, s=9, color=colors[s], label=f"state {s}", alpha=0.85)
        coef = (reg.get("coefficients") or {}).get(str(s))
        if coef is not None and xs:
            x0 = np.array([0, max(xs)])
            ax.plot(x0, np.mean(ys) + coef * (x0 - np.mean(xs)), color=colors[s], linewidth=1)
    ax.set_xlabel("steps spent in the state before converging")
    ax.set_ylabel("convergence step")
    ax.legend(loc="best")
    ax.set_title("Convergence against time in optional states", loc="left")
    intervals = reg.get("intervals") or {}
    for i, s in enumerate(optional):
        coef = (reg.get("coefficients") or {}).get(str(s))
        if coef is None:
            continue
        lo, hi = intervals.get(str(s)) or (coef, coef)  # a coefficient without an interval: a point
        cx.errorbar([coef], [i], xerr=[[coef - lo], [hi - coef]], fmt="o", color=colors[s], capsize=2)
    cx.axvline(0, color="black", linewidth=0.6)
    cx.set_yticks(range(len(optional)), [f"state {s}" for s in optional])
    cx.set_xlabel("delay per step (95% interval)")
    cx.set_title("detour: interval above 0" if reg.get("determined") else "too few seeds to decide", loc="left")
    return fig
