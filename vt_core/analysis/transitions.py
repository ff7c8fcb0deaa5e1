"""What the decoded states mean: per-state summaries, the state graph, transition explanations.

Transition explanation (the paper's method, done as REFERENCE.md says it should be): at every time
the decoded path goes i -> j between t and t+1, take the gradient of log p(s_{t+1} = j | z_1..t+1)
with respect to the features z_{t+1} (a vector, one value per feature), and average its *absolute*
value over those times. With Gaussian emissions the gradient is exact and closed-form:

    d/dz log p(s_{t+1}=j | z_1..t+1) = g_j(z) - sum_j' w_j' g_j'(z),   g_j(z) = -Sigma_j^-1 (z - mu_j)

where w is the filtered posterior at t+1. ``log_filtered_posterior`` computes the quantity itself so
the gradient can be checked against finite differences.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
from scipy.special import logsumexp

from vt_core.analysis.records import StateSummary


def _log_gauss(z: np.ndarray, means: np.ndarray, covars: np.ndarray) -> np.ndarray:
    """log N(z; mu_j, Sigma_j) for every state j; z (F,), means (k, F), covars (k, F, F)."""
    d = z[None, :] - means
    sol = np.linalg.solve(covars, d[..., None])[..., 0]
    _, logdet = np.linalg.slogdet(covars)
    return -0.5 * (z.size * np.log(2 * np.pi) + logdet + (d * sol).sum(-1))


def log_filtered(z: np.ndarray, startprob, transmat, means, covars) -> np.ndarray:
    """(T, k): log p(s_t | z_1..t) by the forward algorithm."""
    T, k = len(z), len(startprob)
    out = np.empty((T, k))
    with np.errstate(divide="ignore"):
        log_a, log_pi = np.log(transmat), np.log(startprob)
    prev = None
    for t in range(T):
        prior = log_pi if prev is None else logsumexp(prev[:, None] + log_a, axis=0)
        joint = prior + _log_gauss(z[t], means, covars)
        prev = out[t] = joint - logsumexp(joint)
    return out


def log_filtered_posterior(z: np.ndarray, t1: int, j: int, startprob, transmat, means, covars) -> float:
    """log p(s_{t1} = j | z_1..t1): the quantity the transition explanation differentiates."""
    return float(log_filtered(z[: t1 + 1], startprob, transmat, means, covars)[t1, j])


def transition_gradient(z_next: np.ndarray, log_filtered_prev: np.ndarray, j: int, transmat, means,
                        covars) -> np.ndarray:
    """d log p(s_{t+1}=j | z_1..t+1) / d z_{t+1}, given log p(s_t | z_1..t)."""
    with np.errstate(divide="ignore"):
        prior = logsumexp(log_filtered_prev[:, None] + np.log(transmat), axis=0)
    joint = prior + _log_gauss(z_next, means, covars)
    w = np.exp(joint - logsumexp(joint))
    g = -np.linalg.solve(covars, (z_next[None, :] - means)[..., None])[..., 0]  # (k, F)
    return g[j] - w @ g


def explain_transitions(zs: list[np.ndarray], paths: list[np.ndarray], startprob, transmat, means,
                        covars) -> dict[tuple[int, int], np.ndarray]:
    """Mean absolute gradient (one value per feature) for every transition i -> j (i != j) taken."""
    sums: dict[tuple[int, int], list[np.ndarray]] = {}
    for z, path in zip(zs, paths):
        lf = log_filtered(z, startprob, transmat, means, covars)
        for t in np.flatnonzero(path[:-1] != path[1:]):
            i, j = int(path[t]), int(path[t + 1])
            g = transition_gradient(z[t + 1], lf[t], j, transmat, means, covars)
            sums.setdefault((i, j), []).append(np.abs(g))
    return {edge: np.mean(v, axis=0) for edge, v in sums.items()}


def state_graph(transmat: np.ndarray, paths: list[np.ndarray], seeds: list[int]) -> nx.DiGraph:
    """States as nodes; an edge i -> j (i != j) only where p > 0 *and* some seed's path takes it.

    Self-loops are kept as the ``stay`` node attribute rather than as edges."""
    k = len(transmat)
    g = nx.DiGraph()
    for s in range(k):
        g.add_node(s, stay=float(transmat[s, s]))
    for path, seed in zip(paths, seeds):
        for i, j in {(int(a), int(b)) for a, b in zip(path[:-1], path[1:]) if a != b}:
            if transmat[i, j] <= 0:
                continue
            if g.has_edge(i, j):
                g.edges[i, j]["seeds"].append(seed)
            else:
                g.add_edge(i, j, prob=float(transmat[i, j]), seeds=[seed])
    for _, _, d in g.edges(data=True):
        d["n_seeds"] = len(d["seeds"])
    return g


def state_summaries(paths, steps, raw, seeds, features, k) -> list[StateSummary]:
    """Per state: occupancy, seeds visiting, step range, mean first visit, metric means (raw units)."""
    all_states = np.concatenate(paths)
    all_raw = np.concatenate(raw)
    all_steps = np.concatenate(steps)
    out: list[StateSummary] = []
    for s in range(k):
        mask = all_states == s
        visiting = [seed for seed, p in zip(seeds, paths) if np.any(p == s)]
        firsts = [st[np.argmax(p == s)] for p, st in zip(paths, steps) if np.any(p == s)]
        out.append({
            "state": s,
            "occupancy": float(mask.mean()),
            "seeds": visiting,
            "first_step_mean": float(np.mean(firsts)) if firsts else None,
            "step_min": int(all_steps[mask].min()) if mask.any() else None,
            "step_max": int(all_steps[mask].max()) if mask.any() else None,
            "means": {f: float(all_raw[mask, i].mean()) for i, f in enumerate(features)} if mask.any() else {},
        })
    return out


def convergence_step(steps: np.ndarray, accuracy: np.ndarray, threshold: float) -> int | None:
    """First step (in step order) where held-out accuracy reaches ``threshold``; None if never."""
    order = np.argsort(steps)
    hit = np.flatnonzero(np.asarray(accuracy)[order] >= threshold)
    return int(np.asarray(steps)[order][hit[0]]) if hit.size else None


def time_in_states(path: np.ndarray, steps: np.ndarray, k: int) -> np.ndarray:
    """Training steps spent in each state: each interval between checkpoints counts for the state
    decoded at its start."""
    out = np.zeros(k)
    np.add.at(out, np.asarray(path)[:-1], np.diff(np.asarray(steps, dtype=float)))
    return out


def convergence_regression(conv: dict[int, int | None], occupancy: dict[int, np.ndarray]) -> dict:
    """Least squares of each seed's convergence step on its time in each state (with an intercept).

    Seeds that never converge are left out. With no more seeds than coefficients the fit is exact
    and R^2 says nothing; ``determined`` is False then."""
    seeds = [s for s, c in conv.items() if c is not None and s in occupancy]
    k = len(next(iter(occupancy.values()))) if occupancy else 0
    out = {"seeds": seeds, "n": len(seeds), "coefficients": [None] * k, "intercept": None, "r2": None,
           "determined": len(seeds) > k + 1}
    if len(seeds) < 2:
        return out
    X = np.column_stack([np.ones(len(seeds)), np.array([occupancy[s] for s in seeds])])
    y = np.array([conv[s] for s in seeds], dtype=float)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    ss_res = float(((y - X @ beta) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    out.update(intercept=float(beta[0]), coefficients=[float(b) for b in beta[1:]],
               r2=(1 - ss_res / ss_tot) if ss_tot > 0 else None)
    return out


def detour_states(coefficients: list[float | None], visits: list[list[int]], n_seeds: int) -> list[int]:
    """States that only some seeds visit and whose regression coefficient is positive (they slow
    convergence down): the paper's detours."""
    return [s for s, (c, v) in enumerate(zip(coefficients, visits)) if c is not None and c > 0 and 0 < len(v) < n_seeds]


