"""Choosing the number of states, and saying how sure the choice is.

Three kinds of fit, all :func:`vt_core.analysis.hmm.fit_one` on standardised sequences:

* ``main``: k = 1.. on the training seeds, ``hmm.restarts`` restarts each, scored by BIC (the
  paper's criterion) and on the held-out seeds;
* ``cv``: for each fold of the training *seeds* (not checkpoints), k fitted on the other folds and
  scored on the fold: the cross-validated held-out log-likelihood per observation, with its spread
  over folds;
* ``boot``: refits on bootstrap resamples of the seeds, each choosing its own k by BIC: the
  distribution of the chosen k, and how often each state's checkpoints are grouped together again.

The grid runs over the k that the data can support (fewer free parameters than training
observations); larger k are listed as infeasible, with the reason. When BIC is lowest at the
largest k tried and larger k are still feasible, the grid is extended (up to twice
``hmm.max_states``); when the choice stays at the edge of the grid or of what the data allows, the
status is ``undetermined``, never a number presented as decided.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vt_core.analysis import hmm
from vt_core.config.study_config import HMMConfig
from vt_core.storage.location import load_npz, location

KIND_CODE = {"main": 0, "cv": 1, "boot": 2}


def job_name(job: dict) -> str:
    """``main-k=03-r=01``, ``cv2-k=03-r=00``, ``boot11-k=03-r=00``: one file name per fit."""
    prefix = job["kind"] if job["kind"] == "main" else f"{job['kind']}{job['index']}"
    return f"{prefix}-k={job['k']:02d}-r={job['restart']:02d}"


def job_seed(cfg: HMMConfig, job: dict) -> int:
    """The fit's random_state: the same as before for main fits, distinct for each fold / sample."""
    if job["kind"] == "main":
        return hmm.restart_seed(cfg.seed, job["k"], job["restart"])
    seq = np.random.SeedSequence([cfg.seed, job["k"], job["restart"], KIND_CODE[job["kind"]], job["index"]])
    return int(seq.generate_state(1)[0])


def cv_folds(train: list[int], n_folds: int, seed: int) -> list[list[int]]:
    """Seeded folds of the training seeds (each fold a list of seeds); none with fewer than 2 seeds."""
    n = min(n_folds, len(train))
    if n < 2:
        return []
    perm = np.random.default_rng(np.random.SeedSequence([seed, 104729])).permutation(sorted(train))
    return [sorted(int(s) for s in perm[i::n]) for i in range(n)]


SUBSAMPLE = 0.8


def bootstrap_sample(seeds: list[int], b: int, seed: int) -> list[int]:
    """The seeds of resample ``b``: 80% of the seeds drawn *without* replacement (subsampling).
    Drawing with replacement duplicates sequences, and BIC then rewards states that fit a
    duplicated seed's idiosyncrasies: on planted data it put half the mass on k + 1."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919, b]))
    size = min(len(seeds), max(2, int(round(SUBSAMPLE * len(seeds)))))
    return sorted(int(s) for s in rng.choice(sorted(seeds), size=size, replace=False))


def fit_jobs(ks: list[int], cfg: HMMConfig, n_folds: int) -> list[dict]:
    """The main and cross-validation fits for ``ks``."""
    jobs = [{"kind": "main", "k": k, "restart": r, "index": -1} for k in ks for r in range(cfg.restarts)]
    jobs += [{"kind": "cv", "k": k, "restart": r, "index": f} for k in ks for f in range(n_folds)
             for r in range(cfg.cv_restarts)]
    return jobs


def bootstrap_jobs(ks: list[int], cfg: HMMConfig, starts: dict[int, str] | None = None) -> list[dict]:
    """The resample fits; each starts from the main fit at its k (``starts``: k -> parameters file),
    so that one restart finds that optimum again rather than a worse local one (which made resamples
    pick k + 1 in a third of the draws on a known 5-state HMM)."""
    starts = starts or {}
    return [{"kind": "boot", "k": k, "restart": r, "index": b, "init": starts.get(k) if r == 0 else None}
            for b in range(cfg.bootstrap) for k in ks for r in range(cfg.bootstrap_restarts)]


def job_data(job: dict, z: dict[int, np.ndarray], train: list[int], held: list[int],
             folds: list[list[int]], cfg: HMMConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(sequences to fit, sequences to score) for a job."""
    if job["kind"] == "main":
        return [z[s] for s in train], [z[s] for s in held]
    if job["kind"] == "cv":
        fold = folds[job["index"]]
        return [z[s] for s in train if s not in fold], [z[s] for s in fold]
    return [z[s] for s in bootstrap_sample(sorted(z), job["index"], cfg.seed)], []


