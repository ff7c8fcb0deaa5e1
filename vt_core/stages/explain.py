"""Stage 4, explanations: state summaries, the state graph, transition explanations, convergence,
detours and dissimilarity -> ``analysis.json``. The steps are :mod:`vt_core.analysis.states`'s; the maths is in
:mod:`vt_core.analysis.transitions` and :mod:`vt_core.analysis.detours`."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np

from vt_core.analysis import states
from vt_core.analysis import transitions as analysis
from vt_core.metrics.store import load_features
from vt_core.names import VERSION
from vt_core.storage.handle import Study, StudyRef
from vt_core.storage.location import read_json

log = logging.getLogger("vt")


def analysis_fingerprint(study: StudyRef, seeds: list[int]) -> str:
    """What the analysis depends on: metric and HMM settings, each seed's committed checkpoints."""
    study = Study.open(study)
    config = study.config
    runs = []
    for seed in seeds:
        a = study.run(seed).attrs
        runs.append([seed, a["status"], a["committed_steps"], a["config_hash"]])
    blob = json.dumps([VERSION, config.metrics.model_dump(mode="json"),
                       config.hmm.model_dump(mode="json"), runs], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def analysis_is_current(study: StudyRef, seeds: list[int]) -> bool:
    """True when analysis.json, the HMM files and the dashboard were made from exactly these inputs
    and are intact (a damaged one is logged and the analysis recomputed)."""
    from vt_core.storage.output_integrity import analysis_damage

    study = Study.open(study)
    paths = study.layout
    if not seeds or not paths.analysis.is_file() or not paths.dashboard.is_file():
        return False
    damage = analysis_damage(study)
    if damage:
        log.warning("%s; recomputing the analysis", damage)
        return False
    return read_json(paths.analysis).get("fingerprint") == analysis_fingerprint(study, seeds)


def convergence_steps(study: StudyRef, seeds: list[int], threshold: float) -> dict[int, int | None]:
    """Each seed's first step with held-out accuracy at ``threshold`` or above (None: never)."""
    value = load_features(study, ["test_accuracy"])
    out = {}
    for s in seeds:
        acc = value.sel(seed=s, metric="test_accuracy")
        out[s] = analysis.convergence_step(acc["step"].values, acc.values, threshold)
    return out


def unmeasured_seeds(study: StudyRef, seeds: list[int]) -> list[int]:
    """The seeds with no held-out accuracy at any checkpoint (NaN throughout: imported checkpoints,
    or a recorded loop that never gave ``test_accuracy``)."""
    value = load_features(study, ["test_accuracy"])
    return [s for s in seeds if not np.isfinite(value.sel(seed=s, metric="test_accuracy").values).any()]


def explain(study: StudyRef) -> dict:
    """States, the state graph, transition explanations, detours -> analysis.json
    (:func:`vt_core.analysis.states.explain`, with the study's convergence steps and fingerprint)."""
    study = Study.open(study)
    config = study.config
    seeds = states.load_input(study).seeds
    conv = convergence_steps(study, seeds, config.hmm.convergence_threshold)
    result = states.explain(study, config.hmm, conv, config.name, unmeasured=unmeasured_seeds(study, seeds),
                            extra={"fingerprint": analysis_fingerprint(study, seeds)})
    return {"chosen_k": result["chosen_k"], "n_transitions": len(result["transitions"])}
