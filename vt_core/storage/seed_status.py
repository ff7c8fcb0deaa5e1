"""Each seed's status, read from its store, and the study's state in the seeds' vocabulary, with
what to do about each kind of seed (`vt status`, the closing lines, the flow's summary)."""

from __future__ import annotations

from vt_core.storage.location import Location, location
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import load_study, run_path


def seeds_by_status(rows: list[dict]) -> dict[str, list[int]]:
    """The seeds of :func:`seed_status`'s rows, by status."""
    by: dict[str, list[int]] = {}
    for r in rows:
        by.setdefault(r["status"], []).append(r["seed"])
    return by


def study_state(rows: list[dict]) -> tuple[str, list[str]]:
    """The study's state in the seeds' vocabulary, and what to do about each kind of seed.

    ``running`` (a seed is being trained), ``complete`` (every seed complete or diverged, at least
    one complete), ``interrupted`` (seeds interrupted or missing, none failed: `vt run` resumes
    them), ``failed`` (a seed failed or is damaged, or no seed finished: a study where nothing
    completed is never complete)."""
    by = seeds_by_status(rows)
    hints = []
    if by.get("interrupted") or by.get("missing"):
        todo = sorted(by.get("interrupted", []) + by.get("missing", []))
        hints.append(f"seeds {_seeds(todo)} interrupted or not started: `vt run CONFIG` resumes them from their "
                     f"last committed checkpoint")
    if by.get("failed"):
        hints.append(f"seeds {_seeds(by['failed'])} failed (error above): fix the cause, then "
                     f"`vt rerun STUDY --seed N` retrains each from scratch")
    if by.get("damaged"):
        hints.append(f"seeds {_seeds(by['damaged'])} damaged: `vt validate STUDY` names what; `vt run CONFIG` "
                     f"retrains them")
    if by.get("diverged"):
        hints.append(f"seeds {_seeds(by['diverged'])} diverged (non-finite loss): lower the learning rate to "
                     f"train them; the analysis leaves their last checkpoints out")
    if by.get("running"):
        return "running", hints
    if by.get("failed") or by.get("damaged") or not by.get("complete"):
        return "failed", hints
    if by.get("interrupted") or by.get("missing"):
        return "interrupted", hints
    return "complete", hints


def _seeds(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))


def seed_status(study: str | Location) -> list[dict]:
    """One row per configured seed: status, committed checkpoints, last step, error."""
    study = location(study)
    config = load_study(study)
    rows = []
    for seed in config.seeds:
        path = run_path(study, seed)
        if not path.exists():
            rows.append({"seed": seed, "status": "missing", "committed_steps": 0, "last_step": None,
                         "error": None, "path": str(path)})
            continue
        try:
            store = RunStore(path, mode="r")
            a = store.attrs
            rows.append({"seed": seed, "status": store.effective_status(), "committed_steps": a["committed_steps"],
                         "last_step": a["last_step"], "error": a["error"], "path": str(path)})
        except Exception as err:  # noqa: BLE001 - a damaged store is reported, not fatal
            rows.append({"seed": seed, "status": "damaged", "committed_steps": 0, "last_step": None,
                         "error": f"{type(err).__name__}: {err}", "path": str(path)})
    return rows
