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

KIND_CODE = {"main": 0, "cv": 1, "boot": 2, "thin": 3, "few": 4, "chg": 5}
#: the density check's refits (``hmm.density_check``): (kind, index) -> what they fit
DENSITY = {("thin", 2): "every 2nd checkpoint", ("thin", 4): "every 4th checkpoint", ("few", 2): "half the seeds"}


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
             for r in range(cfg.cv_restarts or cfg.restarts)]
    if cfg.density_check:
        jobs += [{"kind": kind, "k": k, "restart": r, "index": i} for kind, i in DENSITY for k in ks
                 for r in range(cfg.restarts)]
    if cfg.change_model:  # states of change (vt_core.analysis.change_model)
        jobs += [{"kind": "chg", "k": k, "restart": r, "index": 0} for k in ks for r in range(cfg.restarts)]
    return jobs


def bootstrap_jobs(ks: list[int], cfg: HMMConfig, starts: dict[int, str] | None = None) -> list[dict]:
    """The resample fits. ``hmm.bootstrap_start = "warm"``: each starts from the main fit at its k
    (``starts``: k -> parameters file), so that one restart finds that optimum again rather than a
    worse local one (which made resamples pick k + 1 in a third of the draws on a known 5-state
    HMM) — the share then measures the stability of that optimum as much as the data's support for
    k; "cold": from k-means with as many restarts as the main fits, what a fresh analysis of the
    resample would find."""
    starts = starts or {} if cfg.bootstrap_start == "warm" else {}
    restarts = cfg.bootstrap_restarts or (1 if cfg.bootstrap_start == "warm" else cfg.restarts)
    return [{"kind": "boot", "k": k, "restart": r, "index": b, "init": starts.get(k) if r == 0 else None}
            for b in range(cfg.bootstrap) for k in ks for r in range(restarts)]


