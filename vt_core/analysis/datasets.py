"""The HMM's results and the analysis as labelled datasets, for :func:`vt_core.report.datatree.open_study`.

``states``: the decoded state of every (seed, step) from ``hmm/paths.json`` and the posterior
probability of each state under the chosen model (``hmm/model.npz`` applied to ``hmm/input.npz``:
the states' labels are the stored ones). ``analysis``: ``analysis.json`` as three tables (states,
transitions, seeds) and its scalars as attributes. Only JSON and npz are read (no pickles).
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from vt_core.analysis import hmm
from vt_core.analysis.states import load_input
from vt_core.storage import schema as naming
from vt_core.storage.layout import layout
from vt_core.storage.location import Location, load_npz, read_json

_FIX = "`vt analyze STUDY` recomputes it"

NO_STATE = -1


def _grid(rows: dict[int, tuple[np.ndarray, np.ndarray]], fill) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Per-seed (steps, values) on the union of steps: (seeds, steps, values[seed, step, ...])."""
    seeds = sorted(rows)
    steps = np.unique(np.concatenate([np.asarray(s) for s, _ in rows.values()]))
    first = np.asarray(next(iter(rows.values()))[1])
    out = np.full((len(seeds), len(steps), *first.shape[1:]), fill, dtype=first.dtype if fill == NO_STATE else float)
    for i, seed in enumerate(seeds):
        st, v = rows[seed]
        out[i, np.searchsorted(steps, st)] = v
    return seeds, steps, out


def states_dataset(study: str | Location) -> xr.Dataset:
    """Decoded state and posterior per (seed, step); chosen k and the selection as attributes."""
    files = layout(study)
    paths = read_json(files.paths, _FIX)
    decoded = {int(s): (np.asarray(p["steps"], dtype=np.int64), np.asarray(p["states"], dtype=np.int64))
               for s, p in paths.items()}
    data = load_input(study)
    model = hmm.load_model(load_npz(files.model))
    post = {seed: (steps, model.predict_proba(z)) for seed, steps, z in zip(data.seeds, data.steps, data.z)}
    seeds, steps, state = _grid(decoded, NO_STATE)
    _, psteps, prob = _grid(post, np.nan)
    k = prob.shape[-1]
    ds = xr.Dataset(
        {"state": (("seed", "step"), state, {"long_name": "decoded HMM state (Viterbi)", "missing_value": NO_STATE}),
         "posterior": (("seed", "step", "hmm_state"),
                       xr.DataArray(prob, coords={"step": psteps}, dims=("seed", "step", "hmm_state"))
                       .reindex(step=steps).values,
                       {"long_name": "posterior probability of each state", "units": "probability"})},
        coords={"seed": ("seed", seeds, naming.scalar_attrs("seed")), "step": ("step", steps, naming.scalar_attrs("step")),
                "hmm_state": ("hmm_state", np.arange(k), {"long_name": "HMM state (labelled by mean first visit)"})})
    # the state as a category: xarray and pandas draw an int on a continuous scale, a label one colour each
    labels = np.where(state >= 0, np.char.add("state ", state.astype(str)), "")
    ds["state_label"] = (("seed", "step"), labels.astype(object),
                         {"long_name": "decoded HMM state, as a category ('' where none)"})
    sel = read_json(files.selection, _FIX)
    ds.attrs = naming.netcdf_attrs({
        "chosen_k": sel["chosen_k"], "status": sel.get("status", "decided"), "criterion": sel.get("criterion"),
        "reasons": sel.get("reasons"), "runner_up_k": sel.get("runner_up_k"), "features": data.features,
        "standardize": sel.get("standardize"), "covariance": sel.get("covariance"),
        "selection_table": sel["table"], "bootstrap": sel.get("bootstrap")})
    return ds


def _table(rows: list[dict], dim: str, columns: dict[str, tuple[str, dict]]) -> xr.Dataset:
    """``rows`` as a dataset along ``dim``: ``columns`` maps a row key to (variable, attrs)."""
    data = {}
    for key, (var, attrs) in columns.items():
        vals = [r.get(key) for r in rows]
        if all(isinstance(v, (bool, np.bool_)) for v in vals):
            arr = np.asarray(vals, dtype=bool)
        elif all(isinstance(v, int) for v in vals):
            arr = np.asarray(vals, dtype=np.int64)
        elif all(v is None or isinstance(v, (int, float)) for v in vals):
            arr = np.asarray([np.nan if v is None else v for v in vals], dtype=float)
        else:
            arr = np.asarray([v if isinstance(v, str) else json.dumps(v) for v in vals], dtype=object)
        data[var] = (dim, arr, attrs)
    return xr.Dataset(data)


_STATE_COLUMNS = {
    "occupancy": ("occupancy", {"long_name": "share of all checkpoints in the state", "units": "fraction"}),
    "first_step_mean": ("first_step_mean", {"long_name": "mean step of the first visit", "units": "steps"}),
    "step_min": ("step_min", {"long_name": "earliest step in the state", "units": "steps"}),
    "step_max": ("step_max", {"long_name": "latest step in the state", "units": "steps"}),
    "detour": ("detour", {"long_name": "flagged as a detour (regression interval above zero)"}),
    "coefficient": ("coefficient", {"long_name": "delay of convergence per step spent in the state", "units": "steps/step"}),
    "stability": ("stability", {"long_name": "share of bootstrap resamples that find the state again", "units": "fraction"}),
    "seeds": ("seeds", {"long_name": "seeds visiting the state (JSON list)"}),
}


