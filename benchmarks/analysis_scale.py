"""The analysis of the paper's modular-addition study at its full size, on this machine's CPUs.

40 seeds x 166 checkpoints (every 100 of 16,500 epochs) of the paper's 1-layer transformer
(``examples/modular_addition.toml``: 14 metrics, HMM k = 1..8 x 5 restarts, full covariance), the
stores written through ``RunStore`` with the model's real initialisation followed by a seeded
random walk (training them is a GPU job; the analysis reads only the stores). Timed: the metric
stage, the HMM grid and selection, and the dashboard, as ``vt analyze`` runs them without an
orchestrator (``stages.analyse``), in one process (baseline) and with ``--workers`` processes
(default: one per core), each from a fresh ``metrics.zarr``.

This is the part of the issue-8 study that runs after training; on the GPU box it runs on that
box's CPUs (16 cores on the lent H100 machine).

    python benchmarks/analysis_scale.py [--seeds 40] [--checkpoints 166] [--workers N]

The last line printed is one JSON object (``ratio``: N workers' time over one process's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.metrics_throughput import make_study  # noqa: E402
from vt_core import stages  # noqa: E402
from vt_core.config.study_config import load_config  # noqa: E402
from vt_core.report.dashboard import build_dashboard  # noqa: E402


def config(out: Path, seeds: int) -> dict:
    d = load_config(ROOT / "examples" / "modular_addition.toml").model_dump(mode="json")
    d["seeds"], d["output_dir"] = list(range(seeds)), str(out)
    d["training"] |= {"epochs": 1, "device": "cpu"}
    d["checkpoints"] = {"every_epochs": 1}
    d["hooks"]["activations"] = []  # the paper's metrics read weights only
    return d


def clear_analysis(study: Path) -> None:
    for p in study.iterdir():
        if p.name not in ("runs", "study.json", "config.toml", "config.json", ".lock"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def timed(study: Path, workers: int) -> dict:
    clear_analysis(study)
    t = time.perf_counter()
    res = stages.analyse(study, workers=workers)
    analyse_s = time.perf_counter() - t
    t = time.perf_counter()
    build_dashboard(study)
    dashboard_s = time.perf_counter() - t
    out = {"analyse_s": round(analyse_s, 1), "dashboard_s": round(dashboard_s, 1),
           "total_s": round(analyse_s + dashboard_s, 1), "chosen_k": res["chosen_k"],
           "metric_cells": res["metric_cells"], "stages_s": res["seconds"]}
    print(f"workers={workers}: analyse {analyse_s:.1f} s {res['seconds']}, dashboard {dashboard_s:.1f} s, "
          f"k={res['chosen_k']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--checkpoints", type=int, default=166)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=None,
                    help="keep the study here (default: a temporary folder); a study already there is reused")
    args = ap.parse_args()
    tmp = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="vt-bench-analysis-"))
    try:
        study = tmp / "study"
        if not (study / "study.json").exists():
            t = time.perf_counter()
            make_study(study, args.seeds, args.checkpoints, config(study, args.seeds))
            print(f"wrote {args.seeds} seeds x {args.checkpoints} checkpoints in {time.perf_counter() - t:.1f} s",
                  flush=True)
        one = timed(study, 1)
        many = timed(study, args.workers)
    finally:
        if not args.out:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"ratio": round(many["total_s"] / one["total_s"], 3), "baseline_s": one["total_s"],
                      "vt_s": many["total_s"], "workers": args.workers, "cpu_cores": os.cpu_count(),
                      "seeds": args.seeds, "checkpoints": args.checkpoints, "one_process": one,
                      "workers_run": many}))


if __name__ == "__main__":
    main()
