"""HMM fits at the paper's scale: vt's GaussianHMM (E-step batched over sequences) against
hmmlearn's GaussianHMM, the same fits side by side.

Data: 40 seeds x 166 checkpoints x 14 features (the paper's modular-addition study: checkpoints
every 100 of 16,500 epochs, 14 metrics) sampled from a known 6-state left-to-right HMM,
standardised; 32 seeds train, 8 are held out. Grid: k = 1..8, ``--restarts`` each, full
covariance, n_iter 200, tol 1e-3 (the paper's settings). Each (k, restart) is fitted by both
implementations back to back, so both see the same machine load.

    python benchmarks/hmm_estep.py [--restarts 1] [--max-k 8]

The last line printed is one JSON object (``ratio``: vt's time over hmmlearn's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hmmlearn.hmm import GaussianHMM as Reference  # noqa: E402

from benchmarks.known_hmm import left_to_right  # noqa: E402
from vt_core.analysis import hmm  # noqa: E402


def fit(cls, X, lengths, k, seed):
    model = cls(n_components=k, covariance_type="full", n_iter=200, tol=1e-3, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        model.fit(X, lengths)
        elapsed = time.perf_counter() - start
    return elapsed, model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--restarts", type=int, default=1)
    ap.add_argument("--max-k", type=int, default=8)
    args = ap.parse_args()
    seqs = left_to_right(n_seqs=40, T=166, F=14, k=6, seed=0)
    X = np.concatenate(seqs)
    X = (X - X.mean(0)) / X.std(0)
    train = X[: 32 * 166]
    lengths = [166] * 32
    times = {"hmmlearn": 0.0, "vt": 0.0}
    bic = {"hmmlearn": {}, "vt": {}}
    iters_equal, max_rel_ll = True, 0.0
    for k in range(1, args.max_k + 1):
        for r in range(args.restarts):
            seed = 1000 * k + r
            t_ref, ref = fit(Reference, train, lengths, k, seed)
            t_vt, ours = fit(hmm.GaussianHMM, train, lengths, k, seed)
            times["hmmlearn"] += t_ref
            times["vt"] += t_vt
            iters_equal &= ref.monitor_.iter == ours.monitor_.iter
            ll_ref, ll_vt = ref.score(train, lengths), ours.score(train, lengths)
            max_rel_ll = max(max_rel_ll, abs(ll_vt - ll_ref) / abs(ll_ref))
            for name, m in (("hmmlearn", ref), ("vt", ours)):
                b = m.bic(train, lengths)
                bic[name][k] = min(bic[name].get(k, np.inf), b)
            print(f"k={k} restart={r}: hmmlearn {t_ref:6.2f} s ({ref.monitor_.iter} it), "
                  f"vt {t_vt:6.2f} s ({ours.monitor_.iter} it)")
    chosen = {name: min(b, key=b.get) for name, b in bic.items()}
    print(f"total: hmmlearn {times['hmmlearn']:.1f} s, vt {times['vt']:.1f} s "
          f"({times['hmmlearn'] / times['vt']:.1f}x faster); chosen k {chosen}")
    print(json.dumps({"ratio": round(times["vt"] / times["hmmlearn"], 3), "baseline_s": round(times["hmmlearn"], 2),
                      "vt_s": round(times["vt"], 2), "fits": args.max_k * args.restarts,
                      "chosen_k": chosen, "same_iterations": bool(iters_equal),
                      "max_rel_loglik_diff": float(f"{max_rel_ll:.2e}"), "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
