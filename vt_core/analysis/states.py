"""Latent states of any set of trajectories: the HMM pipeline over a directory's ``hmm/`` files.

A study's stages (:mod:`vt_core.stages.hmm`, :mod:`vt_core.stages.explain`) and
:func:`vt_core.analysis.trajectories.analyse_trajectories` (a table of trajectories, no study) run the same
steps, each reading and writing small files under ``root/hmm`` (:mod:`vt_core.storage.layout`)::

    prepare   -> hmm/input.npz, hmm/split.json    standardise, split seeds, folds, feasible k, jobs
    fit (job) -> hmm/fits/NAME.json (+ .npz)      one per (kind, k, restart, fold or resample)
    select    -> the k to fit next (grid extension), then the bootstrap jobs
    finalize  -> hmm/selection.json, hmm/model.npz, hmm/paths.json
    explain   -> analysis.json
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import NamedTuple

import networkx as nx
import numpy as np

from vt_core.analysis import change_model, hmm, paper_criterion, selection
from vt_core.analysis import transitions as analysis
from vt_core.analysis.detours import detour_regression
from vt_core.analysis.phases import phase_timeline
from vt_core.analysis.records import Analysis, FeatureChange, StateSummary, Transition, load_selection, selection_summary
from vt_core.config.study_config import HMMConfig
from vt_core.names import VERSION
from vt_core.storage.layout import layout
from vt_core.storage.location import (
    DamagedFileError,
    Location,
    load_npz,
    location,
    read_json,
    save_npz,
    write_json_atomic,
)

_FIX = "`vt analyze STUDY` recomputes it"


class HMMInput(NamedTuple):
    """``hmm/input.npz`` split back into one array per seed."""

    seeds: list[int]
    z: list[np.ndarray]
    raw: list[np.ndarray]
    steps: list[np.ndarray]
    features: list[str]
    raw_features: list[str]


def _degrade(seqs: hmm.Sequences, cfg: HMMConfig) -> tuple[HMMConfig, list[str]]:
    """Settings under which this data can support at least one state, and what was given up for
    it: the held-out seeds, then the full covariance, then features (principal components). A
    small study is analysed with what it allows and says so; it never fails for lack of frames."""
    notes: list[str] = []

    def n_obs(c: HMMConfig) -> int:
        train, _ = hmm.split_seeds(seqs.seeds, c.holdout_fraction, c.seed)
        return sum(len(x) for s, x in zip(seqs.seeds, seqs.values) if s in train)

    def fits(c: HMMConfig) -> bool:
        n_feat = c.pca_components or len(seqs.features)
        return hmm.n_parameters(1, min(n_feat, len(seqs.features)), c.covariance) < n_obs(c)

    if fits(cfg):
        return cfg, notes
    simpler = {"full": ("diag", "spherical"), "tied": ("diag", "spherical"), "diag": ("spherical",), "spherical": ()}
    steps: list[tuple[dict, str]] = ([({"holdout_fraction": 0.0, "cv_folds": 0}, "no seeds held out")]
                                    if cfg.holdout_fraction > 0 else [])
    steps += [({"covariance": c}, f"covariance = {c!r}") for c in simpler[cfg.covariance]]
    for update, why in steps:
        cfg = cfg.model_copy(update=update)
        notes.append(why)
        if fits(cfg):
            break
    if not fits(cfg):
        cfg = cfg.model_copy(update={"pca_components": max(1, (n_obs(cfg) - 2) // 3)})
        notes.append(f"the features projected on {cfg.pca_components} principal components")
    return cfg, [f"too few observations for the settings asked; analysed with {', '.join(notes)}"]


def effective(root: str | Location, cfg: HMMConfig) -> HMMConfig:
    """The settings the analysis under ``root`` was prepared with (a small study may have had to
    give some up: :func:`_degrade`)."""
    update = _split(root).get("effective") or {}
    return cfg.model_copy(update=update) if update else cfg


def prepare(root: str | Location, seqs: hmm.Sequences, cfg: HMMConfig) -> dict:
    """Standardise, project, split seeds into fit / held-out and folds, find the feasible k; save
    the input and return the first jobs (main and cross-validation fits over the feasible grid)."""
    short = [s for s, x in zip(seqs.seeds, seqs.values) if len(x) < 2]
    if short:
        raise hmm.HMMError(f"seeds {short} have fewer than 2 complete checkpoints; cannot fit an HMM")
    asked = cfg
    cfg, degraded = _degrade(seqs, cfg)
    train, held = hmm.split_seeds(seqs.seeds, cfg.holdout_fraction, cfg.seed)
    z = seqs.zscored(cfg.standardize)
    names, pca = list(seqs.features), {}
    if cfg.pca_components:
        mu, comps, ratio = hmm.pca_projection([z[seqs.seeds.index(s)] for s in train], cfg.pca_components)
        z = [(x - mu) @ comps.T for x in z]
        names = [f"pc{i + 1}" for i in range(len(comps))]
        pca = {"components": comps.tolist(), "explained_variance_ratio": ratio.tolist(), "of": seqs.features}
    n_obs = sum(len(z[seqs.seeds.index(s)]) for s in train)
    hmm.check_feasible(n_obs, len(names), cfg)  # cannot happen after _degrade; a clear error if it does
    ok, infeasible = selection.feasible_ks(n_obs, len(names), cfg, 2 * cfg.max_states)
    folds = selection.cv_folds(train, cfg.cv_folds, cfg.seed)
    files = layout(root)
    save_npz(files.hmm_input, seeds=np.array(seqs.seeds), lengths=np.array([len(x) for x in z]),
             z=np.concatenate(z), raw=np.concatenate(seqs.values), steps=np.concatenate(seqs.steps),
             features=np.array(names), raw_features=np.array(seqs.features))
    grid = [k for k in ok if k <= cfg.max_states]
    changed = {key: v for key, v in cfg.model_dump().items() if v != getattr(asked, key)}
    split = {"train": train, "heldout": held, "folds": folds, "features": names, "n_obs": n_obs,
             "max_feasible_k": max(ok), "infeasible": {str(k): v for k, v in infeasible.items()}, "pca": pca,
             "standardize": cfg.standardize, "effective": changed, "degraded": degraded}
    write_json_atomic(files.hmm_split, split | {"inputs_key": _inputs_key(z, seqs, split, cfg)})
    return {"jobs": selection.fit_jobs(grid, cfg, len(folds)), "train": train, "heldout": held,
            "max_feasible_k": max(ok), "capped": [k for k in infeasible if k <= cfg.max_states],
            "degraded": degraded}


def load_input(root: str | Location) -> HMMInput:
    d = load_npz(layout(root).hmm_input)
    cut = np.cumsum(d["lengths"])[:-1]

    def split(a: np.ndarray) -> list[np.ndarray]:
        return np.split(a, cut)

    return HMMInput([int(s) for s in d["seeds"]], split(d["z"]), split(d["raw"]), split(d["steps"]),
                    [str(f) for f in d["features"]], [str(f) for f in d["raw_features"]])


def _split(root: str | Location) -> dict:
    return read_json(layout(root).hmm_split, _FIX)


def _inputs_key(z: list[np.ndarray], seqs: hmm.Sequences, split: dict, cfg: HMMConfig) -> str:
    """What every fit depends on: the standardised sequences, the seeds and steps, the split and
    folds, the effective settings and vt's version. A fit saved under the same key is reused."""
    h = hashlib.sha256(json.dumps([VERSION, cfg.model_dump(mode="json"), split, seqs.seeds], sort_keys=True).encode())
    for a in (*z, *seqs.steps):
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()[:20]


