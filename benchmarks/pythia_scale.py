"""A PolyPythia-shaped checkpoint series through vt (issue 31): memory, metric throughput, workers.

Writes a GPT-NeoX series at a Pythia size (`benchmarks/pythia_series.py`: sharded Hugging Face
saves, float32), then, each in a fresh process:

1. **memory**: `vt import`'s stages (plan, every seed's checkpoints committed with their metrics
   computed as they come in) — peak resident memory over the process's baseline after its imports,
   divided by one checkpoint's size;
2. **kernels**: the same study's weight metrics by the lazy kernels as they ran before this issue
   (`seed_metrics(...).compute()`, dask's threads over the machine's cores) and by the streamed ones
   (`vt_core.metrics.stream`, one thread): GB of weights per CPU-second (user + system time of the
   process: per core, whatever the threads), and the largest difference between them;
3. **workers**: the streamed metric tasks of the series (one per seed x block of checkpoints) on a
   local Dask cluster of 1 and of 2 single-threaded worker processes.

    python benchmarks/pythia_scale.py [--size 70m] [--seeds 2] [--checkpoints 4] [--out DIR] [--keep]

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SINGLE = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(code: str, *args: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args, str(ROOT)], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=False)
    if out.returncode:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


IMPORT_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[-1])
from benchmarks.pythia_scale import vm_hwm_mb
from vt_core.stages import import_checkpoints as imp
from vt_core.stages.metrics import finalize_metrics, plan_metrics
import vt_core.metrics.stream, vt_core.metrics.store, safetensors.torch, zarr  # the process's baseline
source, study = sys.argv[1], sys.argv[2]
base = vm_hwm_mb()
t = time.perf_counter()
plan = imp.plan_import(source, study, "seed{seed}/step{step}")
seeds = sorted(int(s) for s in plan["seeds"])
for s in seeds:
    imp.import_seed(study, s, plan["seeds"][str(s)], plan["probe"], limit=1)
steps = sorted({int(c[0]) for s in seeds for c in plan["seeds"][str(s)]})
mplan = plan_metrics(study, seeds, steps)
with_metrics = sys.argv[3] == "metrics"
counts = [imp.import_seed(study, s, plan["seeds"][str(s)], plan["probe"], metrics=mplan if with_metrics else None)
          .get("metrics") or {"computed": 0, "reused": 0, "why": {}, "damaged": {}} for s in seeds]
if with_metrics:
    finalize_metrics(study, mplan, counts)
print(json.dumps({"peak_mb": vm_hwm_mb() - base, "baseline_mb": base, "seconds": time.perf_counter() - t,
                  "cells": sum(c["computed"] for c in counts)}))
"""

KERNELS_CHILD = """
import json, os, sys, time
sys.path.insert(0, sys.argv[-1])
import numpy as np
from vt_core.metrics.compute import seed_metrics
from vt_core.metrics import stream
from vt_core.names import PAPER_METRICS
from vt_core.storage.handle import Study
study, how = Study.open(sys.argv[1]), sys.argv[2]
names = list(PAPER_METRICS)
if how == "nosv":  # what a GPU leaves on the CPU: everything but the singular values
    from vt_core.metrics.registry import get
    names = [n for n in names if not get(n).needs_sv]
c0, t0 = os.times(), time.perf_counter()
values = []
for seed in study.config.seeds:
    store = study.run(seed)
    if how == "lazy":
        ds = seed_metrics(store, study.config, names=names).compute()
    else:  # "stream", "nosv", or "device:cuda" (the singular values batched through torch there)
        device = how.split(":", 1)[1] if how.startswith("device:") else None
        ds = stream.weight_metrics(store, study.config, names, np.arange(store.committed), device=device)
    values.append(ds["value"].values.tolist())
c1 = os.times()
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_s": (c1.user - c0.user) + (c1.system - c0.system),
                  "values": values}))
"""

WORKERS_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[-1])
import numpy as np
from dask.distributed import Client, LocalCluster
from benchmarks.pythia_scale import block_task
from vt_core.storage.handle import Study
study, n, block = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = Study.open(study)
tasks = [(seed, list(range(i, min(i + block, s.run(seed).committed))))
         for seed in s.config.seeds for i in range(0, s.run(seed).committed, block)]
