"""Studies compared: one HMM fitted jointly over every study's seeds, then what differs by study.

The paper's central results are comparisons (LayerNorm and a smaller batch remove modular
addition's detours and converge ~30x sooner; ResNet-18 without batch norm and residuals takes
detours). Comparing two separately fitted HMMs is comparing two labellings that share nothing, so
here the seeds of all studies are pooled into one set of trajectories (same features, one
standardisation) and analysed as one study (:mod:`vt_core.analysis.states`: k by BIC, bootstrap, decoding,
transitions, the detour regression). On that one labelling, per study:

* **occupancy**: the share of the study's checkpoints decoded as each state, and the share of its
  seeds that *visit* each state (at least :data:`MIN_VISIT` checkpoints in a row there, so that a
  single checkpoint decoded differently at a boundary is not a visit);
* **specific states**: visited by at least two seeds (and a tenth) of one study and by no seed of
  any other;
* **detours**: the joint regression's detour states (:mod:`vt_core.analysis.detours`), each attributed to
  the studies whose seeds visit it, and each study's own regression (within a study a state every
  seed visits is never optional, so a detour taken by all of one study's seeds shows in the joint
  one only);
* **convergence**: each study's convergence steps (first held-out accuracy at the threshold), and
  for each study against the first, the difference in mean convergence step and the ratio of the
  means, with 95% intervals from a bootstrap that resamples seeds within each study. Seeds that
  never converge are counted, not imputed.

:func:`compare_sequences` is the whole comparison on trajectories from anywhere; the `vt compare`
stage (:mod:`vt_core.stages.compare`) feeds it the studies' metrics.
"""

from __future__ import annotations

import numpy as np

from vt_core.analysis import hmm, states
from vt_core.analysis.detours import detour_regression
from vt_core.analysis.records import Analysis
from vt_core.config.study_config import HMMConfig
from vt_core.errors import VtError
from vt_core.storage.layout import layout
from vt_core.storage.location import Location, read_json, write_json_atomic

MIN_VISIT = 2  # checkpoints in a row that make a visit
N_BOOT = 2000


class CompareError(VtError, ValueError):
    """The studies cannot be compared (different features or metrics, too few seeds)."""


def joint_sequences(groups: dict[str, hmm.Sequences]) -> tuple[hmm.Sequences, list[dict]]:
    """Every study's sequences as one set, seeds renumbered 0.. (``members[i]``: study and seed of
    joint seed i)."""
    names = list(groups)
    if len(names) < 2:
        raise CompareError(f"a comparison needs at least two studies; got {names}")
    first = groups[names[0]].features
    for n in names[1:]:
        if groups[n].features != first:
            raise CompareError(feature_difference(names[0], first, n, groups[n].features))
    seeds: list[int] = []
    steps, values, members = [], [], []
    for n in names:
        g = groups[n]
        for s, st, x in zip(g.seeds, g.steps, g.values):
            members.append({"study": n, "seed": int(s)})
            seeds.append(len(seeds))
            steps.append(st)
            values.append(x)
    return hmm.Sequences(seeds, steps, values, list(first)), members


def feature_difference(a: str, fa: list[str], b: str, fb: list[str]) -> str:
    only_a = [f for f in fa if f not in fb]
    only_b = [f for f in fb if f not in fa]
    if not only_a and not only_b:
        return f"studies {a} and {b} model the same features in another order: {fa} against {fb}"
    return (f"studies {a} and {b} model different features: only {a} has {only_a}, only {b} has {only_b}; "
            f"compare studies whose hmm.features are the same")


def visits(path: np.ndarray, k: int, min_visit: int = MIN_VISIT) -> np.ndarray:
    """(k,) bool: the states the path stays in for at least ``min_visit`` checkpoints in a row."""
    path = np.asarray(path)
    out = np.zeros(k, dtype=bool)
    if len(path) == 0:
        return out
    cut = np.flatnonzero(path[1:] != path[:-1]) + 1
    for run in np.split(path, cut):
        if len(run) >= min(min_visit, len(path)):
            out[int(run[0])] = True
    return out


def occupancy(paths: list[np.ndarray], k: int) -> dict:
    """Share of checkpoints in each state, share of seeds visiting each state, seeds visiting."""
    labels = np.concatenate(paths) if paths else np.zeros(0, dtype=int)
    v = np.array([visits(p, k) for p in paths]).reshape(-1, k)
    counts = np.bincount(labels.astype(int), minlength=k)[:k] / max(len(labels), 1)
    return {"checkpoints": counts.tolist(),
            "seeds_visiting": v.mean(axis=0).tolist() if len(v) else [0.0] * k,
            "n_seeds_visiting": v.sum(axis=0).astype(int).tolist()}


