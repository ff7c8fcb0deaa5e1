"""HMM model selection at the paper's scale: every fit the selection makes (k grid with restarts,
cross-validation over seed folds, bootstrap resamples), fanned out as Prefect tasks against one
sequential loop, in one run.

Data: 40 seeds x 166 checkpoints x 14 features sampled from a known 5-state left-to-right HMM,
full covariance (the paper's setting). Both runs are :mod:`vt_core.analysis.states` (prepare, fit, select,
extend, bootstrap, finalize) on their own copy of the input; the flow maps one task per fit on the
chosen task runner (a local Dask cluster of processes by default: hmmlearn holds the GIL for part
of each EM iteration). The two must agree: the same chosen k, status, bootstrap distribution and
decoded states, and BICs equal to a relative 1e-9 (runners differ in the last bits).

    python benchmarks/hmm_selection.py [--runner dask|threads] [--workers 2] [--seeds 40] [--bootstrap 20]

The last line printed is one JSON object with the figures.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # as `import tasks` does, before Prefect
os.environ.setdefault("DO_NOT_TRACK", "1")

from prefect import flow, task, unmapped  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from benchmarks.known_hmm import left_to_right  # noqa: E402
from flows.runners import make_task_runner  # noqa: E402
from vt_core.analysis import states  # noqa: E402
from vt_core.analysis.hmm import Sequences  # noqa: E402
from vt_core.config.study_config import HMMConfig  # noqa: E402


@task(name="bench-fit-hmm", cache_policy=NO_CACHE)
def fit_task(root: str, job: dict, cfg_json: dict) -> dict:
    return states.fit(root, job, HMMConfig.model_validate(cfg_json))


@flow(name="bench-hmm-selection")
def selection_flow(root: str, cfg_json: dict, jobs: list[dict]) -> list[dict]:
    cfg = HMMConfig.model_validate(cfg_json)
    rows = list(fit_task.map(unmapped(root), jobs, unmapped(cfg_json)).result())
    while True:  # as flows/study.py: extend while BIC is lowest at the edge, then bootstrap
        nxt = states.select(root, rows, cfg)
        more = nxt["extend_jobs"] or nxt["bootstrap_jobs"]
        if more:
            rows += fit_task.map(unmapped(root), more, unmapped(cfg_json)).result()
        if not nxt["extend_jobs"]:
            return rows


def run(root: Path, seqs: Sequences, cfg: HMMConfig, runner=None) -> tuple[float, dict, list]:
    t = time.perf_counter()
    jobs = states.prepare(root, seqs, cfg)["jobs"]
    if runner is None:
        rows = states.run_fits(root, jobs, cfg)
    else:
        rows = selection_flow.with_options(task_runner=runner)(str(root), cfg.model_dump(mode="json"), jobs)
    sel = states.finalize(root, rows, cfg)
    seconds = time.perf_counter() - t
    paths = json.loads((root / "hmm" / "paths.json").read_text())
    full = json.loads((root / "hmm" / "selection.json").read_text())
    return seconds, {"sel": sel, "boot": full["bootstrap"], "paths": paths}, rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runner", default="dask")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--checkpoints", type=int, default=166)
    ap.add_argument("--bootstrap", type=int, default=20)
    args = ap.parse_args()
    raw = left_to_right(args.seeds, args.checkpoints, 14, 5, seed=0)
    seqs = Sequences(list(range(args.seeds)), [np.arange(len(x)) * 10 for x in raw], raw, [f"m{i}" for i in range(14)])
    cfg = HMMConfig(covariance="full", bootstrap=args.bootstrap)
    tmp = Path(tempfile.mkdtemp(prefix="vt-bench-hmm-"))
    try:
        sequential_s, seq, seq_rows = run(tmp / "sequential", seqs, cfg)
        print(f"sequential loop over {len(seq_rows)} fits: {sequential_s:.1f} s; chosen k = {seq['sel']['chosen_k']} "
              f"({seq['sel']['status']}), bootstrap {seq['boot']['k_distribution']}")
        flow_s, par, par_rows = run(tmp / "flow", seqs, cfg, make_task_runner(args.runner, args.workers))
        print(f"Prefect flow, {args.runner} x {args.workers}: {flow_s:.1f} s (includes the flow's start-up)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert par["sel"]["chosen_k"] == seq["sel"]["chosen_k"] and par["sel"]["status"] == seq["sel"]["status"]
    assert par["boot"]["k_distribution"] == seq["boot"]["k_distribution"] and par["paths"] == seq["paths"]
    bic = {(r["kind"], r["index"], r["k"], r["restart"]): r["bic"] for r in seq_rows}
    diffs = [abs(r["bic"] - bic[(r["kind"], r["index"], r["k"], r["restart"])]) / abs(r["bic"])
             for r in par_rows if r["bic"] is not None]
    assert max(diffs) < 1e-9, f"BICs differ by up to {max(diffs):.2g} relative"
    print(f"same choice, bootstrap and decoded states; BICs agree to {max(diffs):.1g} relative")
    print(json.dumps({"ratio": round(sequential_s / flow_s, 2), "baseline_s": round(sequential_s, 2),
                      "vt_s": round(flow_s, 2), "runner": args.runner, "workers": args.workers,
                      "fits": len(par_rows), "seeds": args.seeds, "checkpoints": args.checkpoints,
                      "chosen_k": par["sel"]["chosen_k"], "status": par["sel"]["status"],
                      "bootstrap_k": par["boot"]["k_distribution"], "max_rel_bic_diff": max(diffs),
                      "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
