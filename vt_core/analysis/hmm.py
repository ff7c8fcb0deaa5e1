"""Gaussian HMMs over metric trajectories: seeded fits, model selection by BIC, canonical states.

The pieces are separate so that an orchestrator can run the (k, restart) grid in parallel:
``prepare`` -> ``fit_one`` (one per k x restart, each JSON-able result + an npz of parameters)
-> ``select`` -> ``decode``. Nothing here is pickled: parameters go to npz, tables to JSON.
"""

from __future__ import annotations

import logging
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import xarray as xr
from hmmlearn import _hmmc
from hmmlearn.hmm import GaussianHMM as _HMMLearnGaussianHMM

from vt_core.analysis.live import model_covars
from vt_core.config.study_config import HMMConfig
from vt_core.errors import VtError
from vt_core.storage.location import Location, save_npz

logging.getLogger("hmmlearn").setLevel(logging.ERROR)


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter = None


@contextmanager
def _one_blas_thread():
    """BLAS limited to one thread while any fit runs. Reference-counted across threads: the last
    fit to finish restores the process's setting (nested threadpool_limits from threads that
    overlap would each restore what the other had set)."""
    global _blas_users, _blas_limiter
    from threadpoolctl import threadpool_limits

    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = threadpool_limits(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


class GaussianHMM(_HMMLearnGaussianHMM):
    """hmmlearn's GaussianHMM with an E-step batched over sequences.

    hmmlearn's E-step handles one sequence at a time: per sequence and state, a Cholesky solve for
    the emission log-likelihoods and an einsum for the emission statistics. With many short
    sequences (40 seeds x 166 checkpoints) those calls, not the arithmetic, take the time. Here the
    emission log-likelihoods, the posteriors (a row-wise normalisation) and the emission statistics
    are computed for all frames at once, the full-covariance statistics as one matrix product; the
    forward-backward pass and the transition statistics stay per sequence. The same EM, equal to
    hmmlearn's up to float summation order (tested; ``benchmarks/hmm_estep.py``)."""

    def fit(self, X, lengths=None):
        """hmmlearn's fit, with BLAS on one thread: the products here are small, and OpenBLAS's
        threads spinning between them halve the speed on a busy machine (fits run side by side)."""
        with _one_blas_thread():
            return super().fit(X, lengths)

    def _do_estep(self, X, lengths):
        if self.implementation != "log":
            return super()._do_estep(X, lengths)
        stats = self._initialize_sufficient_statistics()
        self._estep_begin()
        log_frameprob = self._compute_log_likelihood(X)  # row-wise: all frames at once
        fwd_all, bwd_all = np.empty_like(log_frameprob), np.empty_like(log_frameprob)
        lengths = [len(X)] if lengths is None else list(lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)
        logprob = 0.0
        for start, n in zip(starts, lengths):  # forward-backward and transitions: per sequence
            lf = log_frameprob[start : start + n]
            lp, fwd = _hmmc.forward_log(self.startprob_, self.transmat_, lf)
            bwd = _hmmc.backward_log(self.startprob_, self.transmat_, lf)
            fwd_all[start : start + n], bwd_all[start : start + n] = fwd, bwd
            if "t" in self.params and n > 1:
                with np.errstate(under="ignore"):
                    stats["trans"] += np.exp(_hmmc.compute_log_xi_sum(fwd, self.transmat_, bwd, lf))
            logprob += lp
        stats["nobs"] += len(lengths)
        posteriors = self._compute_posteriors_log(fwd_all, bwd_all)  # row-wise normalisation
        if "s" in self.params:
            stats["start"] += posteriors[starts].sum(axis=0)
        # the emission part of hmmlearn's BaseGaussianHMM._accumulate_sufficient_statistics, once
        if self._needs_sufficient_statistics_for_mean():
            stats["post"] += posteriors.sum(axis=0)
            stats["obs"] += posteriors.T @ X
        if self._needs_sufficient_statistics_for_covars():
            if self.covariance_type in ("spherical", "diag"):
                stats["obs**2"] += posteriors.T @ X**2
            elif self.covariance_type in ("tied", "full"):
                # einsum("ij,ik,il->jkl", posteriors, X, X) as one matrix product
                n, k, d = len(X), posteriors.shape[1], X.shape[1]
                weighted = (posteriors[:, :, None] * X[:, None, :]).reshape(n, k * d)
                stats["obs*obs.T"] += (weighted.T @ X).reshape(k, d, d)
        return stats, logprob


class HMMError(VtError, ValueError):
    """The HMM input or settings cannot give a meaningful fit."""


@dataclass
class Sequences:
    """Per-seed feature sequences, each sorted by the real training step."""

    seeds: list[int]
    steps: list[np.ndarray]
    values: list[np.ndarray]  # raw, (T_s, F)
    features: list[str]

    def zscored(self, mode: str) -> list[np.ndarray]:
        """Each seed's sequence standardised on its own (``seed``, the paper) or with the mean and
        standard deviation of all seeds together (``global``, vt's default: ``HMMConfig.standardize``);
        constant columns become 0. No default here: the setting has one home, the config."""
        if mode == "global":
            allx = np.concatenate(self.values)
            mu, sd = allx.mean(axis=0), allx.std(axis=0)
            return [(x - mu) / np.where(sd > 0, sd, 1.0) for x in self.values]
        out = []
        for x in self.values:
            sd = x.std(axis=0)
            out.append((x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0))
        return out


def pca_projection(train: list[np.ndarray], n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, components (n, F), explained variance ratio) fitted on the training sequences."""
    x = np.concatenate(train)
    mu = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mu, full_matrices=False)
    n = min(n_components, vt.shape[0])
    ratio = (s ** 2) / max((s ** 2).sum(), 1e-300)
    return mu, vt[:n], ratio[:n]


def check_feasible(n_obs: int, n_features: int, cfg: HMMConfig) -> int:
    """The largest k with fewer free parameters than observations; an error if not even k = 1."""
    feasible = [k for k in range(1, cfg.max_states + 1) if n_parameters(k, n_features, cfg.covariance) < n_obs]
    if not feasible:
        raise HMMError(
            f"{n_obs} training observations cannot support even one state with {n_features} features and "
            f"covariance={cfg.covariance!r} ({n_parameters(1, n_features, cfg.covariance)} parameters): add seeds "
            f"or checkpoints, use fewer hmm.features, covariance='diag', or hmm.pca_components")
    return max(feasible)


def sequences_from_rows(seed: np.ndarray, step: np.ndarray, values: np.ndarray, features: list[str]) -> Sequences:
    """Group long-format rows (in any order) into per-seed sequences sorted by ``step``.

    Earlier tools fed rows in file-listing order; here the order of the rows never matters.
    """
    seed, step, values = np.asarray(seed), np.asarray(step), np.asarray(values, dtype=np.float64)
    seeds, steps, vals = [], [], []
    for s in np.unique(seed):
        rows = np.flatnonzero(seed == s)
        rows = rows[np.argsort(step[rows], kind="stable")]
        keep = np.isfinite(values[rows]).all(axis=1)
        if len(np.unique(step[rows])) != len(rows):
            raise HMMError(f"seed {s}: repeated steps {np.unique(step[rows], return_counts=True)}")
        seeds.append(int(s))
        steps.append(step[rows][keep])
        vals.append(values[rows][keep])
    return Sequences(seeds, steps, vals, list(features))


def sequences_from_features(value: xr.DataArray) -> Sequences:
    """From ``value`` (seed, step, metric): rows with any NaN (missing checkpoints) are dropped."""
    v = value.transpose("seed", "step", "metric")
    n_seed, n_step, n_feat = v.shape
    seed = np.repeat(v["seed"].values, n_step)
    step = np.tile(v["step"].values, n_seed)
    return sequences_from_rows(seed, step, v.values.reshape(-1, n_feat), [str(m) for m in v["metric"].values])


def split_seeds(seeds: list[int], holdout_fraction: float, random_state: int) -> tuple[list[int], list[int]]:
    """Seeded split into (fit, held-out) seeds; at least one seed is always fitted."""
    seeds = sorted(seeds)
    n_hold = int(round(holdout_fraction * len(seeds)))
    if holdout_fraction > 0 and len(seeds) >= 2:
        n_hold = max(1, n_hold)
    n_hold = min(n_hold, len(seeds) - 1)
    perm = np.random.default_rng(random_state).permutation(len(seeds))
    held = sorted(seeds[i] for i in perm[:n_hold])
    return [s for s in seeds if s not in held], held


def restart_seed(base: int, k: int, restart: int) -> int:
    """A distinct, reproducible random_state for every (k, restart)."""
    return int(np.random.SeedSequence([base, k, restart]).generate_state(1)[0])


def n_parameters(k: int, n_features: int, covariance: str) -> int:
    cov = {"full": k * n_features * (n_features + 1) // 2, "diag": k * n_features,
           "spherical": k, "tied": n_features * (n_features + 1) // 2}[covariance]
    return (k - 1) + k * (k - 1) + k * n_features + cov


def _stack(seqs: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    return np.concatenate(seqs), [len(s) for s in seqs]


def _new_model(k: int, cfg: HMMConfig, random_state: int, init: dict[str, np.ndarray] | None) -> GaussianHMM:
    """An unfitted model: started from ``init`` when it is a usable model, else from k-means."""
    start = None
    if init is not None:
        try:
            start = load_model(init)
        except ValueError:  # not a usable start (e.g. a covariance no longer positive-definite)
            start = None
    model = GaussianHMM(n_components=k, covariance_type=cfg.covariance, n_iter=cfg.n_iter, tol=cfg.tol,
                        random_state=random_state, init_params="" if start is not None else "stmc")
    if start is not None:
        model.startprob_, model.transmat_, model.means_ = start.startprob_, start.transmat_, start.means_
        model.covars_ = start._covars_
    return model


def fit_one(train: list[np.ndarray], held: list[np.ndarray], k: int, restart: int, cfg: HMMConfig,
            params_path: Location | None = None, random_state: int | None = None,
            init: dict[str, np.ndarray] | None = None) -> dict:
    """Fit one GaussianHMM; a failure is returned as ``status='failed'`` with its reason, never raised.
    The parameters go to ``params_path`` (npz), or into the row (``params``) when it is None.
    ``init``: start EM from these parameters (a model's, as saved) instead of k-means."""
    X, lengths = _stack(train)
    rs = restart_seed(cfg.seed, k, restart) if random_state is None else random_state
    row: dict = {"k": k, "restart": restart, "random_state": rs, "status": "ok", "reason": None,
           "n_params": n_parameters(k, X.shape[1], cfg.covariance), "n_obs": len(X),
           "train_ll": None, "heldout_ll": None, "aic": None, "bic": None, "converged": None,
           "params_path": None}
    if row["n_params"] >= len(X):
        row.update(status="failed", reason=f"{row['n_params']} parameters for {len(X)} observations: "
                   f"add seeds or checkpoints, lower hmm.max_states, or use covariance='diag'")
        return row
    model = _new_model(k, cfg, rs, init)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, lengths)
            ll = model.score(X, lengths)
            params = model_params(model)
            bad = [n for n, v in params.items() if not np.all(np.isfinite(v))]
            if bad:
                raise HMMError(f"non-finite parameters {bad}")
            if not np.allclose(model.transmat_.sum(axis=1), 1.0, atol=1e-6):
                raise HMMError("degenerate transition matrix (a row does not sum to 1)")
            try:  # what is saved must load again to decode (a near-singular state does not)
                load_model({"covariance_type": np.array(cfg.covariance), **params})
            except ValueError as err:
                raise HMMError(f"degenerate state: {err}") from None
            # hmmlearn calls a fit "converged" when it merely ran out of iterations; we do not
            mon = model.monitor_
            hist = list(mon.history)
            converged = mon.iter < cfg.n_iter or (len(hist) >= 2 and abs(hist[-1] - hist[-2]) < cfg.tol)
            row.update(train_ll=float(ll), aic=float(model.aic(X, lengths)), bic=float(model.bic(X, lengths)),
                       converged=bool(converged), n_iter=int(mon.iter))
            if not converged:
                raise HMMError(f"no convergence in {cfg.n_iter} EM iterations (tol {cfg.tol}); raise hmm.n_iter")
            if held:
                Xh, lh = _stack(held)
                row["heldout_ll"] = float(model.score(Xh, lh))
    except Exception as err:  # noqa: BLE001 - a failed fit is data for the selection, not a crash
        row.update(status="failed", reason=f"{type(err).__name__}: {err}")
        return row
    if not np.isfinite(row["train_ll"]):
        row.update(status="failed", reason=f"non-finite log-likelihood {row['train_ll']}")
        return row
    if params_path is not None:
        save_npz(params_path, covariance_type=np.array(cfg.covariance), **params)
        row["params_path"] = str(params_path)
    else:
        row["params"] = {"covariance_type": np.array(cfg.covariance), **{n: np.array(v) for n, v in params.items()}}
    return row


def model_params(model: GaussianHMM) -> dict[str, np.ndarray]:
    return {"startprob": model.startprob_, "transmat": model.transmat_, "means": model.means_,
            "covars": model._covars_}  # the covariance in its own type's shape


def load_model(params: dict[str, np.ndarray]) -> GaussianHMM:
    cov = str(np.asarray(params["covariance_type"]))
    k, n_features = params["means"].shape
    m = GaussianHMM(n_components=k, covariance_type=cov)
    m.n_features = n_features
    m.startprob_, m.transmat_, m.means_ = params["startprob"], params["transmat"], params["means"]
    m.covars_ = model_covars(params)
    return m


def stable(x: float) -> float:
    """``x`` to 9 significant digits: the key every comparison of likelihoods and criteria uses, so
    that the last-bit differences between runners (BLAS threads, processes) never change which
    restart is best, which k is chosen, or the state labels; ties go to the smaller k / restart."""
    return float(f"{x:.9g}")


def best_restart(rows: list[dict]) -> dict:
    """The fit with the highest training log-likelihood (ties: the lowest restart)."""
    return max(rows, key=lambda f: (stable(f["train_ll"]), -f["restart"]))


def selection_table(fits: list[dict], criterion: str = "bic") -> tuple[list[dict], int]:
    """Best restart per k (highest training log-likelihood), and the k minimising ``criterion``."""
    table = []
    for k in sorted({f["k"] for f in fits}):
        rows = sorted((f for f in fits if f["k"] == k), key=lambda f: f["restart"])  # order-independent
        ok = [f for f in rows if f["status"] == "ok"]
        entry = {"k": k, "n_ok": len(ok), "n_failed": len(rows) - len(ok),
                 "failures": sorted({f["reason"] for f in rows if f["status"] != "ok"})}
        if ok:
            best = best_restart(ok)
            entry.update({key: best[key] for key in ("restart", "random_state", "train_ll", "heldout_ll",
                                                      "aic", "bic", "n_params", "params_path")})
            for crit in ("bic", "aic", "heldout_ll"):  # the spread across restarts
                vals = [f[crit] for f in ok if f[crit] is not None]
                entry[f"{crit}_min"], entry[f"{crit}_max"] = (min(vals), max(vals)) if vals else (None, None)
        table.append(entry)
    usable = [t for t in table if t["n_ok"]]
    if not usable:
        reasons = sorted({r for t in table for r in t["failures"]})
        raise HMMError(f"every HMM fit failed: {reasons}")
    # how decisive the choice is: BIC weights (Wagenmakers & Farrell 2004) and the gap to the next k
    bics = np.array([t["bic"] for t in usable])
    w = np.exp(-0.5 * (bics - bics.min()))
    for t, wk in zip(usable, w / w.sum()):
        t["bic_weight"] = float(wk)
    if criterion == "heldout_ll" and all(t["heldout_ll"] is not None for t in usable):
        chosen = max(usable, key=lambda t: (stable(t["heldout_ll"]), -t["k"]))["k"]
    else:
        chosen = min(usable, key=lambda t: (stable(t[criterion if criterion != "heldout_ll" else "bic"]), t["k"]))["k"]
    return table, chosen


def canonical_permutation(paths: list[np.ndarray], steps: list[np.ndarray], k: int,
                          means: np.ndarray) -> np.ndarray:
    """``perm[old] = new``: states ordered by mean first-visit step over the seeds that visit them;
    states never visited go last, ordered by their mean vector. hmmlearn's labels are arbitrary."""
    first = np.full(k, np.inf)
    for s in range(k):
        visits = [st[np.argmax(p == s)] for p, st in zip(paths, steps) if np.any(p == s)]
        if visits:
            first[s] = float(np.mean(visits))
    order = sorted(range(k), key=lambda s: (first[s], tuple(np.round(means[s], 8))))
    perm = np.empty(k, dtype=int)
    perm[order] = np.arange(k)
    return perm


def permute_params(params: dict[str, np.ndarray], perm: np.ndarray) -> dict[str, np.ndarray]:
    inv = np.argsort(perm)  # inv[new] = old
    out = dict(params)
    out["startprob"] = params["startprob"][inv]
    out["transmat"] = params["transmat"][np.ix_(inv, inv)]
    out["means"] = params["means"][inv]
    if str(np.asarray(params["covariance_type"])) != "tied":
        out["covars"] = params["covars"][inv]
    return out


def decode(params: dict[str, np.ndarray], seqs: list[np.ndarray]) -> list[np.ndarray]:
    model = load_model(params)
    return [model.decode(z, algorithm="viterbi")[1] for z in seqs]