def specific_states(occ: dict[str, dict], n_seeds: dict[str, int], k: int) -> dict[str, list[int]]:
    """Per study, the states at least two of its seeds (and a tenth) visit and no other study's seed."""
    out: dict[str, list[int]] = {}
    for name, o in occ.items():
        least = max(2, int(np.ceil(0.1 * n_seeds[name])))
        out[name] = [s for s in range(k) if o["n_seeds_visiting"][s] >= least
                     and all(occ[m]["n_seeds_visiting"][s] == 0 for m in occ if m != name)]
    return out


def convergence_summary(conv: dict[int, int | None]) -> dict:
    """The distribution of one study's convergence steps."""
    done = np.array(sorted(c for c in conv.values() if c is not None), dtype=float)
    out: dict = {"steps": {str(s): c for s, c in sorted(conv.items())}, "n_converged": int(done.size),
                 "n_not_converged": int(sum(c is None for c in conv.values()))}
    if done.size:
        q = np.percentile(done, [10, 25, 50, 75, 90])
        out.update(mean=float(done.mean()), sd=float(done.std(ddof=1)) if done.size > 1 else None,
                   median=float(q[2]), quantiles={p: float(x) for p, x in zip(("10", "25", "50", "75", "90"), q)})
    return out


def convergence_difference(ref: list[int], other: list[int], n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """mean(other) - mean(ref) and mean(other) / mean(ref) over converged seeds, each with a 95%
    percentile interval from resampling seeds within each study (with replacement)."""
    a, b = np.asarray(ref, dtype=float), np.asarray(other, dtype=float)
    out: dict = {"n": [int(a.size), int(b.size)], "difference": None, "interval": None, "ratio": None,
                 "ratio_interval": None, "excludes_zero": False}
    if a.size < 2 or b.size < 2:
        out["note"] = (f"{a.size} and {b.size} converged seeds: an interval needs at least 2 converged seeds "
                       f"in each study")
        return out
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2718]))
    ma = a[rng.integers(0, a.size, (n_boot, a.size))].mean(axis=1)
    mb = b[rng.integers(0, b.size, (n_boot, b.size))].mean(axis=1)
    lo, hi = np.percentile(mb - ma, [2.5, 97.5])
    out.update(difference=float(b.mean() - a.mean()), interval=[float(lo), float(hi)],
               excludes_zero=bool(lo > 0 or hi < 0))
    if a.mean() > 0 and np.all(ma > 0):
        rlo, rhi = np.percentile(mb / ma, [2.5, 97.5])
        out.update(ratio=float(b.mean() / a.mean()), ratio_interval=[float(rlo), float(rhi)])
    return out


def _wilson(k: int, n: int) -> list[float] | None:
    """The 95% Wilson interval of a proportion k/n (None without seeds)."""
    if n == 0:
        return None
    z, p = 1.959964, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def survival(times: list[float], converged: list[bool]) -> dict:
    """Kaplan-Meier estimate of the share of seeds not yet converged against step; a seed that never
    converged is censored at its last checkpoint (it might have converged later)."""
    t, e = np.asarray(times, float), np.asarray(converged, bool)
    steps, left = [0.0], [1.0]
    s = 1.0
    for u in np.unique(t[e]):
        at_risk, events = int((t >= u).sum()), int(((t == u) & e).sum())
        s *= 1 - events / at_risk
        steps.append(float(u))
        left.append(float(s))
    return {"step": steps, "not_converged": left, "censored_at": sorted(float(x) for x in t[~e])}


def log_rank(a: tuple[list[float], list[bool]], b: tuple[list[float], list[bool]]) -> float | None:
    """p-value of the log-rank test that two studies converge at the same rate, censored seeds
    included (None when no seed converged in either)."""
    from scipy.stats import chi2

    t = np.concatenate([a[0], b[0]]).astype(float)
    e = np.concatenate([a[1], b[1]]).astype(bool)
    g = np.r_[np.zeros(len(a[0]), bool), np.ones(len(b[0]), bool)]
    obs = exp = var = 0.0
    for u in np.unique(t[e]):
        risk = t >= u
        n, n1 = risk.sum(), (risk & g).sum()
        d, d1 = ((t == u) & e).sum(), ((t == u) & e & g).sum()
        obs, exp = obs + d1, exp + d * n1 / n
        var += d * (n1 / n) * (1 - n1 / n) * (n - d) / max(n - 1, 1)
    return None if var <= 0 else float(chi2.sf((obs - exp) ** 2 / var, df=1))