def trajectory_dissimilarity(occupancy: dict[int, np.ndarray]) -> tuple[float | None, dict[str, float]]:
    """Mean pairwise Wasserstein distance between the seeds' state-occupancy distributions (states
    in canonical order on a line), and each seed's mean distance to the others."""
    from scipy.stats import wasserstein_distance

    seeds = sorted(occupancy)
    if len(seeds) < 2:
        return None, {}
    k = len(occupancy[seeds[0]])
    pos = np.arange(k, dtype=float)
    dist = np.zeros((len(seeds), len(seeds)))
    for a in range(len(seeds)):
        for b in range(a + 1, len(seeds)):
            u, v = occupancy[seeds[a]], occupancy[seeds[b]]
            dist[a, b] = dist[b, a] = wasserstein_distance(pos, pos, u / u.sum(), v / v.sum())
    per_seed = {str(s): float(dist[i].sum() / (len(seeds) - 1)) for i, s in enumerate(seeds)}
    return float(dist[np.triu_indices(len(seeds), 1)].mean()), per_seed


def unusual_seeds(per_seed: dict[str, float]) -> list[int]:
    """Seeds whose mean distance to the others lies above Q3 + 1.5 IQR (needs 4 seeds or more)."""
    if len(per_seed) < 4:
        return []
    vals = np.array(list(per_seed.values()))
    q1, q3 = np.percentile(vals, [25, 75])
    return [int(s) for s, v in per_seed.items() if v > q3 + 1.5 * (q3 - q1) and v > 0]