env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                  worker_class="distributed.Nanny", env=env) as cluster, Client(cluster) as client:
    # each worker's imports (torch, zarr, vt: a few seconds, once per worker, not per task) are paid
    # before the clock starts: at PolyPythia scale they are nothing against 1,540 checkpoints
    client.run(lambda: __import__("vt_core.metrics.stream") and __import__("vt_core.storage.handle") and None)
    t = time.perf_counter()
    futures = [client.submit(block_task, study, seed, idx, pure=False) for seed, idx in tasks]
    results = client.gather(futures)
    print(json.dumps({"seconds": time.perf_counter() - t, "tasks": len(tasks)}))
"""


def block_task(study: str, seed: int, index: list[int]) -> list:
    """One metric task of a cluster: the paper's weight metrics of one seed's block of checkpoints."""
    import numpy as np

    from vt_core.metrics import stream
    from vt_core.names import PAPER_METRICS
    from vt_core.storage.handle import Study

    s = Study.open(study)
    return stream.weight_metrics(s.run(seed), s.config, list(PAPER_METRICS), np.asarray(index))["value"].values.tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="70m")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--checkpoints", type=int, default=4)
    ap.add_argument("--block", type=int, default=2, help="checkpoints per cluster task")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--device", default=None, help="also the streamed metrics with the singular values on this "
                    "torch device (cuda), compared with the lazy kernels")
    ap.add_argument("--no-workers", action="store_true", help="skip the 1 vs 2 workers part")
    args = ap.parse_args()
    import numpy as np

    from benchmarks.pythia_series import checkpoint_bytes, write_series

    out = args.out or Path(tempfile.mkdtemp(prefix="vt-pythia-"))
    source, study = out / "source", out / "study"
    steps = [0, *range(1000, 1000 * args.checkpoints, 1000)][:args.checkpoints]
    t = time.perf_counter()
    if not source.exists():
        write_series(source, args.size, list(range(args.seeds)), steps)
    print(f"series: {args.size}, {args.seeds} seeds x {len(steps)} checkpoints, {time.perf_counter() - t:.0f} s", flush=True)
    ckpt_mb = checkpoint_bytes(args.size) / 2**20
    shutil.rmtree(study, ignore_errors=True)
    plain = _child(IMPORT_CHILD, str(source), str(study), "plain")
    shutil.rmtree(study, ignore_errors=True)
    mem = _child(IMPORT_CHILD, str(source), str(study), "metrics")
    print(f"import + metrics: peak {mem['peak_mb']:.0f} MB over a baseline of {mem['baseline_mb']:.0f} MB "
          f"= {mem['peak_mb'] / ckpt_mb:.2f} checkpoints of {ckpt_mb:.0f} MB, {mem['seconds']:.0f} s", flush=True)
    lazy = _child(KERNELS_CHILD, str(study), "lazy")
    streamed = _child(KERNELS_CHILD, str(study), "stream", env=SINGLE)
    nosv = _child(KERNELS_CHILD, str(study), "nosv", env=SINGLE)
    nosv.pop("values")
    print(f"kernels without the singular values: {nosv['cpu_s']:.1f} CPU-s", flush=True)
    a, b = np.array(lazy.pop("values")), np.array(streamed.pop("values"))
    ok = ~np.isnan(a)
    diff = float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(a[ok]), 1e-300)))
    gb = args.seeds * len(steps) * checkpoint_bytes(args.size) / 1e9
    per_core = {k: gb / r["cpu_s"] for k, r in (("lazy", lazy), ("stream", streamed))}
    print(f"kernels: lazy {lazy['seconds']:.1f} s wall, {lazy['cpu_s']:.1f} CPU-s; streamed {streamed['seconds']:.1f} s wall "
          f"(1 thread), {streamed['cpu_s']:.1f} CPU-s: {per_core['stream'] / per_core['lazy']:.2f}x per core; "
          f"largest relative difference {diff:.1e}", flush=True)
    dev = {}
    if args.device:
        on = _child(KERNELS_CHILD, str(study), f"device:{args.device}", env=SINGLE)
        c = np.array(on.pop("values"))
        dev = {"device": args.device, "device_wall_s": round(on["seconds"], 1), "device_cpu_s": round(on["cpu_s"], 1),
               "per_core_ratio_device": round((gb / on["cpu_s"]) / per_core["lazy"], 2),
               "device_max_rel_diff": float(np.max(np.abs(a[ok] - c[ok]) / np.maximum(np.abs(a[ok]), 1e-300)))}
        print(f"singular values on {args.device}: {json.dumps(dev)}", flush=True)
    if args.no_workers:
        w1 = w2 = {"seconds": 0.0, "tasks": 0}
    else:
        w1 = _child(WORKERS_CHILD, str(study), "1", str(args.block))
        w2 = _child(WORKERS_CHILD, str(study), "2", str(args.block))
        print(f"cluster: {w1['tasks']} tasks, 1 worker {w1['seconds']:.1f} s, 2 workers {w2['seconds']:.1f} s", flush=True)
    n = args.seeds * len(steps)
    ratio = w1["seconds"] / w2["seconds"] if w1["tasks"] else None
    # without the workers part the projection takes the 2-worker speedup measured at 410M (RESULTS.md)
    proj = projection(plain["seconds"] / n, streamed["seconds"] / n, nosv["seconds"] / n, ratio or 1.84)
    print(f"projection for PolyPythias at {args.size} (10 seeds x 154 checkpoints), hours: {proj}", flush=True)
    if not args.keep and args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({
        "size": args.size, "seeds": args.seeds, "checkpoints": len(steps), "checkpoint_mb": round(ckpt_mb, 1),
        "peak_over_checkpoint": round(mem["peak_mb"] / ckpt_mb, 2), "import_s": round(mem["seconds"], 1),
        "gb_per_cpu_s_lazy": round(per_core["lazy"], 4), "gb_per_cpu_s_stream": round(per_core["stream"], 4),
        "per_core_ratio": round(per_core["stream"] / per_core["lazy"], 2),
        # the per-core ratio were everything but the float64 singular values free (the CPU's floor),
        # and were the singular values on a GPU (the CPU-seconds left): bounds, from the same runs
        "per_core_bound_sv_floor": round(lazy["cpu_s"] / max(streamed["cpu_s"] - nosv["cpu_s"], 1e-9), 2),
        "per_core_bound_gpu_sv": round(lazy["cpu_s"] / nosv["cpu_s"], 2),
        "lazy_wall_s": round(lazy["seconds"], 1), "stream_wall_s": round(streamed["seconds"], 1),
        "max_rel_diff": diff, "workers_1_s": round(w1["seconds"], 1), "workers_2_s": round(w2["seconds"], 1),
        "workers_ratio": round(ratio, 2) if ratio else None, "import_plain_s_per_ckpt": round(plain["seconds"] / n, 2),
        "metrics_s_per_ckpt": round(streamed["seconds"] / n, 2), "metrics_no_sv_s_per_ckpt": round(nosv["seconds"] / n, 2),
        "projection_h": proj, **dev}))


def projection(import_s: float, metrics_s: float, no_sv_s: float, two_workers: float, seeds: int = 10,
               checkpoints: int = 154) -> dict:
    """Hours for a PolyPythias-like series (``seeds`` x ``checkpoints`` at the measured size) on 1, 8
    and 64 single-core workers, from the per-checkpoint times measured here (one process, one
    thread): the import is one task per seed (at most ``seeds`` run at once), then the metric cells
    are spread over every worker; parallel efficiency as measured with 2 workers (kept at 8 and 64:
    an assumption, the object store's bandwidth not modelled). ``gpu``: the singular values free
    (what remains on the CPU, measured), a bound on what a GPU per worker gives."""
    eff = min(1.0, two_workers / 2)
    out = {}
    for w in (1, 8, 64):
        imp = import_s * checkpoints * -(-seeds // min(w, seeds)) / (eff if w > 1 else 1)
        met = {k: v * checkpoints * seeds / (w * (eff if w > 1 else 1)) for k, v in (("cpu", metrics_s), ("gpu", no_sv_s))}
        out[str(w)] = {k: round((imp + v) / 3600, 2) for k, v in met.items()}
    return out


if __name__ == "__main__":
    main()