def _saved_fit(root: str | Location, name: str, key: str | None) -> dict | None:
    """The row of fit ``name`` saved under the inputs ``key`` (intact, its parameters present), or None."""
    path = layout(root).fit(name, "json")
    if key is None or not path.is_file():
        return None
    try:
        row = read_json(path)
    except DamagedFileError:
        return None  # fitted again, and written over
    if row.pop("inputs_key", None) != key:
        return None
    if row.get("params_path"):  # where this study keeps them now (a study moved or copied keeps its fits)
        here = layout(root).fit(name, "npz")
        if not here.is_file():
            return None
        row["params_path"] = str(here)
    return row


def fit(root: str | Location, job: dict, cfg: HMMConfig) -> dict:
    """One fit; its row (and parameters) saved under hmm/fits/. A fit already saved from the same
    inputs and settings (:func:`_inputs_key`) is reused: `vt analyze` on an unchanged study refits
    nothing (issue 34)."""
    split = _split(root)
    name = selection.job_name(job)
    if (saved := _saved_fit(root, name, split.get("inputs_key"))) is not None:
        return saved
    data = load_input(root)
    cfg = effective(root, cfg)
    z = dict(zip(data.seeds, data.z))
    row = selection.run_job(job, z, split["train"], split["heldout"], split["folds"], cfg,
                            layout(root).fit(name, "npz"))
    write_json_atomic(layout(root).fit(name, "json"), row | {"inputs_key": split.get("inputs_key")})
    return row


