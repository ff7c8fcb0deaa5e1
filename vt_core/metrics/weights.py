"""Weight metrics: NumPy kernels over stacked matrices (..., m, n), registered by name.

The paper's 14 are :data:`vt_core.names.PAPER_METRICS`. Everything is computed in float64.

Two conventions (``metrics.convention``), which differ in three places only:

* ``paper_code`` (the default): what michahu/modeling-training computes, so that the paper's
  numbers can be reproduced: Bessel-corrected variances (``torch.var``), the lower middle value as
  the median (``torch.median``), and a matrix with one singular value (a 1 x n output layer) has
  no singular-value variance (NaN, left out of the model average as ``np.nanmean`` does);
* ``paper_text``: what the paper's text states: population variances, the midpoint median, and
  the variance of a single singular value is 0.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from vt_core.metrics.registry import register_metric, register_scalar
from vt_core.names import SCALAR_FORMULAS

SV_THRESHOLD = 1e-5  # singular values below this count as 0 (REFERENCE.md)


def singular_values(w: np.ndarray) -> np.ndarray:
    """Singular values of each matrix of the stack (float64), descending, those below 1e-5 set to 0.

    Computed as the square roots of the eigenvalues of the smaller Gram matrix (W W^T or W^T W):
    several times faster than an SVD, and exact to about sqrt(machine eps) * ||W||_2 (~1e-8 * ||W||_2)
    in absolute terms, far below the 1e-5 threshold that zeroes the small values anyway."""
    w = np.asarray(w, dtype=np.float64)
    m, n = w.shape[-2:]
    gram = w @ np.swapaxes(w, -1, -2) if m <= n else np.swapaxes(w, -1, -2) @ w
    lam = np.linalg.eigvalsh(gram)[..., ::-1]  # descending
    s = np.sqrt(np.clip(lam, 0.0, None))
    return np.where(s < SV_THRESHOLD, 0.0, s)


def _div(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(a, dtype=np.float64) / b


# --- per matrix (averaged over the model's matrices) ---------------------------------------------

def _ddof(convention: str) -> int:
    return 1 if convention == "paper_code" else 0


#: values along the last axis taken at a time by :func:`_variance` beyond which it goes by blocks
VAR_BLOCK = 2**20


def _variance(x: np.ndarray, ddof: int) -> np.ndarray:
    """Variance along the last axis in float64; NaN where there are no more values than ``ddof``.

    Two passes, as ``np.var``: the mean, then the squared deviations from it, summed by blocks of
    :data:`VAR_BLOCK` values, so that a model's weights (``var_w``) never get a float64 copy whole
    (twice a float32 checkpoint); equal to ``np.var`` to ~1e-15 relative."""
    n = x.shape[-1]
    if n - ddof <= 0:
        return np.full(x.shape[:-1], np.nan)
    if n <= VAR_BLOCK:
        return x.var(axis=-1, dtype=np.float64, ddof=ddof)
    mean = x.mean(axis=-1, dtype=np.float64)[..., None]
    total = np.zeros(x.shape[:-1])
    for i in range(0, n, VAR_BLOCK):
        d = x[..., i:i + VAR_BLOCK].astype(np.float64) - mean
        total += np.einsum("...i,...i->...", d, d)
    return total / (n - ddof)


_SHARED = threading.local()


@contextmanager
def shared_sums(w: np.ndarray) -> Iterator[None]:
    """While the metrics of one stack ``w`` are computed (a kernel call), the sums several of them
    read (l1, the sum of squares: l1, l2, code_sparsity, rms) are computed once, each exactly as
    alone; per thread (the lazy path's kernels run in dask's threads)."""
    _SHARED.slot = (w, {})
    try:
        yield
    finally:
        _SHARED.slot = None


def _sum(w: np.ndarray, key: str, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    slot = getattr(_SHARED, "slot", None)
    if slot is None or slot[0] is not w:
        return fn(w)
    if key not in slot[1]:
        slot[1][key] = fn(w)
    return slot[1][key]


def _abs_sum(w: np.ndarray) -> np.ndarray:
    return _sum(w, "abs", lambda x: np.abs(x).sum(axis=(-2, -1)))


def _square_sum(w: np.ndarray) -> np.ndarray:
    return _sum(w, "square", lambda x: (x * x).sum(axis=(-2, -1)))


@register_metric("l1", "matrix", kernels=True)
def l1(w, s):
    """sum_ij |w_ij|"""
    return _abs_sum(w)


@register_metric("l2", "matrix", kernels=True)
def l2(w, s):
    """Frobenius norm sqrt(sum_ij w_ij^2)"""
    return np.sqrt(_square_sum(w))


@register_metric("trace", "matrix")
def trace(w, s):
    """sum_i w_ii over i < min(m, n) (rectangular, as torch.trace)"""
    return np.trace(w, axis1=-2, axis2=-1)


@register_metric("spectral", "matrix", needs_sv=True)
def spectral(w, s):
    """largest singular value s_1"""
    return s.max(axis=-1)


@register_metric("code_sparsity", "matrix", kernels=True)
def code_sparsity(w, s):
    """l1 / l2"""
    return _div(l1(w, s), l2(w, s))


@register_metric("computational_sparsity", "matrix", needs_sv=True)
def computational_sparsity(w, s):
    """trace / spectral"""
    return _div(trace(w, s), spectral(w, s))


@register_metric("mean_singular_value", "matrix", needs_sv=True)
def mean_singular_value(w, s):
    """mean_i s_i (s_i < 1e-5 set to 0)"""
    return s.mean(axis=-1)


@register_metric("var_singular_value", "matrix", needs_sv=True)
def var_singular_value(w, s, convention: str = "paper_code"):
    """variance of the s_i (Bessel-corrected under paper_code: NaN for one value; population under paper_text)"""
    return _variance(s, _ddof(convention))


@register_metric("effective_rank", "matrix", needs_sv=True)
def effective_rank(w, s):
    """exp(-sum_i p_i log p_i), p_i = s_i / sum_j s_j (Roy & Vetterli 2007)"""
    p = _div(s, s.sum(axis=-1, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=-1)
    return np.where(s.sum(axis=-1) > 0, np.exp(ent), np.nan)


@register_metric("stable_rank", "matrix", needs_sv=True)
def stable_rank(w, s):
    """||W||_F^2 / ||W||_2^2"""
    return _div((s * s).sum(axis=-1), s.max(axis=-1) ** 2)


@register_metric("approx_rank", "matrix", needs_sv=True)
def approx_rank(w, s):
    """smallest r with sum_{i<=r} s_i^2 >= 0.99 sum_i s_i^2"""
    e = np.cumsum(s * s, axis=-1)
    total = e[..., -1:]
    r = (e < 0.99 * total).sum(axis=-1) + 1
    return np.where(total[..., 0] > 0, r, 0).astype(np.float64)


@register_metric("rms", "matrix")
def rms(w, s):
    """root mean square entry sqrt(mean_ij w_ij^2)"""
    return np.sqrt(_square_sum(w) / (w.shape[-2] * w.shape[-1]))  # as np.mean: the sum, then divided


# --- over all weights / biases concatenated ------------------------------------------------------

def _median(flat: np.ndarray, convention: str) -> np.ndarray:
    """Median along the last axis in the stored dtype: the lower middle value (paper_code, as
    torch.median), or the two middle values averaged in float64 (paper_text)."""
    n = flat.shape[-1]
    if n == 0:
        return np.full(flat.shape[:-1], np.nan)
    lo, hi = (n - 1) // 2, n // 2
    if convention == "paper_code":  # one selection pass
        return np.partition(flat, lo, axis=-1)[..., lo].astype(np.float64)
    part = np.partition(flat, [lo, hi], axis=-1)
    return (part[..., lo].astype(np.float64) + part[..., hi].astype(np.float64)) / 2


def _var(flat: np.ndarray, convention: str) -> np.ndarray:
    return _variance(flat, _ddof(convention))


@register_metric("mean_w", "weights")
def mean_w(flat):
    """mean of all weight entries (matrices, heads and conv kernels)"""
    return flat.mean(axis=-1, dtype=np.float64)


@register_metric("median_w", "weights")
def median_w(flat, convention: str = "paper_code"):
    """median of all weight entries (lower middle value under paper_code, midpoint under paper_text)"""
    return _median(flat, convention)


@register_metric("var_w", "weights")
def var_w(flat, convention: str = "paper_code"):
    """variance of all weight entries (Bessel-corrected under paper_code, population under paper_text)"""
    return _var(flat, convention)


@register_metric("mean_b", "biases")
def mean_b(flat):
    """mean of all bias entries"""
    return flat.mean(axis=-1, dtype=np.float64)


@register_metric("median_b", "biases")
def median_b(flat, convention: str = "paper_code"):
    """median of all bias entries (lower middle value under paper_code, midpoint under paper_text)"""
    return _median(flat, convention)


@register_metric("var_b", "biases")
def var_b(flat, convention: str = "paper_code"):
    """variance of all bias entries (Bessel-corrected under paper_code, population under paper_text)"""
    return _var(flat, convention)


@register_metric("dist_init_l2", "init")
def dist_init_l2(flat, flat0):
    """||w_t - w_0||_2 over all weight-matrix entries"""
    d = flat.astype(np.float64) - flat0
    return np.sqrt((d * d).sum(axis=-1))


@register_metric("dist_init_l1", "init")
def dist_init_l1(flat, flat0):
    """||w_t - w_0||_1 over all weight-matrix entries"""
    return np.abs(flat.astype(np.float64) - flat0).sum(axis=-1)


for _name, _formula in SCALAR_FORMULAS.items():
    register_scalar(_name, _formula)


def matrix_stack(w: np.ndarray, role: str) -> np.ndarray:
    """A block of one parameter's rows (B, *shape) as stacks of matrices (B, layer, a, b), as
    :func:`vt_core.metrics.compute._as_matrices`."""
    if role == "matrix" and w.ndim == 3:
        return w[:, None]
    if role == "merged_heads":
        return w.reshape(w.shape[0], 1, -1, w.shape[-1])
    return w.reshape(w.shape[0], -1, *w.shape[-2:])


def torch_singular_values(stack: np.ndarray, device: str) -> np.ndarray:
    """Singular values of a stack of same-shaped matrices on ``device`` (float64, the Gram form of
    :func:`vt_core.metrics.weights.singular_values`), in one batched call."""
    import torch

    w = torch.from_numpy(np.ascontiguousarray(stack)).to(device=device, dtype=torch.float64)
    gram = w @ w.mT if w.shape[-2] <= w.shape[-1] else w.mT @ w
    s = torch.linalg.eigvalsh(gram).flip(-1).clamp(min=0).sqrt().cpu().numpy()
    return np.where(s < SV_THRESHOLD, 0.0, s)


#: same-shaped matrices sent to the device in one call, at most (their stored bytes)
DEVICE_BATCH_BYTES = 64 * 2**20


def device_singular_values(cur: dict[str, np.ndarray], layers: list, device: str) -> dict[str, np.ndarray]:
    """Every matrix parameter's singular values (B, layer, k), same-shaped matrices batched."""
    by_shape: dict[tuple, list[tuple[str, np.ndarray]]] = {}
    for p, role, _ in layers:
        if role == "kernel":
            continue
        st = matrix_stack(cur[p], role)
        finite = np.isfinite(st.sum(axis=(-2, -1), dtype=np.float64))
        by_shape.setdefault(st.shape[2:], []).append((p, np.where(finite[..., None, None], st, 0)))
    out = {}
    for group in by_shape.values():
        batch: list[tuple[str, np.ndarray]] = []
        for k, item in enumerate(group):
            batch.append(item)
            if k == len(group) - 1 or sum(st.nbytes for _, st in batch) + group[k + 1][1].nbytes > DEVICE_BATCH_BYTES:
                flat = np.concatenate([st.reshape(-1, *st.shape[2:]) for _, st in batch])
                s, i = torch_singular_values(flat, device), 0
                for p, st in batch:
                    n = st.shape[0] * st.shape[1]
                    out[p], i = s[i:i + n].reshape(*st.shape[:2], -1), i + n
                batch = []
    return out
