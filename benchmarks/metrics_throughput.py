"""The paper's 14 metrics over 8 seeds x 200 checkpoints of the paper's 1-layer transformer.

vt's lazy, batched computation (the metric stage as the flow runs it: plan, one region per seed,
swap) against the way earlier tools did it: for every checkpoint, read its weights, then for every
matrix make one torch call per metric, with the paper code's rules (W_Q/W_K/W_V per head, W_O one
matrix, Bessel variances, torch.median, NaN singular-value variances dropped). Both read the same
Zarr stores, in one run, and must agree. Then the peak memory of vt's metric stage for one seed
with 200 and with 2,000 checkpoints, and of the activation metrics on one 128-checkpoint block of
the paper transformer's two hookpoints (vt's Gram-form CKA against the feature-space form), each
in a fresh process.

    python benchmarks/metrics_throughput.py [--seeds 8] [--checkpoints 200] [--memory-checkpoints 2000]

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

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vt_core import stages  # noqa: E402
from vt_core.config.study_config import parse_config  # noqa: E402
from vt_core.metrics.roles import parameter_roles  # noqa: E402
from vt_core.names import SCALARS  # noqa: E402
from vt_core.storage.run_store import Checkpoint, RunStore  # noqa: E402
from vt_core.storage.study import prepare_study, run_path  # noqa: E402
from vt_core.training.loop import Trainer  # noqa: E402


def paper_config(out: Path, seeds: int) -> dict:
    return {
        "name": "bench", "seeds": seeds, "output_dir": str(out),
        "model": {"name": "transformer", "n_layers": 1, "d_model": 128, "n_heads": 4, "d_head": 32,
                  "d_mlp": 512, "layer_norm": False},
        "data": {"name": "modular_addition", "p": 113, "train_fraction": 0.3},
        "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 1.0},
        "training": {"epochs": 1}, "checkpoints": {"every_epochs": 1},
    }


def make_study(out: Path, seeds: int, checkpoints: int, config: dict | None = None) -> Path:
    """Stores with the model's real initialisation, then a seeded random walk per checkpoint
    (training 16,000 epochs on a CPU is not the point here: the metric stage is). ``config``: the
    study's config as a dict (default :func:`paper_config`)."""
    config = parse_config(config or paper_config(out, seeds))
    study = prepare_study(config)
    for seed in config.seeds:
        trainer = Trainer(config, seed)
        params = {n: p.detach().numpy().copy() for n, p in trainer.model.named_parameters()}
        rng = np.random.default_rng(seed)
        store = RunStore.create(run_path(study, seed), seed=seed, config_hash=config.training_hash(),
                                config=config.training_dict(), roles=parameter_roles(trainer.model))
        for i in range(checkpoints):
            for p in params.values():
                p += rng.normal(scale=1e-3, size=p.shape).astype(np.float32)
            store.write(Checkpoint(index=i, step=10 * i, epoch=float(i),
                                   scalars={"train_loss": 1.0, "train_accuracy": 0.5, "test_loss": 1.0,
                                            "test_accuracy": 0.5, "grad_norm": 1.0},
                                   weights=params), capacity=checkpoints)
            store.commit(i + 1, 10 * i)
        store.set_status("complete")
    return study


def vt_metrics(study: Path) -> dict:
    seeds = stages.usable_seeds(study)
    plan = stages.plan_metrics(study, seeds)
    return stages.finalize_metrics(study, plan, [stages.compute_metrics(study, s, plan) for s in seeds])


def _cut(s: torch.Tensor) -> torch.Tensor:
    return torch.where(s < 1e-5, torch.zeros_like(s), s)