def select(root: str | Location, rows: list[dict], cfg: HMMConfig) -> dict:
    """After the main and cv fits: the k to fit next when BIC is lowest at the grid's edge
    (``extend_jobs``), otherwise the bootstrap fits over every k tried (``bootstrap_jobs``)."""
    split = _split(root)
    cfg = effective(root, cfg)
    infeasible = {int(k): v for k, v in split["infeasible"].items()}
    sel = selection.choose(rows, infeasible, cfg, split["max_feasible_k"])
    if sel["extend"]:
        return {"extend_jobs": selection.fit_jobs(sel["extend"], cfg, len(split["folds"])), "bootstrap_jobs": [],
                "chosen_k": sel["chosen_k"]}
    ok = [t for t in sel["table"] if t["status"] == "ok"]
    starts = {t["k"]: t["params_path"] for t in ok if t.get("params_path")}
    return {"extend_jobs": [], "bootstrap_jobs": selection.bootstrap_jobs([t["k"] for t in ok], cfg, starts),
            "chosen_k": sel["chosen_k"]}


def _params(row: dict) -> dict:
    return row["params"] if "params" in row else load_npz(location(row["params_path"]))


def finalize(root: str | Location, rows: list[dict], cfg: HMMConfig) -> dict:
    """Choose k, decode every seed with the best model at that k (states relabelled by mean first
    visit), measure each state's stability under the bootstrap models; save."""
    split = _split(root)
    cfg = effective(root, cfg)
    infeasible = {int(k): v for k, v in split["infeasible"].items()}
    sel = selection.choose(rows, infeasible, cfg, split["max_feasible_k"])
    sel["reasons"] = list(split.get("degraded") or []) + sel["reasons"]
    data = load_input(root)
    paper_criterion.apply(sel, data.seeds, data.raw, cfg)
    k = sel["chosen_k"]
    best = next(t for t in sel["table"] if t["k"] == k)
    params = load_npz(location(best["params_path"]))
    params_at_k = params
    states = hmm.decode(params, data.z)
    perm = hmm.canonical_permutation(states, data.steps, k, params["means"])
    params = hmm.permute_params(params, perm)
    states = [perm[p] for p in states]
    boot = selection.bootstrap_summary(rows, k)
    resampled = []
    for r in boot.pop("fits_at_chosen"):
        try:
            resampled.append(hmm.decode(_params(r), data.z))
        except ValueError:  # a resample's model that cannot decode (older fits): left out, counted
            boot["unusable_fits"] = boot.get("unusable_fits", 0) + 1
    if cfg.change_model:
        sel["change"] = change_model.summarise(rows, params_at_k, data.seeds, data.z, split["train"], split["heldout"])
    boot["state_stability"] = selection.state_stability(states, resampled, k)
    boot["start"] = cfg.bootstrap_start
    sel["criteria"], disagree = selection.agreement(sel, boot)
    if disagree:
        sel["reasons"] += disagree
        sel["status"] = "undetermined"
    sel.update(bootstrap=boot, standardize=split.get("standardize", cfg.standardize),
               covariance=cfg.covariance, n_seeds=len(data.seeds), n_train_seeds=len(split["train"]))
    sel.pop("extend")
    files = layout(root)
    save_npz(files.model, **params)
    write_json_atomic(files.selection, sel)
    write_json_atomic(files.paths, {str(s): {"steps": st, "states": p} for s, st, p in zip(data.seeds, data.steps, states)})
    return {"chosen_k": k, "status": sel["status"], "table": sel["table"]}


