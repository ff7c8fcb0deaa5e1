"""What verifying a study costs, against the analysis it protects, on the paper-size study.

The study of ``benchmarks/analysis_scale.py`` (40 seeds x 166 checkpoints of the paper's modular-
addition transformer, written through ``RunStore``). Timed in one run:

- baseline: the analysis without an orchestrator (``stages.analyse``, one process, from a fresh
  metrics.zarr), as ``vt analyze`` runs it;
- ``full``: what ``vt run`` does before it reuses anything: every seed's store read back in full
  with its checksums (``store_problems(read=True)``) plus metrics.zarr and the analysis files
  (``check_derived``), i.e. what ``vt validate STUDY`` reads;
- ``cheap``: the check without reading chunks (attributes, metadata, every chunk present, resume
  trailers).

    python benchmarks/verification_cost.py [--seeds 40] [--checkpoints 166]

The last line printed is one JSON object (``ratio``: the full verification's time over the analysis's).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.analysis_scale import clear_analysis, config  # noqa: E402
from benchmarks.metrics_throughput import make_study  # noqa: E402
from vt_core import stages  # noqa: E402
from vt_core.storage.output_integrity import check_derived  # noqa: E402
from vt_core.storage.study import load_study, store_problems  # noqa: E402


def verify(study: Path, read: bool) -> tuple[float, int]:
    t = time.perf_counter()
    cfg = load_study(study)
    problems = [p for s in cfg.seeds for p in store_problems(study, s, cfg, read=read)]
    if read:
        problems += check_derived(study)
    return time.perf_counter() - t, len(problems)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--checkpoints", type=int, default=166)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vt-bench-verify-"))
    try:
        study = tmp / "study"
        make_study(study, args.seeds, args.checkpoints, config(study, args.seeds))
        nbytes = sum(p.stat().st_size for p in (study / "runs").rglob("*") if p.is_file())
        clear_analysis(study)
        t = time.perf_counter()
        stages.analyse(study, workers=1)
        analyse_s = time.perf_counter() - t
        full_s, n_full = verify(study, read=True)
        cheap_s, n_cheap = verify(study, read=False)
        print(f"analysis {analyse_s:.1f} s; full verification {full_s:.1f} s ({nbytes / 1e9:.2f} GB of stores, "
              f"{n_full} problems); cheap check {cheap_s:.2f} s", flush=True)
        if n_full or n_cheap:
            raise SystemExit("an intact study was reported damaged")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"ratio": round(full_s / analyse_s, 3), "baseline_s": round(analyse_s, 1),
                      "vt_s": round(full_s, 1), "cheap_check_s": round(cheap_s, 2),
                      "cheap_ratio": round(cheap_s / analyse_s, 4), "store_gb": round(nbytes / 1e9, 3),
                      "seeds": args.seeds, "checkpoints": args.checkpoints}))


if __name__ == "__main__":
    main()