def baseline_metrics(study: Path, seeds: list[int]) -> np.ndarray:
    """Per checkpoint, per matrix, one torch call per metric (as visualizing-training did)."""
    out = []
    for seed in seeds:
        store = RunStore(run_path(study, seed), mode="r")
        g = store.root["weights"]
        roles = store.attrs["parameter_roles"]
        names = [n for n, _ in g.arrays() if roles.get(n, "exclude") != "exclude"]
        for i in range(store.committed):
            tensors = {n: torch.from_numpy(np.asarray(g[n][i])).double() for n in names}
            mats, biases = [], []
            for n, t in tensors.items():
                if roles[n] == "heads":
                    mats += list(t)
                elif roles[n] == "merged_heads":
                    mats.append(t.reshape(-1, t.shape[-1]))
                elif roles[n] == "matrix":
                    mats.append(t)
                else:
                    biases.append(t)
            rows = []
            for w in mats:  # one torch call per metric, each recomputing what it needs
                l1 = torch.sum(torch.abs(w))
                l2 = torch.linalg.norm(w)
                tr = torch.trace(w)
                spec = torch.linalg.matrix_norm(w, ord=2)
                rows.append([l1, l2, tr, spec, l1 / l2, tr / torch.linalg.matrix_norm(w, ord=2),
                             torch.mean(_cut(torch.linalg.svdvals(w))), torch.var(_cut(torch.linalg.svdvals(w)))])
            per = np.nanmean(np.array([[float(x) for x in r] for r in rows]), axis=0)
            wcat = torch.cat([m.flatten() for m in mats])
            bcat = torch.cat([b.flatten() for b in biases])
            glob = [torch.mean(wcat), torch.median(wcat), torch.var(wcat),
                    torch.mean(bcat), torch.median(bcat), torch.var(bcat)]
            out.append(np.concatenate([per, [float(x) for x in glob]]))
    return np.array(out)


MEMORY_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from benchmarks.metrics_throughput import vt_metrics, vm_hwm_mb
base = vm_hwm_mb()
t = time.perf_counter()
vt_metrics(Path(sys.argv[1]))
print(json.dumps({"peak_rss_mb": vm_hwm_mb(), "import_rss_mb": base, "seconds": time.perf_counter() - t}))
"""


ACTIVATION_METRICS = ["act_sparsity", "dormant_fraction", "act_norm", "act_var", "cka_prev"]
HOOKS = {"blocks.0.mlp.hook_post": (3, 512), "blocks.0.attn.hook_pattern": (4, 3, 3)}  # per probe example


def make_activation_study(out: Path, checkpoints: int, probe: int = 32) -> Path:
    """One seed of the paper transformer with activations at its two hookpoints (the example's
    probe batch of 32), ``checkpoints`` of them, drifting as a random walk."""
    config = paper_config(out, 1) | {"hooks": {"activations": list(HOOKS), "probe_size": probe},
                                     "metrics": {"names": ACTIVATION_METRICS}}
    study = make_study(out, 1, 2, config)
    old = RunStore(run_path(study, 0))
    weights = {n: np.asarray(old.root["weights"][n][1]) for n, _ in old.root["weights"].arrays() if n != "step"}
    a = old.attrs  # a new store of the same run, with activations from its first checkpoint on
    shutil.rmtree(run_path(study, 0))
    store = RunStore.create(run_path(study, 0), seed=a["seed"], config_hash=a["config_hash"],
                            config=json.loads(a["config"]), roles=a["parameter_roles"], kinds=a["array_kinds"])
    rng = np.random.default_rng(0)
    acts = {h: np.maximum(rng.normal(size=(probe, *shape)), 0).astype(np.float32) for h, shape in HOOKS.items()}
    for i in range(checkpoints):
        for a in acts.values():
            a += rng.normal(scale=0.05, size=a.shape).astype(np.float32)
        store.write(Checkpoint(index=i, step=10 * i, epoch=float(i), scalars=dict.fromkeys(SCALARS, 0.5),
                               weights=weights, activations=acts), capacity=checkpoints)
        store.commit(i + 1, 10 * i)
    return study


ACTIVATION_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[3])
import numpy as np
from benchmarks.metrics_throughput import ACTIVATION_METRICS, vm_hwm_mb
from vt_core.metrics import get
from vt_core.metrics.compute import seed_metrics
from vt_core.storage.study import load_study, open_run
study = sys.argv[1]
config = load_study(study)
store = open_run(study, 0, config)
acts = store.dataset("activations")
base = vm_hwm_mb()
t = time.perf_counter()
if sys.argv[2] == "vt":
    ds = seed_metrics(store, config, names=ACTIVATION_METRICS).compute()
    per = ds["per_layer"].sel(layer_metric=ACTIVATION_METRICS)
    out = {h: per.sel(layer=h).values.tolist() for h in sorted(acts.data_vars)}
else:  # every hookpoint loaded, the metrics in numpy, CKA in feature space (features x features)
    out = {}
    for h in sorted(acts.data_vars):
        a = acts[h].values.astype(np.float64)
        x = a.reshape(a.shape[0], a.shape[1], -1)
        cols = [get(m).kernel(a) for m in ACTIVATION_METRICS[:-1]]
        prev = np.concatenate([x[:1], x[:-1]])
        xc, pc = x - x.mean(1, keepdims=True), prev - prev.mean(1, keepdims=True)
        num = (np.einsum("snf,sng->sfg", xc, pc) ** 2).sum((1, 2))
        den = np.sqrt((np.einsum("snf,sng->sfg", xc, xc) ** 2).sum((1, 2)) * (np.einsum("snf,sng->sfg", pc, pc) ** 2).sum((1, 2)))
        cka = num / den
        cka[0] = np.nan
        out[h] = np.stack(cols + [cka], axis=-1).tolist()
print(json.dumps({"extra_mb": vm_hwm_mb() - base, "seconds": time.perf_counter() - t, "values": out}))
"""


