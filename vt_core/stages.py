"""The pipeline's stages on a study directory, each one function that Prefect tasks call.

Stages exchange paths and small JSON-able values only; everything else lives on disk::

    compute metrics  -> metrics.zarr
    prepare_hmm      -> hmm/input.npz, hmm/split.json
    fit_hmm (k, r)   -> hmm/fits/k=KK-r=RR.json (+ .npz parameters)
    select_model     -> hmm/selection.json, hmm/model.npz, hmm/paths.json
    explain          -> analysis.json
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import time

import networkx as nx
import numpy as np

import vt_core
from vt_core import analysis, hmm
from vt_core.location import Location, load_npz, location, same_process_only, save_npz
from vt_core.metrics.incremental import finalize_metrics, load_features, plan_metrics, write_seed_metrics
from vt_core.study import load_study, open_run, run_path

HMM_DIR = "hmm"
ANALYSIS_JSON = "analysis.json"


def usable_seeds(study: str | Location) -> list[int]:
    """Seeds whose store has at least two committed checkpoints (complete or diverged)."""
    config = load_study(study)
    out = []
    for seed in config.seeds:
        if run_path(study, seed).exists():
            store = open_run(study, seed, config)
            if store.status in ("complete", "diverged") and store.committed >= 2:
                out.append(seed)
    return out


def analysis_fingerprint(study: str | Location, seeds: list[int]) -> str:
    """What the analysis depends on: metric and HMM settings, each seed's committed checkpoints."""
    config = load_study(study)
    runs = []
    for seed in seeds:
        a = open_run(study, seed, config).attrs
        runs.append([seed, a["status"], a["committed_steps"], a["config_hash"]])
    blob = json.dumps([vt_core.__version__, config.metrics.model_dump(mode="json"),
                       config.hmm.model_dump(mode="json"), runs], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def analysis_is_current(study: str | Location, seeds: list[int]) -> bool:
    """True when analysis.json, the selection and the dashboard were made from exactly these inputs."""
    study = location(study)
    needed = [study / ANALYSIS_JSON, study / HMM_DIR / "selection.json", study / "dashboard" / "index.html"]
    if not seeds or not all(p.is_file() for p in needed):
        return False
    try:
        stored = json.loads((study / ANALYSIS_JSON).read_text()).get("fingerprint")
    except json.JSONDecodeError:
        return False
    return stored == analysis_fingerprint(study, seeds)


def load_selection(study: str | Location) -> dict:
    sel = json.loads((location(study) / HMM_DIR / "selection.json").read_text())
    return {"chosen_k": sel["chosen_k"], "table": sel["table"]}


def init_metrics(study: str | Location, seeds: list[int]) -> dict:
    """Plan metrics.zarr for ``seeds`` (a new template only when something was added)."""
    config = load_study(study)
    return plan_metrics(study, config, {s: open_run(study, s, config) for s in seeds})


# One seed's metrics at a time in a process: each computation already spreads over every core
# (Dask's threads, torch and BLAS threads). Seeds computed concurrently by a thread task runner
# oversubscribed the cores: the paper-size study's metric stage took 257 s that way against 139 s one
# seed after another (2 cores; benchmarks/RESULTS.md). Dask workers are left alone: they run a task
# per thread slot already, and a second seed's task waiting on a lock there could hold a slot that the
# first seed's inner computation needs.
_ONE_SEED_AT_A_TIME = threading.Lock()


def _seed_slot():
    """The lock above, or nothing in a Dask worker."""
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            distributed.get_worker()
            return contextlib.nullcontext()
        except ValueError:
            pass
    return _ONE_SEED_AT_A_TIME


def compute_metrics(study: str | Location, seed: int, plan: dict) -> dict:
    """One seed's region: returns how many cells were computed and how many reused."""
    config = load_study(study)
    with _seed_slot():
        return write_seed_metrics(study, config, open_run(study, seed, config), seed, plan)


def finish_metrics(study: str | Location, plan: dict, counts: list[dict]) -> dict:
    finalize_metrics(study, plan)
    return {"computed": sum(c["computed"] for c in counts), "reused": sum(c["reused"] for c in counts)}


def prepare_hmm(study: str | Location) -> dict:
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
    out = location(study) / HMM_DIR
    out.mkdir(exist_ok=True)
    save_npz(out / "input.npz", seeds=np.array(seqs.seeds), lengths=np.array([len(x) for x in z]),
             z=np.concatenate(z), raw=np.concatenate(seqs.values), steps=np.concatenate(seqs.steps),
             features=np.array(names), raw_features=np.array(seqs.features))
    hmm.save_json(out / "split.json", {"train": train, "heldout": held, "features": names, "n_obs": n_obs,
                                       "max_feasible_k": max_k, "pca": pca})
    grid = [(k, r) for k in range(1, h.max_states + 1) for r in range(h.restarts)]
    return {"grid": grid, "train": train, "heldout": held, "max_feasible_k": max_k}


def _load_input(study: str | Location):
    d = load_npz(location(study) / HMM_DIR / "input.npz")
    cut = np.cumsum(d["lengths"])[:-1]
    split = lambda a: np.split(a, cut)  # noqa: E731
    return ([int(s) for s in d["seeds"]], split(d["z"]), split(d["raw"]), split(d["steps"]),
            [str(f) for f in d["features"]], [str(f) for f in d["raw_features"]])


def fit_hmm(study: str | Location, k: int, restart: int) -> dict:
    config = load_study(study)
    seeds, z, *_ = _load_input(study)
    split = json.loads((location(study) / HMM_DIR / "split.json").read_text())
    train = [z[seeds.index(s)] for s in split["train"]]
    held = [z[seeds.index(s)] for s in split["heldout"]]
    name = f"k={k:02d}-r={restart:02d}"
    row = hmm.fit_one(train, held, k, restart, config.hmm, location(study) / HMM_DIR / "fits" / f"{name}.npz")
    hmm.save_json(location(study) / HMM_DIR / "fits" / f"{name}.json", row)
    return row


def select_model(study: str | Location, fits: list[dict]) -> dict:
    """Choose k by BIC, decode every seed with Viterbi, relabel states canonically, save."""
    seeds, z, _, steps, *_ = _load_input(study)
    table, k = hmm.selection_table(fits, "bic")
    bics = sorted(t["bic"] for t in table if t["n_ok"])
    best = next(t for t in table if t["k"] == k)
    params = load_npz(location(best["params_path"]))
    paths = hmm.decode(params, z)
    perm = hmm.canonical_permutation(paths, steps, k, params["means"])
    params = hmm.permute_params(params, perm)
    paths = [perm[p] for p in paths]
    out = location(study) / HMM_DIR
    save_npz(out / "model.npz", **params)
    chosen = next(t for t in table if t["k"] == k)
    hmm.save_json(out / "selection.json", {
        "criterion": "bic", "chosen_k": k, "table": table, "bic_weight": chosen["bic_weight"],
        "bic_gap_to_next": (bics[1] - bics[0]) if len(bics) > 1 else None,
        "at_max_states": k == max(t["k"] for t in table)})
    hmm.save_json(out / "paths.json", {str(s): {"steps": st, "states": p} for s, st, p in zip(seeds, steps, paths)})
    return {"chosen_k": k, "table": table}


def explain(study: str | Location) -> dict:
    """State summaries, the state graph and transition explanations -> analysis.json."""
    config = load_study(study)
    seeds, z, raw, steps, features, raw_features = _load_input(study)
    params = load_npz(location(study) / HMM_DIR / "model.npz")
    model = hmm.load_model(params)
    sel = json.loads((location(study) / HMM_DIR / "selection.json").read_text())
    stored = json.loads((location(study) / HMM_DIR / "paths.json").read_text())
    paths = [np.asarray(stored[str(s)]["states"]) for s in seeds]
    k = sel["chosen_k"]
    covars = model.covars_  # full (k, F, F) whatever the covariance type
    graph = analysis.state_graph(params["transmat"], paths, seeds)
    grads = analysis.explain_transitions(z, paths, params["startprob"], params["transmat"],
                                         params["means"], covars)
    summaries = analysis.state_summaries(paths, steps, raw, seeds, raw_features, k)
    transitions = []
    for (i, j), g in sorted(grads.items()):
        top = np.argsort(-g)[:5]
        transitions.append({
            "from": i, "to": j, "prob": float(params["transmat"][i, j]),
            "n_seeds": graph.edges[i, j]["n_seeds"] if graph.has_edge(i, j) else 0,
            "mean_abs_gradient": {features[f]: float(g[f]) for f in range(len(features))},
            "top_features": [{"feature": features[f], "mean_abs_gradient": float(g[f]),
                              "z_mean_change": float(params["means"][j, f] - params["means"][i, f]),
                              "raw_mean_change": (summaries[j]["means"].get(features[f], float("nan"))
                                                  - summaries[i]["means"].get(features[f], float("nan")))}
                             for f in top],
        })
    value = load_features(study, ["test_accuracy"])
    conv = {}
    for s in seeds:
        acc = value.sel(seed=s, metric="test_accuracy")
        conv[str(s)] = analysis.convergence_step(acc["step"].values, acc.values, config.hmm.convergence_threshold)
    occupancy = {s: analysis.time_in_states(p, st, k) for s, p, st in zip(seeds, paths, steps)}
    regression = analysis.convergence_regression({s: conv[str(s)] for s in seeds}, occupancy)
    detours = analysis.detour_states(regression["coefficients"], [st["seeds"] for st in summaries], len(seeds))
    for st in summaries:
        st["detour"] = st["state"] in detours
        st["coefficient"] = regression["coefficients"][st["state"]]
    dissimilarity, per_seed = analysis.trajectory_dissimilarity(occupancy)
    result = {
        "study": config.name, "chosen_k": k, "features": features, "raw_features": raw_features,
        "states": summaries, "graph": nx.node_link_data(graph, edges="edges"), "transitions": transitions,
        "convergence_step": conv, "convergence_threshold": config.hmm.convergence_threshold,
        "time_in_states": {str(s): v.tolist() for s, v in occupancy.items()},
        "regression": regression, "detour_states": detours,
        "trajectory_dissimilarity": dissimilarity, "seed_dissimilarity": per_seed,
        "unusual_seeds": analysis.unusual_seeds(per_seed),
        "selection": {key: sel.get(key) for key in ("bic_weight", "bic_gap_to_next", "at_max_states")},
        "fingerprint": analysis_fingerprint(study, seeds),
    }
    hmm.save_json(location(study) / ANALYSIS_JSON, result)
    return {"chosen_k": k, "n_transitions": len(transitions)}


def _fmt(x, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}g}"


