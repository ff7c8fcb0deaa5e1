"""Recorder overhead: the user's own loop, bare and with vt's Recorder, side by side in one run.

The demo's setting (sparse parity 40 bits, MLP 40-1000-1, SGD, batch 32, hinge loss, 200
epochs, torch on one thread) written as a plain PyTorch loop. *bare*: the loop, with the held-out
loss and accuracy evaluated at each checkpoint (what a user logs anyway). *recorder*: the same loop
inside ``Recorder`` recording what the demo's ``vt run`` records, at its cadence (every 2 epochs):
every weight, the activations of its hookpoint (``layers.1``; ``--hooks '*'``: every hookpoint)
on its probe batch of 32, the scalars, written by the writer process with the commit protocol.
Best of ``--repeats``, bare and recorder runs interleaved. ``--load N`` runs N CPU-bound processes
beside it (a shared machine).

    python benchmarks/recorder_overhead.py [--repeats 5] [--epochs 200] [--load 0] [--hooks '*']

The last line printed is one JSON object with the figures (target: ratio <= 1.10).
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load import cpu_load  # noqa: E402
from vt_core import Recorder  # noqa: E402
from vt_core.config.study_config import load_config  # noqa: E402
from vt_core.data import build_task  # noqa: E402
from vt_core.models import build_model  # noqa: E402
from vt_core.training.loop import loss_and_correct  # noqa: E402

DEMO = ROOT / "examples" / "sparse_parity.toml"


def loop(epochs: int, every_epochs: int, study: Path | None, hooks: list[str] | None = None) -> tuple[float, int]:
    """The user's loop; with ``study`` recorded into it. Returns (seconds, checkpoints)."""
    t = time.perf_counter()
    cfg = load_config(DEMO)
    task = build_task(cfg.data, 0)
    torch.manual_seed(0)
    model = build_model(cfg.model, task, 1)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optimizer.lr, momentum=cfg.optimizer.momentum,
                          weight_decay=cfg.optimizer.weight_decay)
    gen = torch.Generator().manual_seed(0)
    n, bs = len(task.x_train), cfg.training.batch_size or len(task.x_train)
    per_epoch = -(-n // bs)
    every = every_epochs * per_epoch

    def evaluate() -> dict:
        model.eval()
        with torch.no_grad():
            loss, ok = loss_and_correct("hinge", model(task.x_test), task.y_test, 2)
        model.train()
        return {"test_loss": float(loss), "test_accuracy": float(ok) / len(task.y_test)}

    hooks = list(cfg.hooks.activations) if hooks is None else hooks  # default: what the demo records
    rec = Recorder(study, seed=0, model=model, hooks=hooks, probe=task.x_test[:cfg.hooks.probe_size], every_steps=every,
                   steps_per_epoch=per_epoch) if study is not None else None
    checkpoints = 0
    if rec is not None:
        rec.step(0, **evaluate())
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for b in range(per_epoch):
            idx = perm[b * bs:(b + 1) * bs]
            opt.zero_grad(set_to_none=True)
            loss_and_correct("hinge", model(task.x_train[idx]), task.y_train[idx], 2)[0].backward()
            opt.step()
            step += 1
            if step % every == 0:
                scalars = evaluate()
                checkpoints += 1
                if rec is not None:
                    rec.step(step, **scalars)
            elif rec is not None:
                rec.step(step)
    if rec is not None:
        rec.close()
        checkpoints = rec.n_checkpoints
    return time.perf_counter() - t, checkpoints


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--every-epochs", type=int, default=2, help="the demo's cadence")
    ap.add_argument("--load", type=int, default=0, help="CPU-bound processes running beside the benchmark")
    ap.add_argument("--hooks", nargs="*", default=None,
                    help="hookpoints recorded (default: the demo's, layers.1; '*' for every hookpoint)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="vt-bench-recorder-"))
    bares, recs = [], []
    try:
        with cpu_load(args.load):
            for i in range(args.repeats):  # interleaved, so that drift in the machine hits both sides
                bares.append(loop(args.epochs, args.every_epochs, None)[0])
                recs.append(loop(args.epochs, args.every_epochs, tmp / f"study-{i}", args.hooks))
                shutil.rmtree(tmp / f"study-{i}")
                print(f"repeat {i}: bare {bares[-1]:.2f} s, recorder {recs[-1][0]:.2f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    b, r = min(bares), min(t for t, _ in recs)
    print(json.dumps({"ratio": round(r / b, 3), "bare_s": round(b, 3), "recorder_s": round(r, 3),
                      "checkpoints": recs[0][1], "every_epochs": args.every_epochs, "epochs": args.epochs,
                      "hooks": args.hooks if args.hooks is not None else "demo", "load_processes": args.load, "loadavg_1min": round(os.getloadavg()[0], 2),
                      "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
