"""Training: one task per seed, cached on (training config hash, seed, vt version)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

import vt_core
from vt_core.study import load_study, train_seed


def train_cache_key(_context, parameters) -> str:
    config = load_study(parameters["study"])
    return f"vt-train-{config.training_hash()}-seed{parameters['seed']}-v{vt_core.__version__}"


# results are stored in the study directory as JSON: nothing there is ever unpickled
@task(name="train-seed", cache_key_fn=train_cache_key, persist_result=True, result_serializer="json",
      task_run_name="train-seed-{seed}")
def train_seed_task(study: str, seed: int) -> dict:
    logger = get_run_logger()
    epochs = load_study(study).training.epochs
    every = max(1, epochs // 10)
    last = {"epoch": -every}

    def progress(p: dict) -> None:
        if p["epoch"] - last["epoch"] >= every or p["epoch"] >= epochs:
            last["epoch"] = p["epoch"]
            logger.info("seed %d: epoch %.0f/%d  train acc %.3f  held-out acc %.3f  loss %.4f", seed,
                        p["epoch"], epochs, p["train_accuracy"], p["test_accuracy"], p["train_loss"])

    summary = train_seed(Path(study), seed, progress=progress, num_threads=1)
    logger.info("seed %d: %s (%d checkpoints)%s", seed, summary["status"], summary["committed_steps"],
                " - already trained, skipped" if summary["skipped"] else "")
    return summary
