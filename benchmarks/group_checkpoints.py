"""Seed groups with checkpoints: how much of the training speed the checkpoint rounds cost, with the
host copies made in the training thread (``sync``) or by a background thread (``async``).

The paper's modular-addition model (examples/modular_addition.toml) trained as one group of G seeds,
checkpoints every K epochs with every weight and both hookpoints captured, written through vt's
writers into real stores (:func:`vt_core.stages.train.train_group`). Baseline: the same group trained for
the same epochs with no checkpoints (``GroupTrainer.train_steps``). Also measured: the time the
training thread spends per checkpoint round (what stalls the device), from timers around the
snapshot and, in sync mode, the host copies, slicing and hand-over to the writers.

    python benchmarks/group_checkpoints.py [--seeds 40] [--epochs 1000] [--every 100] [--device auto]

Defaults: 40 seeds, 1,000 epochs, every 100 on CUDA; 8 seeds, 20 epochs, every 5 on a CPU (about
two minutes on two cores, where evaluation dominates each round and the thread cannot help). The last line printed is one JSON object (``ratio``: async time over
sync time; below 1 is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.seed_groups import config, sync  # noqa: E402
from vt_core.config.study_config import StudyConfig  # noqa: E402
from vt_core.runtime import Runtime  # noqa: E402
from vt_core.stages.train import train_group  # noqa: E402
from vt_core.storage.study import prepare_study  # noqa: E402
from vt_core.training.groups import GroupTrainer  # noqa: E402
from vt_core.training.loop import Trainer, resolve_device  # noqa: E402


class RoundTimer:
    """Seconds spent in GroupTrainer's snapshot and host-copy/slicing steps, by thread (the
    training thread is the main thread here); the hand-over to the writers is not included."""

    def __init__(self):
        self.seconds = {"snapshot": {"training": 0.0, "host": 0.0}, "materialise": {"training": 0.0, "host": 0.0}}
        self.rounds = 0
        self._orig = {k: getattr(GroupTrainer, f"_{k}") for k in self.seconds}

    def __enter__(self):
        for key, fn in self._orig.items():
            setattr(GroupTrainer, f"_{key}", self._timed(key, fn))
        return self

    def _timed(self, key, fn):
        def wrapper(group, *a, **kw):
            t = time.perf_counter()
            try:
                return fn(group, *a, **kw)
            finally:
                who = "training" if threading.current_thread() is threading.main_thread() else "host"
                self.seconds[key][who] += time.perf_counter() - t
                self.rounds += key == "snapshot"
        return wrapper

    def __exit__(self, *exc):
        for key, fn in self._orig.items():
            setattr(GroupTrainer, f"_{key}", fn)


def with_checkpoints(cfg_dict: dict, mode: str, out: Path) -> tuple[float, RoundTimer]:
    """Wall seconds of train_group (G seeds into their stores) and the round timers."""
    cfg = StudyConfig.model_validate(dict(cfg_dict, output_dir=str(out / mode)))
    study = prepare_study(cfg)
    runtime = replace(Runtime.from_env(), group_async=mode == "async")
    with RoundTimer() as timer:
        start = time.perf_counter()
        summaries = train_group(study, cfg.seeds, runtime=runtime)
        wall = time.perf_counter() - start
    assert all(s["status"] == "complete" for s in summaries), summaries
    return wall, timer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--every", type=int, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    seeds = args.seeds or (40 if cuda else 8)
    epochs = args.epochs or (1000 if cuda else 20)
    every = args.every or (100 if cuda else 5)
    if not cuda:
        torch.set_num_threads(os.cpu_count() or 1)
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({os.cpu_count()} cores)"
    d = config(args.device, seeds=seeds).model_dump(mode="json")
    d["training"] |= {"epochs": epochs, "seed_group_size": seeds}
    d["checkpoints"] = {"every_epochs": every}

    # baseline: the same group, same epochs, no checkpoints
    bare_cfg = StudyConfig.model_validate(d | {"output_dir": "/nonexistent"})
    group = GroupTrainer([Trainer(bare_cfg, s) for s in range(seeds)])
    per_epoch = group.members[0].batches_per_epoch
    group.train_steps(per_epoch)  # warm-up
    sync(device)
    start = time.perf_counter()
    group.train_steps(epochs * per_epoch)
    sync(device)
    bare = time.perf_counter() - start
    del group

    out = Path(tempfile.mkdtemp(prefix="vt-group-ckpt-"))
    res = {}
    for mode in ("sync", "async"):
        wall, timer = with_checkpoints(d, mode, out)
        per_round = {f"{k}_{who}_s": round(v / max(timer.rounds, 1), 4)
                     for k, by in timer.seconds.items() for who, v in by.items()}
        res[mode] = {"wall_s": round(wall, 2), "seed_epochs_s": round(seeds * epochs / wall, 1),
                     "rounds": timer.rounds, "per_round": per_round}
        print(f"{name}: {seeds} seeds x {epochs} epochs, checkpoints every {every} ({mode}): {wall:.1f} s, "
              f"{seeds * epochs / wall:.1f} seed-epochs/s ({wall / bare:.2f}x the no-checkpoint time); "
              f"per round: {per_round}")
    print(f"{name}: no checkpoints: {bare:.1f} s, {seeds * epochs / bare:.1f} seed-epochs/s")
    print(json.dumps({"ratio": round(res["async"]["wall_s"] / res["sync"]["wall_s"], 3),
                      "baseline_s": res["sync"]["wall_s"], "vt_s": res["async"]["wall_s"],
                      "no_checkpoints_s": round(bare, 2), "device": name, "seeds": seeds, "epochs": epochs,
                      "every_epochs": every, "sync": res["sync"], "async": res["async"],
                      "checkpoint_cost_sync": round(res["sync"]["wall_s"] / bare, 3),
                      "checkpoint_cost_async": round(res["async"]["wall_s"] / bare, 3)}))


if __name__ == "__main__":
    main()
