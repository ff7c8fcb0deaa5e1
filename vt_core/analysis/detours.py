"""Detour states, from a regression that can support them.

The paper regresses each seed's convergence time on the time it spends in each state. That model
is not identifiable: the times in the k states sum to the run length for every seed, so an
intercept plus k occupancy columns has rank k, a constant can be moved between the intercept and
every coefficient, and "coefficient > 0" is decided by the solver's choice. Restricting the times
to before convergence does not help: they then sum to the convergence step itself, and the
regression is an identity.

vt asks the question that can be answered from the seeds: **does time spent in a state that only
some seeds pass through delay convergence?** For the seeds that converged, the convergence step is
regressed, with an intercept, on the steps each spent *before converging* in each optional state:
one that at least two converged seeds pass through and at least two skip (and a tenth of them
each way), so a decoding artefact at a boundary does not make a main-path state optional. States
every converged seed visits stay out (their time is absorbed in the intercept and the residual:
that removes the gauge freedom, and no identity remains), and a state entered only after
converging has no time before convergence, so it is never a column. A coefficient is the delay
per step spent there: about 1 for a detour that adds its steps to the path, about 0 for a state
that replaces steps of the common path. Each gets a bootstrap interval over seeds; a state is a
detour only when the fit is determined (more seeds than coefficients, full column rank, in most
resamples too) and the whole 95% interval lies above zero. With too few seeds the result says so
and flags nothing.
"""

from __future__ import annotations

import numpy as np

from vt_core.analysis.records import Regression

MIN_SEEDS = 5  # converged seeds below which no interval is attempted


def visits_before(path: np.ndarray, steps: np.ndarray, conv_step: int) -> np.ndarray:
    """The states a seed's decoded path visits at checkpoints before its convergence step."""
    return np.unique(np.asarray(path)[np.asarray(steps) < conv_step])


def time_before(path: np.ndarray, steps: np.ndarray, conv_step: int, k: int) -> np.ndarray:
    """Steps spent in each state before the convergence step (each interval between checkpoints
    counts for the state decoded at its start)."""
    path, steps = np.asarray(path), np.asarray(steps, dtype=float)
    ends = np.minimum(np.append(steps[1:], steps[-1]), conv_step)
    out = np.zeros(k)
    np.add.at(out, path, np.clip(ends - steps, 0, None))
    return out


def _fit(X: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    if np.linalg.matrix_rank(X) < X.shape[1]:
        return None
    return np.linalg.lstsq(X, y, rcond=None)[0]


def detour_regression(conv: dict[int, int | None], paths: dict[int, np.ndarray], steps: dict[int, np.ndarray],
                      k: int, n_boot: int = 1000, seed: int = 0, unmeasured: list[int] | None = None) -> Regression:
    """The regression of the module docstring; ``conv``: each seed's convergence step (None: never);
    ``unmeasured``: the seeds with no held-out accuracy recorded at all (so no convergence to find)."""
    seeds = sorted(s for s, c in conv.items() if c is not None and s in paths)
    out: Regression = {"model": "convergence step ~ 1 + steps in each optional state before converging, converged seeds",
                 "seeds": seeds, "n": len(seeds), "states": [], "coefficients": {}, "intervals": {},
                 "intercept": None, "r2": None, "determined": False, "detours": [], "conclusion": ""}
    if not seeds:
        unmeasured = [s for s in (unmeasured or []) if s in paths]
        out["conclusion"] = ("no held-out accuracy was recorded (test_accuracy): convergence cannot be found and no "
                             "detour can be assessed" if unmeasured and len(unmeasured) == len(paths)
                             else "no seed converged: no detour can be assessed")
        return out
    T = np.array([time_before(paths[s], steps[s], int(conv[s]), k) for s in seeds])  # type: ignore[arg-type]
    V = T > 0
    least = max(2, int(np.ceil(0.1 * len(seeds))))
    optional = [int(s) for s in range(k) if V[:, s].sum() >= least and (~V[:, s]).sum() >= least]
    out["states"] = optional
    out["visits"] = {str(s): int(V[:, s].sum()) for s in range(k)}
    if not optional:
        out["conclusion"] = ("no state is passed through by some converged seeds and skipped by others (at "
                             f"least {least} each way) before converging: no detour")
        return out
    X = np.column_stack([np.ones(len(seeds)), T[:, optional]])
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
    out["intercept"] = float(beta[0])
    out["r2"] = (1 - float(res @ res) / ss_tot) if ss_tot > 0 else None
    out["coefficients"] = {str(s): float(b) for s, b in zip(optional, beta[1:])}
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
