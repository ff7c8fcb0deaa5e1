"""The paper's CPU rows of Table 1, reproduced on demand (issue 33, item 7; not in CI, not in `make bench`:
tens of minutes on 2 cores).

Trains, with `vt run`, the paper's sparse parity at 40 seeds (the public code's settings: MLP 40 -> 1000
-> 1, SGD lr 0.1, wd 0.01, batch 32, hinge loss, 300 epochs, a checkpoint every 10) and a digits MLP at
the paper's MNIST settings (scikit-learn's digits stand in for MNIST, which cannot be downloaded here:
MLP 64 -> 800 -> 10, SGD with momentum, 30 epochs, log-spaced checkpoints, threshold 0.97), then
prints vt's k under every criterion (BIC, cross-validation by the one-standard-error rule, the
bootstrap's mode, the status they give together) beside the paper's Table 1, and the phases.

    python benchmarks/paper_table.py [--seeds 40] [--only sparse_parity|digits] [--out DIR] [--workers 2]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAPER_K = {"sparse_parity": 6, "digits": 6}  # Table 1 (digits stands in for MNIST: 6)

SETTINGS = {
    "sparse_parity": {
        "model": {"name": "mlp", "hidden": [1000], "activation": "relu"},
        "data": {"name": "sparse_parity", "n_bits": 40, "k": 3, "n_train": 1000, "n_test": 100},
        "optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": 0.01},
        "training": {"epochs": 300, "batch_size": 32, "loss": "hinge"},
        "checkpoints": {"every_epochs": 10},
        "hmm": {"max_states": 8, "restarts": 5, "covariance": "diag", "convergence_threshold": 0.9, "density_check": True},
    },
    "digits": {
        "model": {"name": "mlp", "hidden": [800], "activation": "relu"},
        "data": {"name": "digits"},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "training": {"epochs": 30, "batch_size": 128, "loss": "cross_entropy"},
        "checkpoints": {"log_spaced": 40},
        "hmm": {"max_states": 8, "restarts": 5, "covariance": "diag", "convergence_threshold": 0.97, "density_check": True},
    },
}


def _toml(name: str, seeds: int, out: Path) -> Path:
    from tests.helpers import write_toml

    d = {"name": name, "seeds": seeds, "output_dir": str(out / name), **SETTINGS[name]}
    return write_toml(d, out / f"{name}.toml")


def _row(name: str, study: Path, seconds: float) -> dict:
    from vt_core.analysis.records import load_analysis, load_selection

    a, sel = load_analysis(study), load_selection(study)
    boot = sel.get("bootstrap") or {}
    phases = a.get("phases") or {}
    return {"setting": name, "paper_k": PAPER_K[name], "bic_k": sel["chosen_k"], "cv_k": sel.get("cv_k"),
            "cv_best_k": sel.get("cv_best_k"), "bootstrap_mode": (sel.get("criteria") or {}).get("bootstrap"),
            "bootstrap": boot.get("k_distribution"), "status": sel["status"], "reasons": sel.get("reasons"),
            "k_tried": sel.get("k_tried"), "ordered_phases": phases.get("ordered"),
            "converged": sum(c is not None for c in a["convergence_step"].values()), "seeds": len(a["convergence_step"]),
            "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--only", choices=sorted(SETTINGS), default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "studies" / "paper_table")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in [args.only] if args.only else list(SETTINGS):
        cfg = _toml(name, args.seeds, args.out)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "flows.cli", "--quiet", "run", str(cfg), "--workers", str(args.workers)],
                       cwd=ROOT, check=True)
        rows.append(_row(name, args.out / name, time.perf_counter() - t0))
        r = rows[-1]
        print(f"{name}: paper k = {r['paper_k']}; vt BIC k = {r['bic_k']}, cross-validated k = {r['cv_k']} "
              f"(highest at {r['cv_best_k']}), bootstrap mode {r['bootstrap_mode']} ({r['bootstrap']}): "
              f"{r['status']}; {r['converged']}/{r['seeds']} seeds converge; {r['seconds']} s", flush=True)
        for reason in r["reasons"] or []:
            print(f"  {reason}", flush=True)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
