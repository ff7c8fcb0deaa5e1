"""Your own PyTorch training loop, recorded by vt (no Prefect, no vt config): sparse parity on an MLP.

    PYTHONPATH=. python examples/recorder_loop.py studies/my_loop               # 6 seeds, ~1.5 min on 2 cores
    vt analyze studies/my_loop                                                 # the script runs it at the end

The loop is an ordinary one: its own data, model, optimizer, and its own checkpoints
(``STUDY/my_checkpoints/seed=N/step_S.pt``: model, optimizer and batch-order generator). The
recorder writes ``STUDY/runs/seed=NNNN.zarr`` as `vt run` does. Kill the script at any moment and
start it again: each seed resumes from its own checkpoint at the step of the store's last commit
(``rec.resume_step``) and the store goes on from there, equal to an uninterrupted run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from vt_core import Recorder


def sparse_parity(seed: int, n_bits: int = 40, k: int = 3, n_train: int = 1000, n_test: int = 100):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (n_train + n_test, n_bits), generator=g).float() * 2 - 1
    y = (x[:, :k].prod(dim=1) > 0).long()
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        out = model(x)
        loss, acc = nn.functional.cross_entropy(out, y).item(), (out.argmax(-1) == y).float().mean().item()
    model.train()
    return loss, acc


def own_checkpoint(root: Path, seed: int, step: int) -> Path:
    return root / f"seed={seed}" / f"step_{step}.pt"


#: what the HMM models: a few features (6 seeds x 41 checkpoints support diagonal covariances of a
#: handful of them, not full ones over the paper's 14), held-out accuracy among them
HMM = {"covariance": "diag", "features": ["l2", "spectral", "code_sparsity", "var_w", "test_accuracy"],
       "max_states": 6, "convergence_threshold": 0.9}


def train(study: str, seed: int, steps: int, every: int, save_every: int, sleep: float = 0.0) -> None:
    xtr, ytr, xte, yte = sparse_parity(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(40, 128), nn.ReLU(), nn.Linear(128, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.01)  # memorises first, generalises later
    gen = torch.Generator().manual_seed(seed)
    own = Path(study) / "my_checkpoints"
    with Recorder(study, seed=seed, model=model, hooks=["1"], probe=xte[:32], probe_targets=yte[:32],
                  every_steps=every, steps_per_epoch=1000 // 32 + 1, data="sparse parity, 40 bits, 3 relevant",
                  hmm=HMM) as rec:
        start = 0
        if rec.resume_step is not None:  # continue from our own checkpoint at the store's last commit
            state = torch.load(own_checkpoint(own, seed, rec.resume_step), weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            start = rec.resume_step
        else:
            rec.step(0, **scalars(model, xtr, ytr, xte, yte))
        for step in range(start + 1, steps + 1):
            idx = torch.randint(0, len(xtr), (32,), generator=gen)
            loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if rec.due(step) or step == steps:
                rec.step(step, **scalars(model, xtr, ytr, xte, yte))
            else:
                rec.step(step)
            if step % save_every == 0:
                save(own_checkpoint(own, seed, step), model, opt, gen)
            if sleep:
                time.sleep(sleep)


def scalars(model, xtr, ytr, xte, yte) -> dict[str, float]:
    train_loss, train_acc = evaluate(model, xtr, ytr)
    test_loss, test_acc = evaluate(model, xte, yte)
    return {"train_loss": train_loss, "train_accuracy": train_acc, "test_loss": test_loss, "test_accuracy": test_acc}


def save(path: Path, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state()}, tmp)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study")
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--every", type=int, default=300, help="record every N steps")
    p.add_argument("--save-every", type=int, default=300, help="save our own checkpoint every N steps")
    p.add_argument("--sleep", type=float, default=0.0, help="seconds to wait after each step (tests)")
    p.add_argument("--no-analyze", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for seed in range(args.seeds):
        start = time.perf_counter()
        print(f"seed {seed}: training {args.steps} steps, recording every {args.every} ...", flush=True)
        train(args.study, seed, args.steps, args.every, args.save_every, args.sleep)
        print(f"seed {seed}: done in {time.perf_counter() - start:.0f} s", flush=True)
    if not args.no_analyze:
        vt = Path(sys.executable).with_name("vt")
        subprocess.run([str(vt) if vt.exists() else "vt", "analyze", args.study], check=True)


if __name__ == "__main__":
    main()