def summary_markdown(study: str | Location, seed_rows: list[dict]) -> str:
    """The study's markdown summary: chosen k, a small PNG of the state graph (data URI), states,
    key transitions, per-seed status."""
    from vt_core.dashboard import state_graph_data_uri
    config = load_study(study)
    a = json.loads((location(study) / ANALYSIS_JSON).read_text())
    lines = [f"# vt study `{config.name}`", "",
             f"**Chosen number of states (lowest BIC): {a['chosen_k']}** over {len(a['features'])} features "
             f"(BIC weight {_fmt((a.get('selection') or {}).get('bic_weight'))}, gap to the next k "
             f"{_fmt((a.get('selection') or {}).get('bic_gap_to_next'))}).", "",
             *([f"> BIC is lowest at the largest k tried ({config.hmm.max_states}): raise `hmm.max_states` "
                "to see whether it keeps falling.", ""] if a["chosen_k"] == config.hmm.max_states else []),
             "## State graph", "",
             f"![State graph: left to right by first visit, size by occupancy, edge width by seeds]"
             f"({state_graph_data_uri(a)})", "",
             "## States", "", "| state | occupancy | mean first step | steps | seeds |", "|---|---|---|---|---|"]
    for s in a["states"]:
        lines.append(f"| {s['state']} | {s['occupancy']:.2f} | {s['first_step_mean']} | "
                     f"{s['step_min']}–{s['step_max']} | {len(s['seeds'])} |")
    lines += ["", "## Transitions (top features by mean |d log p / d z|)", ""]
    for t in a["transitions"]:
        feats = ", ".join(f"{f['feature']} ({f['z_mean_change']:+.2f} sd)" for f in t["top_features"][:3])
        lines.append(f"- {t['from']} → {t['to']} (p={t['prob']:.3f}, {t['n_seeds']} seeds): {feats}")
    r = a.get("regression") or {}
    lines += ["", "## Convergence", "",
              f"- convergence (held-out accuracy >= {a['convergence_threshold']}) regressed on time in each state: "
              f"R^2 = {r.get('r2') if r.get('r2') is None else round(r['r2'], 3)} over {r.get('n')} seeds"
              + ("" if r.get("determined") else " (no more seeds than coefficients: R^2 is not meaningful)"),
              f"- detour states: {a.get('detour_states') or 'none'}",
              f"- trajectory dissimilarity (mean pairwise Wasserstein): {a.get('trajectory_dissimilarity')}",
              f"- unusual seeds: {a.get('unusual_seeds') or 'none'}"]
    lines += ["", "## Seeds", "", "| seed | status | checkpoints | last step | converged at |", "|---|---|---|---|---|"]
    for r in seed_rows:
        lines.append(f"| {r['seed']} | {r['status']} | {r['committed_steps']} | {r['last_step']} | "
                     f"{a['convergence_step'].get(str(r['seed']))} |")
    return "\n".join(lines)


