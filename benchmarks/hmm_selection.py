"""HMM model selection: the k x restart grid fanned out by a Prefect flow against a sequential loop.

Data: 8 seeds x 200 checkpoints x 14 features sampled from a known 5-state left-to-right HMM
(standardised globally). Grid: k = 1..10, 5 restarts, diagonal covariance. The same
``vt_core.hmm.fit_one`` runs in both; the flow maps one Prefect task per (k, restart) on the
chosen task runner (threads, or a local Dask cluster of processes: hmmlearn holds the GIL for
part of each EM iteration, so processes scale better on CPUs).

    python benchmarks/hmm_selection.py [--runner dask|threads] [--workers 2] [--max-k 10] [--restarts 5]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefect import flow, task, unmapped  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

import tasks  # noqa: E402,F401  (analytics off)
from benchmarks.known_hmm import left_to_right  # noqa: E402
from flows.runners import make_task_runner  # noqa: E402
from vt_core import hmm  # noqa: E402
from vt_core.config import HMMConfig  # noqa: E402


def sample(n_seeds=8, T=200, F=14, k=5, seed=0) -> list[np.ndarray]:
    raw = left_to_right(n_seeds, T, F, k, seed)
    # standardised together: per-seed z-scoring inflates k when seeds spend different times in
    # states (tests/core/test_hmm.py::test_per_seed_zscoring_inflates_k)
    allx = np.concatenate(raw)
    return [(x - allx.mean(0)) / allx.std(0) for x in raw]


@task(name="bench-fit-hmm", cache_policy=NO_CACHE)
def fit_task(train, held, k, restart, cfg_json):
    return hmm.fit_one(train, held, k, restart, HMMConfig.model_validate(cfg_json))


@flow(name="bench-hmm-grid")
def grid_flow(train, held, grid, cfg_json):
    futures = fit_task.map(unmapped(train), unmapped(held), [k for k, _ in grid], [r for _, r in grid],
                           unmapped(cfg_json))
    return futures.result()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runner", default="dask")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-k", type=int, default=10)
    ap.add_argument("--restarts", type=int, default=5)
    args = ap.parse_args()
    seqs = sample()
    train, held = seqs[:6], seqs[6:]
    cfg = HMMConfig(max_states=args.max_k, restarts=args.restarts, covariance="diag")
    grid = [(k, r) for k in range(1, args.max_k + 1) for r in range(args.restarts)]

    t = time.perf_counter()
    seq = [hmm.fit_one(train, held, k, r, cfg) for k, r in grid]
    sequential_s = time.perf_counter() - t
    print(f"sequential loop over {len(grid)} fits: {sequential_s:.1f} s")

    runner = make_task_runner(args.runner, args.workers)
    t = time.perf_counter()
    par = grid_flow.with_options(task_runner=runner)(train, held, grid, cfg.model_dump(mode="json"))
    flow_s = time.perf_counter() - t
    print(f"Prefect flow, {args.runner} x {args.workers}: {flow_s:.1f} s (includes the flow's start-up)")
    assert [(r["k"], r["restart"], r["status"], r["bic"]) for r in seq] == \
        [(r["k"], r["restart"], r["status"], r["bic"]) for r in par], "parallel fits differ from sequential ones"
    _, chosen = hmm.selection_table(par)
    print(f"chosen k = {chosen} (true 5); {sum(r['status'] == 'ok' for r in par)}/{len(par)} fits ok")
    print(json.dumps({"ratio": round(sequential_s / flow_s, 2), "baseline_s": round(sequential_s, 2),
                      "vt_s": round(flow_s, 2), "runner": args.runner, "workers": args.workers,
                      "fits": len(grid), "chosen_k": chosen, "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
