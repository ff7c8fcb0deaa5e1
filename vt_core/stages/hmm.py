"""Stage 3, HMMs: prepare the input once, one task per fit, select k (extending the grid while
BIC is lowest at its edge), bootstrap, then decode. The steps are :mod:`vt_core.analysis.states`'s (shared
with :func:`vt_core.analysis.trajectories.analyse_trajectories`); here they get the study's features and
settings::

    prepare_hmm      -> hmm/input.npz, hmm/split.json; the main and cross-validation jobs
    fit_hmm (job)    -> hmm/fits/NAME.json (+ .npz parameters)
    select_model     -> the next jobs: the grid's extension, or the bootstrap fits
    finalize_model   -> hmm/selection.json, hmm/model.npz, hmm/paths.json
"""

from __future__ import annotations

from typing import TypedDict

from vt_core.analysis import hmm, records, states
from vt_core.metrics.store import load_features
from vt_core.storage.handle import Study, StudyRef


class HMMPlan(TypedDict):
    """The first fits and the seed split, from :func:`prepare_hmm`."""

    jobs: list[dict]
    train: list[int]
    heldout: list[int]
    max_feasible_k: int
    capped: list[int]


class NextFits(TypedDict):
    extend_jobs: list[dict]
    bootstrap_jobs: list[dict]
    chosen_k: int


class Selection(TypedDict):
    """What the selection task returns (the whole record: :class:`vt_core.analysis.records.Selection`)."""
    chosen_k: int
    status: str
    table: list[records.SelectionRow]


def prepare_hmm(study: StudyRef) -> HMMPlan:
    """The study's features (sorted by step per seed), standardised and split; the jobs."""
    study = Study.open(study)
    config = study.config
    seqs = hmm.sequences_from_features(load_features(study, config.hmm_features))
    plan = states.prepare(study, seqs, config.hmm)
    return {"jobs": plan["jobs"], "train": plan["train"], "heldout": plan["heldout"],
            "max_feasible_k": plan["max_feasible_k"], "capped": plan["capped"]}


def fit_hmm(study: StudyRef, job: dict) -> dict:
    """One fit (main, cross-validation fold or bootstrap resample); a failure is a row with its
    reason, never an exception."""
    study = Study.open(study)
    return states.fit(study, job, study.config.hmm)


def select_model(study: StudyRef, rows: list[dict]) -> NextFits:
    study = Study.open(study)
    return states.select(study, rows, study.config.hmm)  # type: ignore[return-value]


def finalize_model(study: StudyRef, rows: list[dict]) -> Selection:
    study = Study.open(study)
    out = states.finalize(study, rows, study.config.hmm)
    return {"chosen_k": out["chosen_k"], "status": out["status"], "table": out["table"]}


def load_selection(study: StudyRef) -> Selection:
    sel = records.load_selection(study)
    return {"chosen_k": sel["chosen_k"], "status": sel.get("status", "decided"), "table": sel["table"]}
