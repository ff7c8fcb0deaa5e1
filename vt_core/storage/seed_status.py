"""Each seed's status, read from its store, and the study's state in the seeds' vocabulary, with
what to do about each kind of seed (`vt status`, the closing lines, the flow's summary)."""

from __future__ import annotations

import shlex
from pathlib import Path

from vt_core.storage.layout import layout
from vt_core.storage.location import DamagedFileError, Location, location, read_json
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import load_study, lock_holder, run_path


def seeds_by_status(rows: list[dict]) -> dict[str, list[int]]:
    """The seeds of :func:`seed_status`'s rows, by status."""
    by: dict[str, list[int]] = {}
    for r in rows:
        by.setdefault(r["status"], []).append(r["seed"])
    return by


def resume_command(study: str | Location) -> str:
    """How to go on with the study: `vt run` with the config file it was made from, when study.json
    names one that is still there; otherwise where the config is kept."""
    try:
        source = read_json(layout(study).study_json).get("source")
    except (OSError, DamagedFileError):
        source = None
    if source and Path(source).is_file():
        return f"`vt run {shlex.quote(source)}`"
    gone = f" ({source} is gone)" if source else ""
    return (f"`vt run CONFIG` with the study's config{gone}; study.json holds it, resolved, under \"config\"")


def study_state(rows: list[dict], resume: str = "`vt run CONFIG`") -> tuple[str, list[str]]:
    """The study's state in the seeds' vocabulary, and what to do about each kind of seed
    (``resume``: the command that resumes it, :func:`resume_command`).

    ``running`` (a seed is being trained), ``complete`` (every seed complete, diverged or stopped
    early by the live policy, at least one complete or stopped early), ``failed`` (a seed failed or
    is damaged, or every seed diverged),
    ``interrupted`` (seeds interrupted or not started, none failed, diverged or damaged: `vt run`
    resumes them; a study stopped before any seed finished is interrupted, not failed); seeds not
    started while another live process holds the study are ``queued`` (:func:`seed_status`), and
    the study ``running``."""
    by = seeds_by_status(rows)
    hints = []
    if by.get("queued"):
        hints.append(f"seeds {_seeds(by['queued'])} queued: the run that holds the study trains them in their turn")
    if by.get("interrupted") or by.get("missing"):
        todo = sorted(by.get("interrupted", []) + by.get("missing", []))
        hints.append(f"seeds {_seeds(todo)} interrupted or not started: {resume} resumes them from their "
                     f"last committed checkpoint")
    if by.get("failed"):
        hints.append(f"seeds {_seeds(by['failed'])} failed (error above): fix the cause, then "
                     f"`vt rerun STUDY --seed N` retrains each from scratch")
    if by.get("damaged"):
        hints.append(f"seeds {_seeds(by['damaged'])} damaged: `vt validate STUDY` names what; {resume} "
                     f"retrains them")
    if by.get("stopped-early"):
        hints.append(f"seeds {_seeds(by['stopped-early'])} stopped early by the live policy (predicted to converge "
                     f"too late; `vt status STUDY` says why); they are analysed as they stand. Without "
                     f"live.stop_if_predicted_beyond in the config, {resume} resumes them")
    if by.get("diverged"):
        hints.append(f"seeds {_seeds(by['diverged'])} diverged (non-finite loss): lower the learning rate to "
                     f"train them; the analysis leaves their last checkpoints out")
    if by.get("running") or by.get("queued"):
        return "running", hints
    if by.get("failed") or by.get("damaged"):
        return "failed", hints
    if by.get("interrupted") or by.get("missing"):
        return "interrupted", hints
    if not by.get("complete") and not by.get("stopped-early"):  # every seed diverged: nothing trained to the end
        return "failed", hints
    return "complete", hints


def _seeds(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))


def seed_status(study: str | Location) -> list[dict]:
    """One row per configured seed: status, committed checkpoints, last step, error. A seed with no
    store yet is ``missing``, or ``queued`` while another live process holds the study's lock (a
    run's later seed groups)."""
    study = location(study)
    config = load_study(study)
    not_started = "queued" if lock_holder(study) else "missing"
    rows = []
    for seed in config.seeds:
        path = run_path(study, seed)
        if not path.exists():
            rows.append({"seed": seed, "status": not_started, "committed_steps": 0, "last_step": None,
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
