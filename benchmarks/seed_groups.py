"""Seed groups: aggregate seed-epochs/s for groups of 1, 8 and 40 seeds against a plain loop.

The model and data are the paper's modular addition (examples/modular_addition.toml: 1-layer
transformer, p = 113, 3,830 training pairs, AdamW, batch 2048). Baseline: a plain PyTorch loop
training one seed (vt's model and data, ``torch.optim.AdamW``, no checkpoints), seeds one after
another. vt: :class:`vt_core.training.groups.GroupTrainer` training G seeds as one vmapped model (training
steps only, as the baseline). On CUDA, also G = 40 with TF32 matmuls and with bf16 autocast.
Then the largest group with its step compiled (``training.compile``; default modes: ``default`` on
a CPU, ``default`` and ``reduce-overhead`` = CUDA graphs on CUDA): the one-off compile time (the
first warm-up epoch less the mean of the other warm-up epochs) is reported apart. Every figure is measured after a
warm-up, with the device synchronised.

    python benchmarks/seed_groups.py [--epochs N] [--sizes 1 8 40] [--device auto] [--compile MODE ...]

The last line printed is one JSON object with the figures (``ratio``: G = 40 over the baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vt_core.config.study_config import load_config  # noqa: E402
from vt_core.training.groups import GroupTrainer  # noqa: E402
from vt_core.training.loop import Trainer, loss_and_correct, resolve_device  # noqa: E402

CONFIG = ROOT / "examples" / "modular_addition.toml"


def config(device: str, precision: str = "fp32", seeds: int = 40, compile: str = "none"):
    base = load_config(CONFIG)
    d = base.model_dump(mode="json")
    d["training"] |= {"device": device, "precision": precision, "compile": compile}
    d["seeds"] = list(range(seeds))
    d["output_dir"] = "/nonexistent"
    return type(base).model_validate(d)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(cfg, epochs: int, warmup: int) -> float:
    """Seed-epochs/s of a hand-written loop over one seed (model and data built by vt)."""
    t = Trainer(cfg, 0)
    model, opt, task = t.model, torch.optim.AdamW(t.model.parameters(), lr=1e-3, weight_decay=1.0,
                                                   betas=(0.9, 0.98)), t.task
    n, bs = len(task.x_train), t.batch_size
    g = torch.Generator().manual_seed(0)

    def epoch():
        perm = torch.randperm(n, generator=g).to(t.device)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            loss, _ = loss_and_correct("cross_entropy", model(task.x_train[idx]), task.y_train[idx], task.n_classes)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    for _ in range(warmup):
        epoch()
    sync(t.device)
    start = time.perf_counter()
    for _ in range(epochs):
        epoch()
    sync(t.device)
    return epochs / (time.perf_counter() - start)


def grouped(cfg, size: int, epochs: int, warmup: int, timings: dict | None = None) -> float:
    """Seed-epochs/s of ``size`` seeds trained together by vt (``timings``: the warm-up's first
    epoch and the rest, in seconds, to tell a one-off compile time)."""
    group = GroupTrainer([Trainer(cfg, s) for s in range(size)])
    per_epoch = group.members[0].batches_per_epoch
    t0 = time.perf_counter()
    group.train_steps(per_epoch)
    sync(group.device)
    t1 = time.perf_counter()
    group.train_steps((warmup - 1) * per_epoch)
    sync(group.device)
    if timings is not None:
        timings |= {"first_epoch_s": t1 - t0, "epoch_s": (time.perf_counter() - t1) / max(1, warmup - 1),
                    "compile_failure": group._step.failure}
    start = time.perf_counter()
    group.train_steps(epochs * per_epoch)
    sync(group.device)
    return size * epochs / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=None,
                    help="timed epochs per measurement (default: 3 on CPU, 100 on CUDA)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 40])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", nargs="*", default=None,
                    help="training.compile modes for the largest group (default: 'default' on a CPU, "
                    "'default' and 'reduce-overhead' on CUDA; none given: skip)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    epochs = args.epochs or (100 if cuda else 3)
    warmup = 10 if cuda else 2
    if not cuda:
        torch.set_num_threads(os.cpu_count() or 1)
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({os.cpu_count()} cores)"
    cfg = config(args.device)
    base = plain_loop(cfg, epochs, warmup)
    print(f"{name}: plain loop, 1 seed: {base:.1f} seed-epochs/s")
    out = {"device": name, "epochs": epochs, "baseline_seed_epochs_s": round(base, 1), "groups": {}}
    for size in args.sizes:
        r = grouped(cfg, size, epochs, warmup)
        out["groups"][str(size)] = round(r, 1)
        print(f"group of {size:3d}: {r:8.1f} seed-epochs/s ({r / base:.2f}x the plain loop)")
    if cuda:
        for prec in ("tf32", "bf16"):
            r = grouped(config(args.device, prec, seeds=max(args.sizes)), max(args.sizes), epochs, warmup)
            out["groups"][f"{max(args.sizes)}-{prec}"] = round(r, 1)
            print(f"group of {max(args.sizes)} ({prec}): {r:.1f} seed-epochs/s ({r / base:.2f}x)")
    top = max(args.sizes)
    modes = args.compile if args.compile is not None else (["default", "reduce-overhead"] if cuda else ["default"])
    for mode in modes:
        timings: dict = {}
        r = grouped(config(args.device, seeds=top, compile=mode), top, epochs, warmup, timings)
        compile_s = timings["first_epoch_s"] - timings["epoch_s"]
        out["groups"][f"{top}-compile-{mode}"] = round(r, 1)
        out.setdefault("compile_s", {})[mode] = round(compile_s, 1)
        failed = f"; compile FAILED, eager: {timings['compile_failure']}" if timings["compile_failure"] else ""
        print(f"group of {top} (compile {mode}): {r:.1f} seed-epochs/s ({r / base:.2f}x; "
              f"{r / out['groups'][str(top)]:.2f}x eager), compile {compile_s:.1f} s{failed}")
    best = out["groups"][str(top)]
    paper_epochs, seeds = 16_500, 40
    out["projected_40_seeds_to_16500_epochs_min"] = round(paper_epochs * seeds / best / 60, 1)
    print(json.dumps({"ratio": round(best / base, 2), "baseline_s": round(1 / base, 5), "vt_s": round(1 / best, 5),
                      **out}))


if __name__ == "__main__":
    main()