def analysis_nodes(study: str | Location) -> dict[str, xr.Dataset]:
    """``analysis.json`` as the datasets ``states``, ``transitions`` and ``seeds``."""
    a = read_json(layout(study).analysis, _FIX)
    summaries = a["states"]
    states = _table(summaries, "hmm_state", _STATE_COLUMNS).assign_coords(
        hmm_state=("hmm_state", [s["state"] for s in summaries], {"long_name": "HMM state"}))
    feats = list(a.get("raw_features") or (summaries[0]["means"] if summaries else []))
    states["n_seeds"] = ("hmm_state", [len(s["seeds"]) for s in summaries], {"long_name": "seeds visiting the state"})
    states["mean"] = (("hmm_state", "feature"), np.array([[s["means"].get(f, np.nan) for f in feats] for s in summaries]),
                      {"long_name": "mean of each feature in the state"})
    states = states.assign_coords(feature=("feature", np.asarray(feats, dtype=object), {"long_name": "HMM feature"}))
    trans = [t | {"top_feature": (t.get("top_features") or [{}])[0].get("feature", "")} for t in a["transitions"]]
    transitions = _table(trans, "transition", {
        "from": ("from_state", {"long_name": "state left"}), "to": ("to_state", {"long_name": "state entered"}),
        "prob": ("probability", {"long_name": "transition probability per step of the chain", "units": "probability"}),
        "n_seeds": ("n_seeds", {"long_name": "seeds taking the transition"}),
        "top_feature": ("top_feature", {"long_name": "feature with the largest mean absolute gradient"}),
    })
    seeds = sorted(int(s) for s in a["convergence_step"])
    transitions["first_step"] = (("transition", "seed"), np.array(
        [[t.get("first_step", {}).get(str(s), np.nan) for s in seeds] for t in a["transitions"]], dtype=float).reshape(
        len(a["transitions"]), len(seeds)), {"long_name": "step at which the seed first takes the transition "
                                             "(NaN: never)", "units": "steps"})
    transitions = transitions.assign_coords(seed=("seed", seeds, naming.scalar_attrs("seed")))
    k = len(summaries)
    per_seed = xr.Dataset(
        {"convergence_step": ("seed", [np.nan if a["convergence_step"][str(s)] is None else a["convergence_step"][str(s)]
                                       for s in seeds], {"long_name": "first step with held-out accuracy at the "
                                                         "threshold", "units": "steps"}),
         "time_in_state": (("seed", "hmm_state"),
                           np.array([a["time_in_states"].get(str(s), [np.nan] * k) for s in seeds], dtype=float),
                           {"long_name": "steps spent in each state", "units": "steps"}),
         "dissimilarity": ("seed", [(a.get("seed_dissimilarity") or {}).get(str(s), np.nan) for s in seeds],
                           {"long_name": "mean Wasserstein distance of the seed's occupancy to the others"})},
        coords={"seed": ("seed", seeds, naming.scalar_attrs("seed")),
                "hmm_state": ("hmm_state", np.arange(k), {"long_name": "HMM state"})})
    attrs = naming.netcdf_attrs({
        "chosen_k": a["chosen_k"], "detour_states": a.get("detour_states"), "regression": a.get("regression"),
        "trajectory_dissimilarity": a.get("trajectory_dissimilarity"), "unusual_seeds": a.get("unusual_seeds"),
        "convergence_threshold": a.get("convergence_threshold"), "selection": a.get("selection")})
    for ds in (states, transitions, per_seed):
        ds.attrs = dict(attrs)
    return {"states": states, "transitions": transitions, "seeds": per_seed, "selection": selection_dataset(study)}


_SELECTION_COLUMNS = {
    "status": ("status", {"long_name": "ok, failed or infeasible"}),
    "bic": ("bic", {"long_name": "BIC of the best restart (lower is better)"}),
    "aic": ("aic", {"long_name": "AIC of the best restart"}),
    "train_ll": ("train_ll", {"long_name": "log-likelihood of the training seeds"}),
    "heldout_ll": ("heldout_ll", {"long_name": "log-likelihood of the held-out seeds"}),
    "cv_ll": ("cv_ll", {"long_name": "cross-validated held-out log-likelihood per observation"}),
    "cv_ll_sd": ("cv_ll_sd", {"long_name": "its standard deviation over folds"}),
    "bic_weight": ("bic_weight", {"long_name": "BIC weight (Wagenmakers & Farrell 2004)", "units": "probability"}),
    "n_params": ("n_params", {"long_name": "free parameters"}),
    "n_ok": ("n_ok", {"long_name": "restarts that converged"}),
    "n_failed": ("n_failed", {"long_name": "restarts that failed"}),
}


def selection_dataset(study: str | Location) -> xr.Dataset:
    """The model-selection table along ``k`` (numbers, not a JSON string; NaN where a k has none)."""
    sel = read_json(layout(study).selection, _FIX)
    rows = [{key: r.get(key) for key in _SELECTION_COLUMNS} for r in sel["table"]]
    for r in rows:  # a k not fitted has no numbers: NaN, not a column of objects
        r.update({key: (np.nan if r[key] is None else r[key]) for key in _SELECTION_COLUMNS if key != "status"})
    ds = _table(rows, "k", _SELECTION_COLUMNS).assign_coords(k=("k", [r["k"] for r in sel["table"]],
                                                                  {"long_name": "number of HMM states"}))
    ds.attrs = {"chosen_k": sel["chosen_k"], "status": sel.get("status", "decided"), "criterion": sel.get("criterion")}
    return ds
