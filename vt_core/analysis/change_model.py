"""States of change (``hmm.change_model = true``; issue 33, item 5): an HMM whose states are regimes
of the metrics' *change* from one checkpoint to the next, beside the HMM of their position.

The position HMM gives a state to each region of metric space a seed passes through; a plateau
reached twice at two levels is two states to it, and a steady drift is cut into as many states as
the data can pay for. The change model fits the same Gaussian HMM to each seed's first differences
``x[t] - x[t-1]`` (standardised features): a regime is a velocity with its noise, so "descending",
"on a plateau" and "descending again" are two regimes whatever the level. It is an autoregressive
HMM with the identity as its transition on x (``x[t] = x[t-1] + b_s + e``); vt's own E-step serves it
unchanged (weighed against ``dynamax``'s ARHMMs: a learned autoregression matrix per state needs
d^2 more parameters per state than tens of checkpoints per seed can pay for, and a JAX stack beside
torch for one model).

Both models are densities of the same sequence, so their held-out likelihoods compare directly: the
change model's is ``log p(x[0]) + log p(x[1] - x[0], ..., x[T] - x[T-1])`` (a unit-Jacobian change of
variables), with ``p(x[0])`` a Gaussian (diagonal) fitted to the training seeds' first checkpoints.
Each held-out seed is scored by both (the position HMM at its chosen k, the change HMM at the k its
own BIC chooses); the change model is preferred only when its paired gain per checkpoint is above
twice its standard error over at least 3 held-out seeds, the position model only the other way round.
"""

from __future__ import annotations

import numpy as np

from vt_core.analysis import hmm, selection
from vt_core.storage.location import load_npz, location

KIND = "chg"


def differences(seqs: list[np.ndarray]) -> list[np.ndarray]:
    return [np.diff(np.asarray(x, dtype=float), axis=0) for x in seqs]


def _start_model(train: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance (floored) of the training seeds' first checkpoints: ``p(x[0])``."""
    first = np.stack([x[0] for x in train])
    var = first.var(axis=0, ddof=1) if len(first) > 1 else np.ones(first.shape[1])
    return first.mean(axis=0), np.maximum(var, 1e-3)


def _logpdf(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> float:
    return float(-0.5 * np.sum(np.log(2 * np.pi * var) + (x - mean) ** 2 / var))


def compare(pos_params: dict, chg_params: dict, train: list[np.ndarray], held: list[np.ndarray]) -> dict:
    """Each held-out seed's log-likelihood per checkpoint under both models, and which is preferred."""
    pos, chg = hmm.load_model(pos_params), hmm.load_model(chg_params)
    mean, var = _start_model(train)
    gains, per = [], []
    for x in held:
        lp = float(pos.score(x))
        lc = _logpdf(x[0], mean, var) + (float(chg.score(np.diff(x, axis=0))) if len(x) > 1 else 0.0)
        per.append({"position": lp / len(x), "change": lc / len(x)})
        gains.append((lc - lp) / len(x))
    g = np.asarray(gains)
    se = float(g.std(ddof=1) / np.sqrt(len(g))) if len(g) > 1 else None
    preferred = "undecided"
    if len(g) >= 3 and se is not None:
        preferred = "change" if g.mean() > 2 * se else "position" if g.mean() < -2 * se else "undecided"
    return {"n_heldout_seeds": len(g), "per_seed": per, "gain_per_checkpoint": float(g.mean()) if len(g) else None,
            "gain_se": se, "preferred": preferred}


def sentence(change: dict) -> str | None:
    """One line for the closing lines and the report."""
    c = change.get("comparison") or {}
    if change.get("k") is None or c.get("gain_per_checkpoint") is None:
        return change.get("why")
    gain = f"{c['gain_per_checkpoint']:+.3g} ± {c['gain_se']:.2g}" if c.get("gain_se") is not None \
        else f"{c['gain_per_checkpoint']:+.3g}"
    verdict = {"change": "the states of change explain the held-out seeds better: the regimes are of the metrics' "
                         "change, not of their position",
               "position": "the states of position explain the held-out seeds better",
               "undecided": "neither model explains the held-out seeds clearly better"}[c["preferred"]]
    return (f"states of change (an HMM on the metrics' differences): k = {change['k']} by BIC; held-out "
            f"log-likelihood per checkpoint, change minus position, {gain} over {c['n_heldout_seeds']} seeds: "
            f"{verdict}")


def summarise(rows: list[dict], pos_params: dict, seeds: list[int], z: list[np.ndarray], train: list[int],
              held: list[int]) -> dict:
    """The states of change from their fits (``rows`` of kind ``chg``): their k, each seed's regimes
    (one per checkpoint after the first: the change into it), and the held-out comparison with the
    position HMM (``pos_params``: its model at the chosen k)."""
    chosen = selection.change_choice(rows)
    if chosen is None:
        return {"k": None, "why": "states of change: every fit failed"}
    best = next(t for t in chosen["table"] if t["k"] == chosen["k"])
    params = load_npz(location(best["params_path"]))
    by_seed = dict(zip(seeds, z))
    paths = hmm.decode(params, differences(z))
    out = {**chosen, "paths": {str(s): p.tolist() for s, p in zip(seeds, paths)}}
    if held:
        out["comparison"] = compare(pos_params, params, [by_seed[s] for s in train], [by_seed[s] for s in held])
    else:
        out["why"] = "states of change: no held-out seeds to compare them with the states of position"
    return out