def analyse(study: str | Location, workers: int = 1) -> dict:
    """Every analysis stage in order, without an orchestrator (what the analyze flow fans out as
    Prefect tasks): for scripts, notebooks and tests. ``workers`` > 1 computes the seeds' metrics
    and the HMM fits in that many processes (each writes its own files, as the tasks do), each with
    its share of the cores; they are spawned, so a script that asks for workers runs under
    ``if __name__ == "__main__":``. The result's ``seconds`` times the metric stage, the HMM fits
    and the selection."""
    study = location(study)
    if workers > 1 and same_process_only(study):
        raise ValueError(f"analyse({study}, workers={workers}): a memory:// study lives in this process only; "
                         f"use workers=1 (or a shared filesystem for worker processes)")
    seeds = usable_seeds(study)
    clock = time.perf_counter
    seconds = {}
    with _pool(workers) as pool:
        run = map if pool is None else pool.map
        t = clock()
        plan = init_metrics(study, seeds)
        counts = list(run(compute_metrics, [study] * len(seeds), seeds, [plan] * len(seeds)))
        cells = finish_metrics(study, plan, counts)
        seconds["metrics"] = clock() - t
        t = clock()
        grid = prepare_hmm(study)["grid"]
        fits = list(run(fit_hmm, [study] * len(grid), [k for k, _ in grid], [r for _, r in grid]))
        seconds["hmm_fits"] = clock() - t
    t = clock()
    selection = select_model(study, fits)
    explain(study)
    seconds["selection"] = clock() - t
    return {"seeds": seeds, "metric_cells": cells, "chosen_k": selection["chosen_k"],
            "seconds": {k: round(v, 2) for k, v in seconds.items()}}


def _pool(workers: int):
    """Worker processes for :func:`analyse`, or no pool (work in this process) for one worker."""
    if workers <= 1:
        import contextlib

        return contextlib.nullcontext()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a forked copy of a process that runs torch or writer threads is not safe
    threads = max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_share_cores, initargs=(threads,))


def _share_cores(threads: int) -> None:
    """In each analysis worker process: its share of the cores for torch, BLAS and Dask's threads
    (each would otherwise start one thread per core, and N workers would oversubscribe N-fold)."""
    import dask
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    dask.config.set(num_workers=threads)