def job_data(job: dict, z: dict[int, np.ndarray], train: list[int], held: list[int],
             folds: list[list[int]], cfg: HMMConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(sequences to fit, sequences to score) for a job."""
    if job["kind"] == "main":
        return [z[s] for s in train], [z[s] for s in held]
    if job["kind"] == "cv":
        fold = folds[job["index"]]
        return [z[s] for s in train if s not in fold], [z[s] for s in fold]
    if job["kind"] == "chg":  # first differences: the change from each checkpoint to the next
        return [np.diff(z[s], axis=0) for s in train], [np.diff(z[s], axis=0) for s in held]
    if job["kind"] == "thin":  # every index-th checkpoint of each training seed, from its first
        return [z[s][:: job["index"]] for s in train], []
    if job["kind"] == "few":  # the first 1/index of the training seeds, in seed order
        return [z[s] for s in sorted(train)[: max(2, len(train) // job["index"])]], []
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
    log-likelihood; None where every fit failed), their mean and standard deviation over folds."""
    out: dict[int, dict[str, Any]] = {}
    folds = sorted({r["index"] for r in rows})
    for k in sorted({r["k"] for r in rows}):
        per_fold: list[float | None] = []
        for f in folds:
            ok = [r for r in rows if r["k"] == k and r["index"] == f and r["status"] == "ok"
                  and r.get("heldout_ll") is not None]
            best = hmm.best_restart(ok) if ok else None
            per_fold.append(best["heldout_ll"] / max(best["n_heldout_obs"], 1) if best else None)
        got = [v for v in per_fold if v is not None]
        if got:
            out[k] = {"cv_ll": float(np.mean(got)), "cv_ll_sd": float(np.std(got)), "cv_folds": len(got),
                      "cv_fold_ll": per_fold}
    return out


def cv_support(cv: dict[int, dict[str, Any]]) -> tuple[int | None, list[int]]:
    """(k with the highest mean held-out likelihood, every k the cross-validation supports: those
    whose deficit to that best, paired fold by fold on the same held-out seeds, is within one
    standard error of the paired difference).

    A redundant state costs held-out likelihood only at the noise level, so the bare maximum leaned
    to larger k even where the model is right (issue 33); the cross-validated k is the smallest
    supported one (the one-standard-error rule), and a k agrees with cross-validation when it is
    supported. A k with fewer than 2 folds to compare is not supported."""
    if not cv:
        return None, []
    best = max(cv, key=lambda k: (hmm.stable(cv[k]["cv_ll"]), -k))
    top = cv[best]["cv_fold_ll"]
    out = []
    for k in sorted(cv):
        if k == best:
            out.append(k)
            continue
        pairs = [(a, b) for a, b in zip(top, cv[k]["cv_fold_ll"]) if a is not None and b is not None]
        if len(pairs) < 2:
            continue
        d = np.array([a - b for a, b in pairs])
        if d.mean() <= d.std(ddof=1) / np.sqrt(len(d)):
            out.append(k)
    return best, out


def change_choice(rows: list[dict]) -> dict | None:
    """The change model's best fit per k and the k its BIC chooses (None when it was not fitted)."""
    chg = [r for r in rows if r.get("kind") == "chg"]
    if not any(r["status"] == "ok" for r in chg):
        return None
    table, k = hmm.selection_table(chg, "bic")
    return {"k": k, "table": [{key: t.get(key) for key in ("k", "n_ok", "bic", "heldout_ll", "params_path")}
                              for t in table]}


def density_table(rows: list[dict], chosen: int) -> list[dict]:
    """k chosen by BIC (best restart per k) on all the data and on each of :data:`DENSITY`'s reductions."""
    out = [{"data": "all checkpoints and training seeds", "k": chosen}]
    for (kind, index), what in DENSITY.items():
        ok = [r for r in rows if r.get("kind") == kind and r.get("index") == index and r["status"] == "ok"]
        if ok:
            best = {k: hmm.best_restart([r for r in ok if r["k"] == k]) for k in {r["k"] for r in ok}}
            out.append({"data": what, "k": min(best.values(), key=lambda r: (hmm.stable(r["bic"]), r["k"]))["k"]})
    return out


def follows_density(table: list[dict]) -> str | None:
    """One plain sentence when k grows with the data (fewer checkpoints or seeds give fewer states)."""
    if len(table) < 2:
        return None
    full = table[0]["k"]
    fewer = [t for t in table[1:] if t["k"] < full]
    if not fewer:
        return None
    shown = "; ".join(f"{t['data']}: k = {t['k']}" for t in table)
    return (f"k follows the amount of data ({shown}): the states segment continuous change, and their number "
            f"is a property of the checkpoint density as much as of training")


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
    cv_best, supported = cv_support(cv)
    return {
        "criterion": "bic", "chosen_k": chosen, "status": "undetermined" if reasons else "decided",
        "reasons": reasons, "table": table, "extend": extend,
        "runner_up_k": runner["k"] if runner else None,
        "bic_gap_to_next": (runner["bic"] - ranked[0]["bic"]) if runner else None,
        "bic_weight": ranked[0]["bic_weight"], "cv_best_k": cv_best,
        "cv_k": min(supported) if supported else None, "cv_supported": supported,
        "k_tried": sorted(t["k"] for t in table if t["status"] != "infeasible"),
        "k_infeasible": sorted(infeasible), "k_failed": [t["k"] for t in table if t["status"] == "failed"],
        "density": density_table(rows, chosen),
    }


def _span(ks: list[int]) -> str:
    """``3–5`` for consecutive k, ``3, 5`` otherwise."""
    ks = sorted(ks)
    return f"{ks[0]}–{ks[-1]}" if len(ks) > 1 and ks == list(range(ks[0], ks[-1] + 1)) else ", ".join(map(str, ks))


def agreement(sel: dict, boot: dict) -> tuple[dict[str, int | None], list[str]]:
    """The k each criterion gives (BIC, cross-validation by the one-standard-error rule, the
    bootstrap's most frequent pick) and, when those that ran disagree, one sentence saying so and
    what would settle it: k is decided only where the evidence agrees."""
    dist = boot.get("k_distribution") or {}
    top = max(dist.values()) if dist else None
    modes = [int(k) for k, v in dist.items() if v == top]
    bic, chosen = sel.get("bic_k", sel["chosen_k"]), sel["chosen_k"]
    paper = (sel.get("paper") or {}).get("chosen_k")
    criteria = {"bic": bic, "cv": sel.get("cv_k"), "bootstrap": modes[0] if len(modes) == 1 else None, "paper": paper}
    said = [f"BIC k = {bic}"]
    off = bic != chosen
    if sel.get("criterion") == "paper":
        said.insert(0, f"the paper's held-out BIC k = {chosen}")
    if sel.get("cv_k") is not None:
        supported = sel.get("cv_supported") or [sel["cv_k"]]
        said.append(f"cross-validated likelihood supports k = {_span(supported)} (highest at {sel.get('cv_best_k')})")
        off |= chosen not in supported
    if dist:
        shown = ", ".join(f"{int(k)}: {v:.0%}" for k, v in sorted(dist.items(), key=lambda kv: int(kv[0])))
        said.append(f"bootstrap picks {shown} of {boot.get('n')} resamples")
        off |= criteria["bootstrap"] != chosen
    if not off:
        return criteria, []
    return criteria, ["the criteria disagree: " + "; ".join(said) + ". More seeds would settle it (each criterion "
                      "sharpens with seeds); until then no k is claimed"]


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