def censored_difference(ref: tuple[list[float], list[bool]], other: tuple[list[float], list[bool]]) -> dict:
    """Non-convergence treated as censoring: each study's converged share with its 95% Wilson
    interval, their difference with a 95% interval (Newcombe's, from the two Wilson intervals), and
    the log-rank test over every seed. Defined whenever the studies have seeds, however few converged."""
    ea, eb = ref[1], other[1]
    na, nb, ka, kb = len(ea), len(eb), int(sum(ea)), int(sum(eb))
    ia, ib = _wilson(ka, na), _wilson(kb, nb)
    out: dict = {"converged": [ka, kb], "seeds": [na, nb], "share": [ka / na if na else None, kb / nb if nb else None],
                 "share_interval": [ia, ib], "share_difference": None, "share_difference_interval": None,
                 "log_rank_p": log_rank(ref, other)}
    if ia is not None and ib is not None:
        pa, pb = ka / na, kb / nb
        d = pb - pa
        lo = d - np.sqrt((pb - ib[0]) ** 2 + (ia[1] - pa) ** 2)
        hi = d + np.sqrt((ib[1] - pb) ** 2 + (pa - ia[0]) ** 2)
        out.update(share_difference=float(d), share_difference_interval=[float(lo), float(hi)])
    return out


def summarise(result: Analysis, members: list[dict], paths: dict[int, np.ndarray], steps: dict[int, np.ndarray],
              conv: dict[int, int | None], seed: int = 0) -> dict:
    """Per study, on the joint decoding: occupancy, specific states, detours, convergence; and the
    convergence difference of every study against the first."""
    k = result["chosen_k"]
    names = list(dict.fromkeys(m["study"] for m in members))
    ids = {n: [i for i, m in enumerate(members) if m["study"] == n] for n in names}
    occ = {n: occupancy([paths[i] for i in ids[n]], k) for n in names}
    specific = specific_states(occ, {n: len(ids[n]) for n in names}, k)
    studies = {}
    for n in names:
        own_conv = {members[i]["seed"]: conv[i] for i in ids[n]}
        own = detour_regression({i: conv[i] for i in ids[n]}, paths, steps, k, seed=seed)
        studies[n] = {"n_seeds": len(ids[n]), "occupancy": occ[n]["checkpoints"],
                      "seeds_visiting": occ[n]["seeds_visiting"], "n_seeds_visiting": occ[n]["n_seeds_visiting"],
                      "specific_states": specific[n], "convergence": convergence_summary(own_conv),
                      "own_regression": {key: own[key] for key in ("states", "coefficients", "intervals", "detours",
                                                                   "determined", "conclusion")},
                      "detours": [s for s in result["detour_states"] if occ[n]["n_seeds_visiting"][s] > 0]}
    detours = [{"state": s, "studies": [n for n in names if occ[n]["n_seeds_visiting"][s] > 0],
                "specific_to": next((n for n in names if s in specific[n]), None),
                "interval": result["regression"]["intervals"].get(str(s))} for s in result["detour_states"]]
    ref = names[0]
    done = {n: [c for c in (conv[i] for i in ids[n]) if c is not None] for n in names}
    timed = {n: ([float(c) if (c := conv[i]) is not None else float(steps[i][-1]) for i in ids[n]],
                 [conv[i] is not None for i in ids[n]]) for n in names}
    for n in names:
        studies[n]["convergence"]["survival"] = survival(*timed[n])
    diffs = {n: convergence_difference(done[ref], done[n], seed=seed) | {"against": ref}
             | {"censored": censored_difference(timed[ref], timed[n])} for n in names[1:]}
    return {"studies": names, "reference": ref, "k": k, "per_study": studies, "detours": detours,
            "convergence_difference": diffs, "min_visit": MIN_VISIT,
            "members": [{"study": m["study"], "seed": m["seed"], "id": i} for i, m in enumerate(members)]}


def finish(root: str | Location, cfg: HMMConfig, members: list[dict], conv: dict[int, int | None],
           name: str, extra: dict | None = None) -> Analysis:
    """After the joint fits are finalised (``hmm/paths.json``): the joint analysis and the
    comparison, written to the comparison's ``analysis.json`` and returned."""
    result = states.explain(root, cfg, conv, name, extra=extra)
    stored = read_json(layout(root).paths)
    paths = {int(i): np.asarray(v["states"]) for i, v in stored.items()}
    steps = {int(i): np.asarray(v["steps"]) for i, v in stored.items()}
    result["comparison"] = summarise(result, members, paths, steps, conv, seed=cfg.seed)
    write_json_atomic(layout(root).analysis, result)
    return result


def compare_sequences(root: str | Location, groups: dict[str, hmm.Sequences],
                      convergence: dict[str, dict[int, int | None]], cfg: HMMConfig, name: str = "comparison",
                      run=map) -> Analysis:
    """The whole comparison of trajectories grouped by study (``groups``: study -> sequences;
    ``convergence``: study -> seed -> convergence step or None), with the files under ``root``."""
    joint, members = joint_sequences(groups)
    conv = {i: convergence[m["study"]].get(m["seed"]) for i, m in enumerate(members)}
    plan = states.prepare(root, joint, cfg)
    rows = states.run_fits(root, plan["jobs"], cfg, run)
    states.finalize(root, rows, cfg)
    return finish(root, cfg, members, conv, name)
