"""Training: one task per seed, or one per group of seeds trained together as one batched model.
Finished seeds get no task (the flow reads their summaries from their stores). Logic:
:mod:`vt_core.stages.train`."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from vt_core.progress import publish
from vt_core.runtime import Runtime
from vt_core.stages import train
from vt_core.storage.handle import Study


def _progress(seed_epochs: int, logger):
    every = max(1, seed_epochs // 10)
    last: dict[int, float] = {}

    def progress(p: dict) -> None:
        seed = p["seed"]
        publish({"kind": "seed", **p})  # the live view (every checkpoint); Prefect's log: every 10%
        if p["epoch"] - last.get(seed, -every) >= every or p["epoch"] >= seed_epochs:
            last[seed] = p["epoch"]
            logger.info("seed %d: epoch %.0f/%d  train acc %.3f  held-out acc %.3f  loss %.4f", seed,
                        p["epoch"], seed_epochs, p["train_accuracy"], p["test_accuracy"], p["train_loss"])

    return progress


# nothing is cached or persisted by Prefect: whether a seed needs training is read from its own
# store's committed state (a result file in the study could be forged, or unpickled)
@task(name="train-seed", cache_policy=NO_CACHE, persist_result=False, task_run_name="train-seed-{seed}")
def train_seed_task(study: str, seed: int, runtime: dict | None = None) -> dict:
    logger = get_run_logger()
    opened = Study.open(study)
    summary = train.train_seed(opened, seed, progress=_progress(opened.config.training.epochs, logger),
                               num_threads=1, runtime=Runtime(**(runtime or {})))
    logger.info("seed %d: %s (%d checkpoints)%s", seed, summary["status"], summary["committed_steps"],
                " - already trained, skipped" if summary["skipped"] else "")
    publish({"kind": "seed_end", "seed": seed, "status": summary["status"]})
    return dict(summary)


@task(name="train-seed-group", cache_policy=NO_CACHE, persist_result=False, task_run_name="train-seeds-{seeds}")
def train_group_task(study: str, seeds: list[int], runtime: dict | None = None) -> list[dict]:
    """Seeds trained together; each seed's summary (a seed whose writes failed says so in it)."""
    logger = get_run_logger()
    opened = Study.open(study)
    summaries = train.train_group(opened, seeds, progress=_progress(opened.config.training.epochs, logger),
                                  runtime=Runtime(**(runtime or {})))
    for s in summaries:
        publish({"kind": "seed_end", "seed": s["seed"], "status": s["status"]})
        logger.info("seed %d: %s (%d checkpoints)%s", s["seed"], s["status"], s["committed_steps"],
                    f" - {s['error']}" if s["status"] == "failed" else "")
    return [dict(s) for s in summaries]
