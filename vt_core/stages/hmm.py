"""Stage 3, HMMs: prepare the input once, one fit per (k, restart), then select k and decode.

::

    prepare_hmm      -> hmm/input.npz, hmm/split.json
    fit_hmm (k, r)   -> hmm/fits/k=KK-r=RR.json (+ .npz parameters)
    select_model     -> hmm/selection.json, hmm/model.npz, hmm/paths.json

The estimator, selection rules and decoding are in :mod:`vt_core.hmm`.
"""

from __future__ import annotations

import json
from typing import NamedTuple, TypedDict

import numpy as np

from vt_core import hmm
from vt_core.layout import layout
from vt_core.location import Location, load_npz, location, save_npz, write_json_atomic
from vt_core.metrics.incremental import load_features
from vt_core.study import load_study


class HMMPlan(TypedDict):
    """The fit grid and the seed split, from :func:`prepare_hmm`."""

    grid: list[tuple[int, int]]
    train: list[int]
    heldout: list[int]
    max_feasible_k: int


class Selection(TypedDict):
    chosen_k: int
    table: list[dict]


class HMMInput(NamedTuple):
    """``hmm/input.npz`` split back into one array per seed."""

    seeds: list[int]
    z: list[np.ndarray]
    raw: list[np.ndarray]
    steps: list[np.ndarray]
    features: list[str]
    raw_features: list[str]


def prepare_hmm(study: str | Location) -> HMMPlan:
    """Read the features, sort each seed by step, standardise, optionally project on principal
    components, split seeds, check that the data can support a fit; save the input."""
    config = load_study(study)
    h = config.hmm
    seqs = hmm.sequences_from_features(load_features(study, config.hmm_features))
    short = [s for s, x in zip(seqs.seeds, seqs.values) if len(x) < 2]
    if short:
        raise hmm.HMMError(f"seeds {short} have fewer than 2 complete checkpoints; cannot fit an HMM")
    train, held = hmm.split_seeds(seqs.seeds, h.holdout_fraction, h.seed)
    z = seqs.zscored(h.standardize)
    names = list(seqs.features)
    pca = {}
    if h.pca_components:
        mu, comps, ratio = hmm.pca_projection([z[seqs.seeds.index(s)] for s in train], h.pca_components)
        z = [(x - mu) @ comps.T for x in z]
        names = [f"pc{i + 1}" for i in range(len(comps))]
        pca = {"components": comps.tolist(), "explained_variance_ratio": ratio.tolist(), "of": seqs.features}
    n_obs = sum(len(z[seqs.seeds.index(s)]) for s in train)
    max_k = hmm.check_feasible(n_obs, len(names), h)
    paths = layout(study)
    save_npz(paths.hmm_input, seeds=np.array(seqs.seeds), lengths=np.array([len(x) for x in z]),
             z=np.concatenate(z), raw=np.concatenate(seqs.values), steps=np.concatenate(seqs.steps),
             features=np.array(names), raw_features=np.array(seqs.features))
    write_json_atomic(paths.hmm_split, {"train": train, "heldout": held, "features": names, "n_obs": n_obs,
                                        "max_feasible_k": max_k, "pca": pca})
    grid = [(k, r) for k in range(1, h.max_states + 1) for r in range(h.restarts)]
    return {"grid": grid, "train": train, "heldout": held, "max_feasible_k": max_k}


def load_input(study: str | Location) -> HMMInput:
    d = load_npz(layout(study).hmm_input)
    cut = np.cumsum(d["lengths"])[:-1]

    def split(a: np.ndarray) -> list[np.ndarray]:
        return np.split(a, cut)

    return HMMInput([int(s) for s in d["seeds"]], split(d["z"]), split(d["raw"]), split(d["steps"]),
                    [str(f) for f in d["features"]], [str(f) for f in d["raw_features"]])


def fit_hmm(study: str | Location, k: int, restart: int) -> dict:
    """One (k, restart) fit on the training seeds, scored on the held-out ones; a failed fit is a
    row with its reason, never an exception."""
    config = load_study(study)
    data = load_input(study)
    paths = layout(study)
    split = json.loads(paths.hmm_split.read_text())
    train = [data.z[data.seeds.index(s)] for s in split["train"]]
    held = [data.z[data.seeds.index(s)] for s in split["heldout"]]
    row = hmm.fit_one(train, held, k, restart, config.hmm, paths.fit(k, restart, "npz"))
    write_json_atomic(paths.fit(k, restart, "json"), row)
    return row


def select_model(study: str | Location, fits: list[dict]) -> Selection:
    """Choose k by BIC, decode every seed with Viterbi, relabel states canonically, save."""
    data = load_input(study)
    table, k = hmm.selection_table(fits, "bic")
    bics = sorted(t["bic"] for t in table if t["n_ok"])
    best = next(t for t in table if t["k"] == k)
    params = load_npz(location(best["params_path"]))
    states = hmm.decode(params, data.z)
    perm = hmm.canonical_permutation(states, data.steps, k, params["means"])
    params = hmm.permute_params(params, perm)
    states = [perm[p] for p in states]
    paths = layout(study)
    save_npz(paths.model, **params)
    write_json_atomic(paths.selection, {
        "criterion": "bic", "chosen_k": k, "table": table, "bic_weight": best["bic_weight"],
        "bic_gap_to_next": (bics[1] - bics[0]) if len(bics) > 1 else None,
        "at_max_states": k == max(t["k"] for t in table)})
    write_json_atomic(paths.paths, {str(s): {"steps": st, "states": p}
                                    for s, st, p in zip(data.seeds, data.steps, states)})
    return {"chosen_k": k, "table": table}


def load_selection(study: str | Location) -> Selection:
    sel = json.loads(layout(study).selection.read_text())
    return {"chosen_k": sel["chosen_k"], "table": sel["table"]}
