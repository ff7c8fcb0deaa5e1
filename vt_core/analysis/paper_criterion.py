"""The paper's own model selection (``hmm.criterion = "paper"``; always computed beside vt's, for the
report): michahu/modeling-training ``scripts/04_train_hmm/model_selection.py`` (``get_avg_log_likelihoods``)
on the data that ``src/utils.py`` ``make_hmm_data`` builds.

* runs (seeds) in seed order; a run with a non-finite value is dropped;
* ``train_test_split(runs, test_size=0.2, random_state=0)`` of *runs*;
* each run z-scored on its own, per feature, population standard deviation (``scipy.stats.zscore``),
  training and held-out runs alike;
* for k = 1..``hmm.max_states``: 5 fits of ``hmmlearn.hmm.GaussianHMM(k, covariance_type, n_iter)``
  (the published command's default ``--num_iters 10``; the paper's result paths suggest 32:
  ``hmm.paper_n_iter``), each scored by BIC on the held-out runs; the k with the lowest *mean*
  held-out BIC (ties to the smaller k; the repository only plots the curve, and its notebooks type
  k in by hand).

The paper's fits are unseeded; here fit ``b`` at k gets ``random_state`` :func:`vt_core.analysis.hmm.restart_seed`
``(hmm.seed, k, b)``, so that the choice is reproducible (``tests/analysis/test_paper_criterion.py``
compares it with an independent transcription of the paper's code given the same seeds).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from vt_core.analysis.hmm import restart_seed
from vt_core.config.study_config import HMMConfig

FITS_PER_K = 5  # get_avg_log_likelihoods(bootstrap=5)
TEST_SIZE = 0.2  # make_hmm_data: train_test_split(dfs, test_size=0.2, random_state=0)
SPLIT_SEED = 0


def split_runs(seeds: list[int]) -> tuple[list[int], list[int]]:
    """(training runs, held-out runs), each in the order scikit-learn's split gives them."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(list(seeds), test_size=TEST_SIZE, random_state=SPLIT_SEED)
    return [int(s) for s in train], [int(s) for s in test]


def _zscored(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (x - x.mean(axis=0)) / x.std(axis=0)


def paper_selection(seeds: list[int], raw: list[np.ndarray], cfg: HMMConfig) -> dict:
    """The paper's choice of k on these runs (``raw``: each seed's features in step order): the
    runs used, the mean held-out BIC and log-likelihood per k, and ``chosen_k`` (None, with
    ``why``, when the procedure cannot run on this data)."""
    from hmmlearn.hmm import GaussianHMM

    kept = [(s, x) for s, x in sorted(zip(seeds, raw), key=lambda p: p[0]) if np.all(np.isfinite(x))]
    out: dict = {"n_iter": cfg.paper_n_iter, "fits_per_k": FITS_PER_K, "covariance": cfg.covariance,
                 "chosen_k": None, "why": None, "table": []}
    if len(kept) < 2:
        out["why"] = f"{len(kept)} complete runs: the paper's split needs at least 2"
        return out
    train, test = split_runs([s for s, _ in kept])
    by_seed = dict(kept)
    z = {s: _zscored(np.asarray(by_seed[s], dtype=float)) for s in train + test}
    if any(not np.all(np.isfinite(v)) for v in z.values()):
        out["why"] = "a feature is constant within a run: the paper's per-run z-score is 0/0 there"
        return out
    X, lengths = np.concatenate([z[s] for s in train]), [len(z[s]) for s in train]
    Xt, lt = np.concatenate([z[s] for s in test]), [len(z[s]) for s in test]
    out.update(train_runs=train, test_runs=test)
    for k in range(1, cfg.max_states + 1):
        bics, scores = [], []
        for b in range(FITS_PER_K):
            model = GaussianHMM(n_components=k, covariance_type=cfg.covariance, n_iter=cfg.paper_n_iter,
                                random_state=restart_seed(cfg.seed, k, b))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(X, lengths)
                    scores.append(float(model.score(Xt, lt)))
                    bics.append(float(model.bic(Xt, lt)))
            except (ValueError, np.linalg.LinAlgError) as err:
                out["table"].append({"k": k, "failed": f"{type(err).__name__}: {err}"})
                break
        else:
            out["table"].append({"k": k, "mean_heldout_bic": float(np.mean(bics)),
                                 "mean_heldout_ll": float(np.mean(scores)), "sd_heldout_ll": float(np.std(scores))})
    ok = [t for t in out["table"] if "mean_heldout_bic" in t and math.isfinite(t["mean_heldout_bic"])]
    if ok:
        out["chosen_k"] = min(ok, key=lambda t: (t["mean_heldout_bic"], t["k"]))["k"]
    else:
        out["why"] = "every k failed"
    return out


def apply(sel: dict, seeds: list[int], raw: list[np.ndarray], cfg: HMMConfig) -> None:
    """The paper's own selection beside vt's (``sel["paper"]``); with ``hmm.criterion = "paper"`` its
    k is the one decoded (vt's best fit at that k), BIC's kept as ``bic_k``."""
    sel["paper"] = paper_selection(seeds, raw, cfg)
    if cfg.criterion != "paper":
        return
    k = sel["paper"]["chosen_k"]
    usable = {t["k"] for t in sel["table"] if t["status"] == "ok"}
    if k is None or k not in usable:
        why = sel["paper"]["why"] or f"vt has no usable fit at its k = {k}"
        sel["reasons"].append(f"the paper's criterion gave no usable k ({why}); k is BIC's")
        sel["status"] = "undetermined"
        return
    sel.update(bic_k=sel["chosen_k"], chosen_k=k, criterion="paper")
