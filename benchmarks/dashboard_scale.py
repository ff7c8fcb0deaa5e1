"""Dashboard at scale: 100 seeds x 1,000 checkpoints, built and loaded in headless Chromium.

The analysis outputs are synthetic (states sampled from a left-to-right HMM, 14 metrics that
drift with the state), shaped exactly as ``vt analyze`` writes them, and rendered by the same
code as ``vt dashboard``. Measured: build time, HTML size, and the time from navigation until
Bokeh's document is idle and the time to redraw every seed's curve of another metric, for the
thinned page (vt's default, at most 300 checkpoints per seed
curve) and, as the baseline, for every checkpoint drawn.

    python benchmarks/dashboard_scale.py [--seeds 100] [--checkpoints 1000]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vt_core.report.dashboard import render  # noqa: E402

METRICS = ["l1", "l2", "trace", "spectral", "code_sparsity", "computational_sparsity", "mean_singular_value",
           "var_singular_value", "mean_w", "median_w", "var_w", "mean_b", "median_b", "var_b"]


def synthetic(n_seeds: int, n_ckpts: int, k: int = 6, seed: int = 0):
    """(analysis, selection, paths, value) as the analysis stages write them. Every third seed skips
    state 1 (a second path through the graph); a seed converges when it reaches state k - 2."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n_ckpts) * 10
    paths, value = {}, np.empty((n_seeds, n_ckpts, len(METRICS)), np.float32)
    level = rng.normal(size=(k, len(METRICS)))
    for s in range(n_seeds):
        states, cur = [], 0
        for _ in range(n_ckpts):
            if cur < k - 1 and rng.random() < k / n_ckpts:
                cur += 2 if (cur == 0 and s % 3 == 0) else 1
            states.append(cur)
        paths[str(s)] = {"steps": steps.tolist(), "states": states}
        value[s] = level[states] + 0.1 * rng.normal(size=(n_ckpts, len(METRICS)))
    da = xr.DataArray(value, dims=("seed", "step", "metric"),
                      coords={"seed": np.arange(n_seeds), "step": steps, "metric": METRICS})
    flat = np.concatenate([p["states"] for p in paths.values()])
    firsts = {i: [steps[p["states"].index(i)] for p in paths.values() if i in p["states"]] for i in range(k)}
    states = [{"state": i, "occupancy": float(np.mean(flat == i)),
               "seeds": [int(s) for s, p in paths.items() if i in p["states"]],
               "first_step_mean": float(np.mean(firsts[i])) if firsts[i] else None,
               "step_min": 0, "step_max": int(steps[-1]), "stability": 0.9,
               "means": {m: float(level[i, j]) for j, m in enumerate(METRICS)}} for i in range(k)]
    taken: dict[tuple[int, int], dict[str, int]] = {}
    for s, p in paths.items():
        st = p["states"]
        for t in np.flatnonzero(np.diff(st)):
            taken.setdefault((st[t], st[t + 1]), {})[s] = int(steps[t + 1])
    edges = [{"source": i, "target": j, "prob": 0.01, "n_seeds": len(w), "seeds": sorted(map(int, w))}
             for (i, j), w in sorted(taken.items())]
    feats = [{"feature": m, "mean_abs_gradient": 1.0 / (n + 1), "z_mean_change": 0.5, "sd_change": 2.0 - n / 4,
              "raw_mean_change": 0.1} for n, m in enumerate(METRICS[:5])]
    transitions = [{"from": e["source"], "to": e["target"], "prob": 0.01, "n_seeds": e["n_seeds"],
                    "seeds": e["seeds"], "first_step": taken[(e["source"], e["target"])], "top_features": feats,
                    "top_by_sd_change": feats[::-1]} for e in edges]
    conv = {s: next((int(steps[t]) for t, v in enumerate(p["states"]) if v >= k - 2), None) for s, p in paths.items()}
    a = {"chosen_k": k, "features": METRICS, "states": states, "graph": {"edges": edges},
         "transitions": transitions, "convergence_step": conv, "convergence_threshold": 0.9,
         "detour_states": [], "selection": {"bic_weight": 0.9}}
    sel = {"chosen_k": k, "status": "decided",
           "table": [{"k": j, "n_ok": 5, "status": "ok", "bic": 1000.0 / j + 10 * j, "aic": 900.0 / j + 8 * j,
                      "bic_min": 1000.0 / j + 10 * j, "bic_max": 1000.0 / j + 12 * j,
                      "heldout_ll": -100.0 / j} for j in range(1, 11)]
           + [{"k": 11, "status": "infeasible", "n_ok": 0, "failures": ["more free parameters than observations"]}],
           "bootstrap": {"n": 20, "k_distribution": {str(k - 1): 0.15, str(k): 0.8, str(k + 1): 0.05},
                         "k_interval": [k - 1, k + 1]}}
    return a, sel, paths, da


SWITCH = """
(async () => {
  const d = Bokeh.documents[0];
  d.get_model_by_name('seed-select').value = 'all seeds';
  d.get_model_by_name('metric-select').value = 'l2';
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return true;
})()
"""


def load_time(html_path: Path) -> tuple[float, float, list[str]]:
    """Seconds until Bokeh is idle; seconds to show every seed's curve of another metric."""
    from tests.browser import BOKEH_READY, Chromium

    with Chromium() as browser:
        t = time.perf_counter()
        page = browser.open(html_path)
        page.wait_for(BOKEH_READY, timeout=300, interval=0.05)
        load = time.perf_counter() - t
        t = time.perf_counter()
        page.evaluate(SWITCH)
        switch = time.perf_counter() - t
        page.screenshot(html_path.with_suffix(".png"))
        return load, switch, page.errors


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--checkpoints", type=int, default=1000)
    args = ap.parse_args()
    a, sel, paths, value = synthetic(args.seeds, args.checkpoints)
    out, tmp = {}, Path(tempfile.mkdtemp(prefix="vt-bench-dash-"))
    for label, max_points in (("vt", 300), ("baseline", args.checkpoints + 1)):
        t = time.perf_counter()
        text = render("scale", "synthetic", a, sel, paths, value, max_points=max_points)
        build = time.perf_counter() - t
        path = tmp / f"{label}.html"
        path.write_text(text, encoding="utf-8")
        load, switch, errors = load_time(path)
        out[label] = {"build_s": round(build, 2), "html_mb": round(path.stat().st_size / 1e6, 2),
                      "load_s": round(load, 2), "all_seeds_switch_s": round(switch, 2), "console_errors": len(errors)}
        print(f"{label}: build {build:.2f} s, HTML {out[label]['html_mb']} MB, load {load:.2f} s, "
              f"switch to all seeds {switch:.2f} s, errors {errors}; screenshot {path.with_suffix('.png')}")
    print(json.dumps({"ratio": round(out["baseline"]["load_s"] / out["vt"]["load_s"], 2),
                      "baseline_s": out["baseline"]["load_s"], "vt_s": out["vt"]["load_s"],
                      "seeds": args.seeds, "checkpoints": args.checkpoints, **{k: v for k, v in out.items()},
                      "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