def activation_memory(study: Path, how: str) -> dict:
    res = subprocess.run([sys.executable, "-c", ACTIVATION_CHILD, str(study), how, str(ROOT)], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(res.stdout.strip().splitlines()[-1])


def vm_hwm_mb() -> float:
    """Peak resident memory of this process image (VmHWM; unlike ru_maxrss it restarts at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_memory(study: Path) -> dict:
    res = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(study), str(ROOT)], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--checkpoints", type=int, default=200)
    ap.add_argument("--memory-checkpoints", type=int, default=2000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vt-bench-metrics-"))
    try:
        t = time.perf_counter()
        study = make_study(tmp / "study", args.seeds, args.checkpoints)
        print(f"wrote {args.seeds} seeds x {args.checkpoints} checkpoints in {time.perf_counter() - t:.1f} s")

        t = time.perf_counter()
        base = baseline_metrics(study, list(range(args.seeds)))
        baseline_s = time.perf_counter() - t
        print(f"baseline (per checkpoint, per matrix, one torch call per metric): {baseline_s:.1f} s")

        t = time.perf_counter()
        cells = vt_metrics(study)
        vt_s = time.perf_counter() - t
        print(f"vt (lazy, batched, by region): {vt_s:.1f} s, cells {cells}")

        from vt_core.metrics.store import load_features
        from vt_core.names import PAPER_METRICS

        got = load_features(study, list(PAPER_METRICS)).values.reshape(-1, len(PAPER_METRICS))
        np.testing.assert_allclose(got, base, rtol=1e-5, atol=1e-8)  # the same numbers, or no ratio
        print("vt and baseline agree (rtol 1e-5, atol 1e-8)")

        mem = {}
        for n in (args.checkpoints, args.memory_checkpoints):
            one = make_study(tmp / f"mem{n}", 1, n)
            mem[n] = peak_memory(one)
            shutil.rmtree(one)
            print(f"metric stage, 1 seed x {n} checkpoints: peak RSS {mem[n]['peak_rss_mb']:.0f} MB "
                  f"(after imports {mem[n]['import_rss_mb']:.0f} MB), {mem[n]['seconds']:.1f} s")
        act_study = make_activation_study(tmp / "acts", 128)
        acts = {how: activation_memory(act_study, how) for how in ("feature_space", "vt")}
        for h in HOOKS:
            np.testing.assert_allclose(np.array(acts["vt"]["values"][h], float),
                                       np.array(acts["feature_space"]["values"][h], float), rtol=1e-9)
        for how, a in acts.items():
            print(f"activation metrics, 128 checkpoints x {list(HOOKS)} ({how}): "
                  f"+{a['extra_mb']:.0f} MB peak, {a['seconds']:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lo, hi = args.checkpoints, args.memory_checkpoints
    print(json.dumps({
        "ratio": round(baseline_s / vt_s, 2), "baseline_s": round(baseline_s, 2), "vt_s": round(vt_s, 2),
        "seeds": args.seeds, "checkpoints": args.checkpoints,
        f"peak_rss_mb_{lo}": round(mem[lo]["peak_rss_mb"], 1), f"peak_rss_mb_{hi}": round(mem[hi]["peak_rss_mb"], 1),
        "activation_block_extra_mb": round(acts["vt"]["extra_mb"], 1),
        "activation_block_extra_mb_feature_space": round(acts["feature_space"]["extra_mb"], 1),
        "cpu_cores": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
