"""Capture overhead: training with vt's capture against the bare loop, side by side in one run.

The config is the demo's (sparse parity, MLP 40-1000-1, SGD, batch 32, 200 epochs, one seed,
torch on one thread as in the flow's tasks). The *bare* loop is vt's own Trainer with capture
switched off: the same steps and the same evaluation of loss and accuracy at each checkpoint, no
weights, no activations, no writes. *vt* is ``train_seed`` into a Zarr store: all weights at every
checkpoint, the activations of every hookpoint on the probe batch, the resume state, the commit.
Three cadences (every 1, 2 = the demo's, and 10 epochs); each figure is the best of ``--repeats``,
bare and vt runs interleaved.
Then the peak memory of a training process with 100 and with 1,000 checkpoints (VmHWM).

    python benchmarks/capture_overhead.py [--repeats 5] [--epochs 200] [--load N]

``--load N`` runs N CPU-bound processes beside it (benchmarks/load.py): a shared machine.

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load import cpu_load  # noqa: E402
from vt_core.config.study_config import load_config  # noqa: E402
from vt_core.stages.train import train_seed  # noqa: E402
from vt_core.storage.study import prepare_study  # noqa: E402
from vt_core.training.loop import Trainer  # noqa: E402

DEMO = ROOT / "examples" / "sparse_parity.toml"


def config(out: Path, epochs: int, checkpoints: dict, capture: bool):
    base = load_config(DEMO)
    hooks = {"activations": ["*"], "weights": ["*"], "probe_size": base.hooks.probe_size} if capture else \
        {"activations": [], "weights": [], "probe_size": base.hooks.probe_size}
    d = base.model_dump(mode="json") | {
        "seeds": [0], "output_dir": str(out), "training": {**base.training.model_dump(mode="json"), "epochs": epochs},
        "checkpoints": checkpoints, "hooks": hooks}
    return type(base).model_validate(d)


def bare(epochs: int, checkpoints: dict) -> float:
    t = time.perf_counter()  # both sides build their Trainer (data, model) inside the timing
    trainer = Trainer(config(Path("/nonexistent"), epochs, checkpoints, capture=False), 0)
    for _ in trainer.run():
        pass
    return time.perf_counter() - t


def captured(tmp: Path, epochs: int, checkpoints: dict) -> tuple[float, int]:
    out = tmp / f"study-{time.perf_counter_ns()}"
    study = prepare_study(config(out, epochs, checkpoints, capture=True))
    t = time.perf_counter()
    summary = train_seed(study, 0)
    elapsed = time.perf_counter() - t
    shutil.rmtree(out)
    return elapsed, summary["committed_steps"]


MEMORY_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
from pathlib import Path
from benchmarks.capture_overhead import config, vm_hwm_mb
from vt_core.storage.study import prepare_study
from vt_core.stages.train import train_seed
study = prepare_study(config(Path(sys.argv[2]), int(sys.argv[3]), {"every_steps": int(sys.argv[4])}, capture=True))
s = train_seed(study, 0)
print(json.dumps({"peak_rss_mb": vm_hwm_mb(), "checkpoints": s["committed_steps"]}))
"""


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_memory(tmp: Path, epochs: int, every_steps: int) -> dict:
    out = tmp / f"mem-{every_steps}"
    res = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(ROOT), str(out), str(epochs), str(every_steps)],
                         capture_output=True, text=True, check=True)
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--load", type=int, default=0, help="CPU-bound processes running beside the benchmark")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="vt-bench-capture-"))
    results = {}
    load = cpu_load(args.load)
    load.__enter__()
    try:
        for every in (1, 2, 10):
            sched = {"every_epochs": every}
            bares, runs = [], []
            for _ in range(args.repeats):  # interleaved, so that drift in the machine hits both sides
                bares.append(bare(args.epochs, sched))
                runs.append(captured(tmp, args.epochs, sched))
            b, v = min(bares), min(r[0] for r in runs)
            results[every] = {"bare_s": round(b, 3), "vt_s": round(v, 3), "ratio": round(v / b, 3),
                              "checkpoints": runs[0][1]}
            print(f"every {every:2d} epochs ({runs[0][1]} checkpoints): bare {b:.2f} s, vt {v:.2f} s, "
                  f"ratio {v / b:.3f}")
        steps = 32 * args.epochs  # 1000 / 32 -> 32 steps per epoch
        mem = {n: peak_memory(tmp, args.epochs, max(1, steps // n)) for n in (100, 1000)}
        for n, m in mem.items():
            print(f"{m['checkpoints']} checkpoints: peak RSS {m['peak_rss_mb']:.0f} MB")
    finally:
        load.__exit__(None, None, None)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({
        "load_processes": args.load, "loadavg_1min": round(os.getloadavg()[0], 2),
        "ratio": results[2]["ratio"], "baseline_s": results[2]["bare_s"], "vt_s": results[2]["vt_s"],
        "cadence_epochs": {str(k): v for k, v in results.items()},
        "peak_rss_mb_100": round(mem[100]["peak_rss_mb"], 1), "peak_rss_mb_1000": round(mem[1000]["peak_rss_mb"], 1),
        "checkpoints_mem": [mem[100]["checkpoints"], mem[1000]["checkpoints"]], "cpu_cores": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
