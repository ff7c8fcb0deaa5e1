"""Detour states, from a regression that can support them.

The paper regresses each seed's convergence time on the time it spends in each state. That model
is not identifiable: the times in the k states sum to the run length for every seed, so an
intercept plus k occupancy columns has rank k, a constant can be moved between the intercept and
every coefficient, and "coefficient > 0" is decided by the solver's choice. Restricting the times
to before convergence does not help: they then sum to the convergence step itself, and the
regression is an identity.

vt asks the question that can be answered from the seeds: **does passing through a state before
converging delay convergence?** For the seeds that converged, the convergence step is regressed
on indicators of the states each visited *before* converging, with an intercept. States that
every converged seed visits are absorbed in the intercept (that removes the gauge freedom: the
baseline is the common path), and states no seed visits before converging (such as a state
entered only afterwards) have no column at all, so neither can be flagged. A coefficient is the
extra steps to converge associated with the detour. Each gets a bootstrap interval over seeds;
a state is a detour only when the fit is determined (more seeds than coefficients, full column
rank, in most resamples too) and the whole 95% interval lies above zero. With too few seeds the
result says so and flags nothing.
"""

from __future__ import annotations

import numpy as np

MIN_SEEDS = 5  # converged seeds below which no interval is attempted


def visits_before(path: np.ndarray, steps: np.ndarray, conv_step: int) -> np.ndarray:
    """The states a seed's decoded path visits at checkpoints before its convergence step."""
    return np.unique(np.asarray(path)[np.asarray(steps) < conv_step])


def _fit(X: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    if np.linalg.matrix_rank(X) < X.shape[1]:
        return None
    return np.linalg.lstsq(X, y, rcond=None)[0]


def detour_regression(conv: dict[int, int | None], paths: dict[int, np.ndarray], steps: dict[int, np.ndarray],
                      k: int, n_boot: int = 1000, seed: int = 0) -> dict:
    """The regression of the module docstring; ``conv``: each seed's convergence step (None: never)."""
    seeds = sorted(s for s, c in conv.items() if c is not None and s in paths)
    out: dict = {"model": "convergence step ~ 1 + visited(state) before converging, converged seeds only",
                 "seeds": seeds, "n": len(seeds), "states": [], "coefficients": {}, "intervals": {},
                 "intercept": None, "r2": None, "determined": False, "detours": [], "conclusion": ""}
    if not seeds:
        out["conclusion"] = "no seed converged: no detour can be assessed"
        return out
    V = np.zeros((len(seeds), k), dtype=bool)
    for i, s in enumerate(seeds):
        V[i, visits_before(paths[s], steps[s], int(conv[s]))] = True  # type: ignore[arg-type]
    optional = [int(s) for s in range(k) if 0 < V[:, s].sum() < len(seeds)]
    out["states"] = optional
    out["visits"] = {str(s): int(V[:, s].sum()) for s in range(k)}
    if not optional:
        out["conclusion"] = "every converged seed visits the same states before converging: no detour"
        return out
    X = np.column_stack([np.ones(len(seeds)), V[:, optional].astype(float)])
    y = np.array([conv[s] for s in seeds], dtype=float)
    beta = _fit(X, y)
    p = X.shape[1]
    if beta is None or len(seeds) <= p or len(seeds) < MIN_SEEDS:
        out["conclusion"] = (f"{len(seeds)} converged seeds cannot support {p} coefficients (states visited "
                             f"by some seeds only: {_states(optional)}): too few seeds to conclude anything about "
                             f"detours")
        return out
    res = y - X @ beta
    ss_tot = float(((y - y.mean()) ** 2).sum())
    out.update(intercept=float(beta[0]), r2=(1 - float(res @ res) / ss_tot) if ss_tot > 0 else None,
               coefficients={str(s): float(b) for s, b in zip(optional, beta[1:])})
    draws = _bootstrap(X, y, n_boot, seed)
    if len(draws) < n_boot / 2:
        out["conclusion"] = (f"the regression is singular in {n_boot - len(draws)} of {n_boot} bootstrap "
                             f"resamples of the seeds: too few seeds to conclude anything about detours")
        return out
    lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
    out["intervals"] = {str(s): [float(a), float(b)] for s, a, b in zip(optional, lo[1:], hi[1:])}
    out["determined"] = True
    out["detours"] = [s for s, a in zip(optional, lo[1:]) if a > 0]
    out["conclusion"] = (f"detour states {_states(out['detours'])}: visiting them delays convergence (95% interval "
                         f"above 0)" if out["detours"] else "no state's 95% interval lies above 0: no detour shown")
    return out


def _states(states: list[int]) -> str:
    return ", ".join(str(s) for s in states)


def _bootstrap(X: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 31337]))
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        b = _fit(X[idx], y[idx])
        if b is not None:
            draws.append(b)
    return np.array(draws).reshape(-1, X.shape[1])