def run_job(job: dict, z: dict[int, np.ndarray], train: list[int], held: list[int], folds: list[list[int]],
            cfg: HMMConfig, params_path=None) -> dict:
    """Fit one job; the row says what was fitted and how it scored (failures are rows too)."""
    fit, score = job_data(job, z, train, held, folds, cfg)
    init = load_npz(location(job["init"])) if job.get("init") else None
    row = hmm.fit_one(fit, score, job["k"], job["restart"], cfg, params_path, random_state=job_seed(cfg, job),
                      init=init)
    row.update(kind=job["kind"], index=job["index"],
               n_heldout_obs=int(sum(len(x) for x in score)))
    return row


def feasible_ks(n_obs: int, n_features: int, cfg: HMMConfig, upto: int) -> tuple[list[int], dict[int, str]]:
    """The k in 1..upto that ``n_obs`` training observations can support, and why the others cannot."""
    ok, why = [], {}
    for k in range(1, upto + 1):
        p = hmm.n_parameters(k, n_features, cfg.covariance)
        if p < n_obs:
            ok.append(k)
        else:
            why[k] = (f"{p} free parameters for {n_obs} training observations ({n_features} features, "
                      f"covariance={cfg.covariance!r})")
    return ok, why


def _cv_scores(rows: list[dict]) -> dict[int, dict[str, Any]]:
    """Per k: the held-out log-likelihood per observation of each fold (best restart by training
    log-likelihood), its mean and standard deviation over folds."""
    out: dict[int, dict[str, Any]] = {}
    for k in sorted({r["k"] for r in rows}):
        per_fold = []
        for f in sorted({r["index"] for r in rows if r["k"] == k}):
            ok = [r for r in rows if r["k"] == k and r["index"] == f and r["status"] == "ok"
                  and r.get("heldout_ll") is not None]
            if ok:
                best = hmm.best_restart(ok)
                per_fold.append(best["heldout_ll"] / max(best["n_heldout_obs"], 1))
        if per_fold:
            out[k] = {"cv_ll": float(np.mean(per_fold)), "cv_ll_sd": float(np.std(per_fold)),
                      "cv_folds": len(per_fold)}
    return out


def _more_k_hint(cfg: HMMConfig) -> str:
    """What would let this data test larger k, for the settings in use."""
    ways = ["add seeds or checkpoints", "fewer hmm.features"]
    if cfg.covariance in ("full", "tied"):
        ways.append("covariance = 'diag'")
    if not cfg.pca_components:
        ways.append("hmm.pca_components")
    if cfg.holdout_fraction > 0:
        ways.append("a smaller hmm.holdout_fraction")
    return ", ".join(ways[:-1]) + " or " + ways[-1]


def _edge(chosen: int, table: list[dict], feasible_max: int, cap: int, cfg: HMMConfig) -> list[str]:
    """Why the chosen k is not decided (empty when it is)."""
    ok_ks = [t["k"] for t in table if t["status"] == "ok"]
    tried = [t["k"] for t in table if t["status"] != "infeasible"]
    if chosen != max(ok_ks):
        return []
    if chosen >= feasible_max:
        return [f"BIC is lowest at k = {chosen}, the largest k this data can support; {_more_k_hint(cfg)} "
                f"would test larger k"]
    if max(tried) > chosen:
        return [f"BIC is lowest at k = {chosen}, but every fit at k = {max(tried)} failed; larger k are untested"]
    if chosen >= cap:
        return [f"BIC is still falling at k = {chosen}, the end of the grid (twice hmm.max_states)"]
    return [f"BIC is still falling at k = {chosen}, the largest k tried; raise hmm.max_states or set hmm.extend"]


