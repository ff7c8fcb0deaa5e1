"""Stage 4, explanations: state summaries, the state graph, transition explanations, convergence,
detours and dissimilarity -> ``analysis.json``. The maths is in :mod:`vt_core.analysis`."""

from __future__ import annotations

import hashlib
import json

import networkx as nx
import numpy as np

import vt_core
from vt_core import analysis, hmm
from vt_core.errors import VtError
from vt_core.layout import layout
from vt_core.location import Location, load_npz, location, write_json_atomic
from vt_core.metrics.incremental import load_features
from vt_core.stages.hmm import HMMInput, load_input
from vt_core.study import load_study, open_run


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
    paths = layout(study)
    if not seeds or not all(p.is_file() for p in (paths.analysis, paths.selection, paths.dashboard)):
        return False
    try:
        stored = json.loads(paths.analysis.read_text()).get("fingerprint")
    except json.JSONDecodeError:
        return False
    return stored == analysis_fingerprint(study, seeds)


def _transitions(data: HMMInput, params: dict, graph: nx.DiGraph, grads: dict, summaries: list[dict]) -> list[dict]:
    """Each used transition: its probability, the seeds taking it, every feature's mean absolute
    gradient and the top five features with their change in state means (z and raw)."""
    features, means = data.features, params["means"]
    out = []
    for (i, j), g in sorted(grads.items()):
        top = np.argsort(-g)[:5]
        out.append({
            "from": i, "to": j, "prob": float(params["transmat"][i, j]),
            "n_seeds": graph.edges[i, j]["n_seeds"] if graph.has_edge(i, j) else 0,
            "mean_abs_gradient": {features[f]: float(g[f]) for f in range(len(features))},
            "top_features": [{"feature": features[f], "mean_abs_gradient": float(g[f]),
                              "z_mean_change": float(means[j, f] - means[i, f]),
                              "raw_mean_change": (summaries[j]["means"].get(features[f], float("nan"))
                                                  - summaries[i]["means"].get(features[f], float("nan")))}
                             for f in top],
        })
    return out


def _convergence(study: str | Location, data: HMMInput, paths: list[np.ndarray], k: int, threshold: float) -> dict:
    """Each seed's convergence step, time in each state, the regression and the detour states."""
    value = load_features(study, ["test_accuracy"])
    conv = {}
    for s in data.seeds:
        acc = value.sel(seed=s, metric="test_accuracy")
        conv[str(s)] = analysis.convergence_step(acc["step"].values, acc.values, threshold)
    occupancy = {s: analysis.time_in_states(p, st, k) for s, p, st in zip(data.seeds, paths, data.steps)}
    regression = analysis.convergence_regression({s: conv[str(s)] for s in data.seeds}, occupancy)
    return {"convergence_step": conv, "occupancy": occupancy, "regression": regression}


def explain(study: str | Location) -> dict:
    """State summaries, the state graph and transition explanations -> analysis.json."""
    config = load_study(study)
    data = load_input(study)
    files = layout(study)
    params = load_npz(files.model)
    sel = json.loads(files.selection.read_text())
    stored = json.loads(files.paths.read_text())
    paths = [np.asarray(stored[str(s)]["states"]) for s in data.seeds]
    k = sel["chosen_k"]
    covars = hmm.load_model(params).covars_  # full (k, F, F) whatever the covariance type
    graph = analysis.state_graph(params["transmat"], paths, data.seeds)
    grads = analysis.explain_transitions(data.z, paths, params["startprob"], params["transmat"],
                                         params["means"], covars)
    summaries = analysis.state_summaries(paths, data.steps, data.raw, data.seeds, data.raw_features, k)
    transitions = _transitions(data, params, graph, grads, summaries)
    conv = _convergence(study, data, paths, k, config.hmm.convergence_threshold)
    regression, occupancy = conv["regression"], conv["occupancy"]
    detours = analysis.detour_states(regression["coefficients"], [st["seeds"] for st in summaries], len(data.seeds))
    for st in summaries:
        st["detour"] = st["state"] in detours
        st["coefficient"] = regression["coefficients"][st["state"]]
    dissimilarity, per_seed = analysis.trajectory_dissimilarity(occupancy)
    result = {
        "study": config.name, "chosen_k": k, "features": data.features, "raw_features": data.raw_features,
        "states": summaries, "graph": nx.node_link_data(graph, edges="edges"), "transitions": transitions,
        "convergence_step": conv["convergence_step"], "convergence_threshold": config.hmm.convergence_threshold,
        "time_in_states": {str(s): v.tolist() for s, v in occupancy.items()},
        "regression": regression, "detour_states": detours,
        "trajectory_dissimilarity": dissimilarity, "seed_dissimilarity": per_seed,
        "unusual_seeds": analysis.unusual_seeds(per_seed),
        "selection": {key: sel.get(key) for key in ("bic_weight", "bic_gap_to_next", "at_max_states")},
        "fingerprint": analysis_fingerprint(study, data.seeds),
    }
    write_json_atomic(files.analysis, result)
    return {"chosen_k": k, "n_transitions": len(transitions)}


class AnalysisMissingError(VtError, FileNotFoundError):
    """The study has not been analysed yet."""


def load_analysis(study: str | Location) -> dict:
    """``analysis.json`` as written by :func:`explain`."""
    path = layout(location(study)).analysis
    if not path.is_file():
        raise AnalysisMissingError(f"{path} not found: the study has not been analysed; run `vt analyze {study}`")
    return json.loads(path.read_text())