def _transitions(data: HMMInput, params: dict, covars: np.ndarray, graph: nx.DiGraph, grads: dict,
                 summaries: list[StateSummary]) -> list[Transition]:
    """Each used transition: its probability, the seeds taking it (and when), every feature's mean
    absolute gradient (the paper's ranking), and each feature's change in state means in units of
    the within-state standard deviation (pooled over the two states) and in raw units."""
    features, means = data.features, params["means"]
    sd = np.sqrt(np.clip(np.einsum("kff->kf", covars), 0, None))  # (k, F) within-state sd, z units
    out: list[Transition] = []
    for (i, j), g in sorted(grads.items()):
        pooled = np.sqrt((sd[i] ** 2 + sd[j] ** 2) / 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            sd_change = np.where(pooled > 0, (means[j] - means[i]) / pooled, np.nan)

        def row(f: int, i=i, j=j, g=g, sd_change=sd_change) -> FeatureChange:
            return {"feature": features[f], "mean_abs_gradient": float(g[f]),
                    "z_mean_change": float(means[j, f] - means[i, f]), "sd_change": float(sd_change[f]),
                    "raw_mean_change": (summaries[j]["means"].get(features[f], float("nan"))
                                        - summaries[i]["means"].get(features[f], float("nan")))}

        edge = graph.edges[i, j] if graph.has_edge(i, j) else {}
        out.append({
            "from": i, "to": j, "prob": float(params["transmat"][i, j]), "n_seeds": edge.get("n_seeds", 0),
            "seeds": edge.get("seeds", []), "mean_abs_gradient": {features[f]: float(g[f]) for f in range(len(features))},
            "top_features": [row(f) for f in np.argsort(-g)[:5]],
            "top_by_sd_change": [row(f) for f in np.argsort(-np.nan_to_num(np.abs(sd_change)))[:5]],
        })
    return out


def _when(paths: list[np.ndarray], steps: list[np.ndarray], seeds: list[int], transitions: list[Transition]) -> None:
    """Add the step at which each seed first takes each transition."""
    for t in transitions:
        at = {}
        for p, st, s in zip(paths, steps, seeds):
            hit = np.flatnonzero((p[:-1] == t["from"]) & (p[1:] == t["to"]))
            if hit.size:
                at[str(s)] = int(st[hit[0] + 1])
        t["first_step"] = at


def explain(root: str | Location, cfg: HMMConfig, convergence: dict[int, int | None], name: str,
            extra: dict | None = None, unmeasured: list[int] | None = None) -> Analysis:
    """States, the state graph, transition explanations, detours and dissimilarity: the analysis,
    written to ``analysis.json`` and returned. ``convergence``: each seed's convergence step;
    ``unmeasured``: seeds without any held-out accuracy (imported checkpoints, a loop that gave none)."""
    data = load_input(root)
    files = layout(root)
    params = load_npz(files.model)
    sel = load_selection(root)
    stored = read_json(files.paths, _FIX)
    paths = [np.asarray(stored[str(s)]["states"]) for s in data.seeds]
    k = sel["chosen_k"]
    covars = hmm.load_model(params).covars_  # full (k, F, F) whatever the covariance type
    graph = analysis.state_graph(params["transmat"], paths, data.seeds)
    grads = analysis.explain_transitions(data.z, paths, params["startprob"], params["transmat"],
                                         params["means"], covars)
    summaries = analysis.state_summaries(paths, data.steps, data.raw, data.seeds, data.raw_features, k)
    transitions = _transitions(data, params, covars, graph, grads, summaries)
    _when(paths, data.steps, data.seeds, transitions)
    det = detour_regression(convergence, dict(zip(data.seeds, paths)), dict(zip(data.seeds, data.steps)), k,
                            seed=cfg.seed, unmeasured=unmeasured)
    stability = (sel.get("bootstrap") or {}).get("state_stability") or [None] * k
    for st in summaries:
        st["detour"] = st["state"] in det["detours"]
        st["coefficient"] = det["coefficients"].get(str(st["state"]))
        st["interval"] = det["intervals"].get(str(st["state"]))
        st["stability"] = stability[st["state"]]
    occupancy = {s: analysis.time_in_states(p, st, k) for s, p, st in zip(data.seeds, paths, data.steps)}
    dissimilarity, per_seed = analysis.trajectory_dissimilarity(occupancy)
    result: Analysis = {
        "study": name, "chosen_k": k, "features": data.features, "raw_features": data.raw_features,
        "states": summaries, "graph": nx.node_link_data(graph, edges="edges"), "transitions": transitions,
        "convergence_step": {str(s): convergence.get(s) for s in data.seeds},
        "convergence_threshold": cfg.convergence_threshold,
        "accuracy_unrecorded": sorted(int(s) for s in (unmeasured or []) if s in data.seeds),
        "time_in_states": {str(s): v.tolist() for s, v in occupancy.items()},
        "regression": det, "detour_states": det["detours"],
        "trajectory_dissimilarity": dissimilarity, "seed_dissimilarity": per_seed,
        "unusual_seeds": analysis.unusual_seeds(per_seed),
        "selection": selection_summary(sel),
        "phases": phase_timeline(dict(zip(data.seeds, paths)), dict(zip(data.seeds, data.steps)), k),
    }
    result.update(extra or {})  # type: ignore[typeddict-item]
    write_json_atomic(files.analysis, result)
    return result


def fit_rounds(rows: list[dict], select_next: Callable[[list[dict]], dict],
               fit_many: Callable[[list[dict]], Iterable[dict]],
               on_round: Callable[[str, int], None] | None = None) -> list[dict]:
    """The rounds of fits after the first (``rows``): the grid's extensions while BIC is lowest at
    its edge, then the bootstrap fits; every row. ``select_next`` is :func:`select` (or the task
    that runs it), ``fit_many`` fits a list of jobs (``map``, a process pool, Prefect tasks), and
    ``on_round`` hears each round's kind (``hmm``, ``bootstrap``) and size."""
    while True:
        nxt = select_next(rows)
        more = nxt["extend_jobs"] or nxt["bootstrap_jobs"]
        if more:
            if on_round is not None:
                on_round("hmm" if nxt["extend_jobs"] else "bootstrap", len(more))
            rows = rows + list(fit_many(more))
        if not nxt["extend_jobs"]:
            return rows


def run_fits(root: str | Location, jobs: list[dict], cfg: HMMConfig, run=map) -> list[dict]:
    """Every fit the selection needs, with ``run`` mapping :func:`fit` over jobs (``map``, a
    process pool's ``map``): the main and cv jobs, then :func:`fit_rounds`. (The Prefect flows run
    the same rounds with tasks.)"""
    def fit_many(more: list[dict]) -> list[dict]:
        return list(run(fit, [root] * len(more), more, [cfg] * len(more)))

    return fit_rounds(fit_many(jobs), lambda rows: select(root, rows, cfg), fit_many)