def choose(rows: list[dict], infeasible: dict[int, str], cfg: HMMConfig, feasible_max: int) -> dict:
    """The selection from every main and cv fit so far: per k its best restart, BIC, AIC, held-out
    and cross-validated log-likelihood; the chosen k (lowest BIC), the runner-up and the evidence
    between them; ``extend``: the k to fit next when the choice sits at the grid's edge."""
    main = [r for r in rows if r.get("kind", "main") == "main"]
    table, chosen = hmm.selection_table(main, "bic")
    cv = _cv_scores([r for r in rows if r.get("kind") == "cv"])
    for t in table:
        t["status"] = "ok" if t["n_ok"] else "failed"
        t.update(cv.get(t["k"], {}))
    tried = {t["k"] for t in table}
    table += [{"k": k, "status": "infeasible", "n_ok": 0, "n_failed": 0, "failures": [why]}
              for k, why in sorted(infeasible.items()) if k not in tried]
    table.sort(key=lambda t: t["k"])
    cap = 2 * cfg.max_states
    top = max(t["k"] for t in table if t["status"] != "infeasible")
    extend = []
    if cfg.extend and chosen == top and top < min(feasible_max, cap):
        extend = [k for k in (top + 1, top + 2) if k <= min(feasible_max, cap)]
    ranked = sorted((t for t in table if t["status"] == "ok"), key=lambda t: (hmm.stable(t["bic"]), t["k"]))
    runner = ranked[1] if len(ranked) > 1 else None
    reasons = [] if extend else _edge(chosen, table, feasible_max, cap, cfg)
    cv_best = max(cv, key=lambda k: (hmm.stable(cv[k]["cv_ll"]), -k)) if cv else None
    return {
        "criterion": "bic", "chosen_k": chosen, "status": "undetermined" if reasons else "decided",
        "reasons": reasons, "table": table, "extend": extend,
        "runner_up_k": runner["k"] if runner else None,
        "bic_gap_to_next": (runner["bic"] - ranked[0]["bic"]) if runner else None,
        "bic_weight": ranked[0]["bic_weight"], "cv_best_k": cv_best,
        "k_tried": sorted(t["k"] for t in table if t["status"] != "infeasible"),
        "k_infeasible": sorted(infeasible), "k_failed": [t["k"] for t in table if t["status"] == "failed"],
    }


def bootstrap_summary(rows: list[dict], chosen: int) -> dict:
    """Each bootstrap resample's own choice of k (lowest BIC over the k it fitted): their
    distribution, the share that agrees with ``chosen``, and the best fit at ``chosen`` per sample."""
    boot = [r for r in rows if r.get("kind") == "boot"]
    picks, at_chosen = [], []
    for b in sorted({r["index"] for r in boot}):
        ok = [r for r in boot if r["index"] == b and r["status"] == "ok"]
        if not ok:
            continue
        best_per_k = {k: hmm.best_restart([r for r in ok if r["k"] == k]) for k in {r["k"] for r in ok}}
        picks.append(min(best_per_k.values(), key=lambda r: (hmm.stable(r["bic"]), r["k"]))["k"])
        if chosen in best_per_k:
            at_chosen.append(best_per_k[chosen])
    if not picks:
        return {"n": 0, "k_distribution": {}, "chosen_k_support": None, "k_interval": None, "fits_at_chosen": []}
    ks, counts = np.unique(picks, return_counts=True)
    return {"n": len(picks), "k_distribution": {int(k): float(c / len(picks)) for k, c in zip(ks, counts)},
            "chosen_k_support": float(np.mean(np.array(picks) == chosen)),
            "k_interval": [int(np.percentile(picks, 2.5, method="lower")), int(np.percentile(picks, 97.5, method="higher"))],
            "fits_at_chosen": at_chosen}


def state_stability(paths: list[np.ndarray], resampled: list[list[np.ndarray]], k: int) -> list[float | None]:
    """For each state of ``paths``: how often two of its checkpoints are decoded as one state again
    by a model fitted to a bootstrap resample (``resampled[b]``: that model's decoding of the same
    sequences), averaged over resamples. 1: always together; near 1/k': split at random."""
    labels = np.concatenate(paths)
    out: list[float | None] = []
    for s in range(k):
        members = labels == s
        n = int(members.sum())
        if n < 2 or not resampled:
            out.append(None)
            continue
        rates = []
        for dec in resampled:
            _, counts = np.unique(np.concatenate(dec)[members], return_counts=True)
            rates.append(float((counts * (counts - 1)).sum() / (n * (n - 1))))
        out.append(float(np.mean(rates)))
    return out
