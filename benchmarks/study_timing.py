"""The paper's modular-addition study end to end, timed by stage: 40 seeds trained together (with
checkpoints every 100 epochs, all weights and two hookpoints captured), then metrics, HMM model
selection and the dashboard, through vt_core (no Prefect server needed).

    python benchmarks/study_timing.py [--epochs 16500] [--seeds 40] [--device auto] [--out DIR]
                                      [--group-size 40] [--precision fp32] [--compile none]

``--epochs`` below the paper's 16,500 gives a shorter run; the training time is then also
projected to 16,500 epochs (it is linear in epochs). The last line printed is one JSON object.
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

from vt_core.config.study_config import load_config  # noqa: E402
from vt_core.training.loop import resolve_device  # noqa: E402

PAPER_EPOCHS = 16_500


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=PAPER_EPOCHS)
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--group-size", default="auto")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--compile", default="none", help="training.compile: none, default, reduce-overhead, max-autotune")
    ap.add_argument("--every-epochs", type=int, default=100)
    ap.add_argument("--max-states", type=int, default=None)
    ap.add_argument("--covariance", default=None, help="override hmm.covariance (the paper's config: full)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--analysis-workers", type=int, default=1,
                    help="processes for metrics and HMM fits (the GPU runs in RESULTS.md used 1)")
    args = ap.parse_args()

    import torch

    from vt_core import stages
    from vt_core.report.dashboard import build_dashboard
    from vt_core.runtime import Runtime
    from vt_core.stages.train import train_group
    from vt_core.storage.study import prepare_study
    from vt_core.training.groups import resolve_group_size

    out = Path(args.out or tempfile.mkdtemp(prefix="vt-study-timing-"))
    shutil.rmtree(out, ignore_errors=True)
    base = load_config(ROOT / "examples" / "modular_addition.toml")
    d = base.model_dump(mode="json")
    d["seeds"] = list(range(args.seeds))
    d["output_dir"] = str(out)
    d["training"] |= {"epochs": args.epochs, "device": args.device, "precision": args.precision,
                      "compile": args.compile,
                      "seed_group_size": args.group_size if args.group_size == "auto" else int(args.group_size)}
    d["checkpoints"] = {"every_epochs": args.every_epochs}
    if args.max_states:
        d["hmm"]["max_states"] = args.max_states
    if args.covariance:
        d["hmm"]["covariance"] = args.covariance
    cfg = type(base).model_validate(d)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    size = resolve_group_size(cfg)
    study = prepare_study(cfg)
    times = {}

    t = time.perf_counter()
    summaries = []
    for i in range(0, args.seeds, size):
        summaries += train_group(study, cfg.seeds[i : i + size], runtime=Runtime.from_env())
    times["train_s"] = time.perf_counter() - t
    print(f"{name}: trained {args.seeds} seeds x {args.epochs} epochs in groups of {size}: "
          f"{times['train_s']:.1f} s ({args.seeds * args.epochs / times['train_s']:.0f} seed-epochs/s)", flush=True)
    t = time.perf_counter()
    res = stages.analyse(study, workers=args.analysis_workers)
    times["analyse_s"] = time.perf_counter() - t
    t = time.perf_counter()
    build_dashboard(study)
    times["dashboard_s"] = time.perf_counter() - t
    acc = np.array([s["final_test_accuracy"] for s in summaries], float)
    a = json.loads((study / "analysis.json").read_text())
    conv = [v for v in a["convergence_step"].values() if v is not None]
    result = {
        "device": name, "analysis_workers": args.analysis_workers, "seeds": args.seeds, "epochs": args.epochs,
        "group_size": size, "precision": args.precision, "compile": args.compile,
        "checkpoints_per_seed": summaries[0]["committed_steps"],
        "statuses": {s: sum(x["status"] == s for x in summaries) for s in {x["status"] for x in summaries}},
        **{k: round(v, 1) for k, v in times.items()},
        "total_s": round(sum(times.values()), 1),
        "seed_epochs_per_s": round(args.seeds * args.epochs / times["train_s"], 1),
        "train_projected_to_16500_epochs_min": round(times["train_s"] * PAPER_EPOCHS / args.epochs / 60, 1),
        "final_test_accuracy_median": round(float(np.median(acc)), 4),
        "seeds_past_threshold": len(conv), "chosen_k": res["chosen_k"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
