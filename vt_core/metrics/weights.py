"""NumPy kernels for the paper's weight metrics over stacked matrices.

Every kernel takes a stack ``(..., m, n)`` (leading axes: steps, heads) and returns one row of
values per matrix, so it can be lifted over a lazy (step, ...) array with ``xr.apply_ufunc``.
A matrix holding NaN or inf yields a row of NaN instead of raising (SVD would).
"""

from __future__ import annotations

import numpy as np

SV_THRESHOLD = 1e-5  # singular values below this count as 0 (REFERENCE.md)

MATRIX_METRICS: dict[str, str] = {
    "l1": "sum |w| over all entries",
    "l2": "Frobenius norm sqrt(sum w^2)",
    "trace": "sum of the diagonal (rectangular: first min(m, n) entries, as torch.trace)",
    "spectral": "largest singular value",
    "code_sparsity": "l1 / l2",
    "computational_sparsity": "trace / spectral",
    "mean_singular_value": "mean of the singular values s_i (s_i < 1e-5 set to 0)",
    "var_singular_value": "population variance of the s_i (no Bessel correction)",
}
GLOBAL_STATS = ("mean", "median", "var")


def singular_values(stack: np.ndarray) -> np.ndarray:
    s = np.linalg.svd(stack, compute_uv=False)
    return np.where(s < SV_THRESHOLD, 0.0, s)


def matrix_metrics(stack: np.ndarray) -> np.ndarray:
    """(..., m, n) -> (..., 8): the metrics of MATRIX_METRICS, in that order, in float64."""
    w = np.asarray(stack, dtype=np.float64)
    finite = np.isfinite(w).all(axis=(-2, -1))
    w = np.where(finite[..., None, None], w, 0.0)
    s = singular_values(w)
    l1 = np.abs(w).sum(axis=(-2, -1))
    l2 = np.sqrt((w * w).sum(axis=(-2, -1)))
    trace = np.trace(w, axis1=-2, axis2=-1)
    spectral = s.max(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.stack(
            [l1, l2, trace, spectral, l1 / l2, trace / spectral, s.mean(axis=-1), s.var(axis=-1)],
            axis=-1,
        )
    out[~finite] = np.nan
    return out


def global_stats(*arrays: np.ndarray) -> np.ndarray:
    """Each array (step, ...) -> (step, 3): mean, median and population variance of all entries
    of all arrays concatenated per step."""
    if not arrays:
        raise ValueError("global_stats needs at least one array")
    flat = np.concatenate([np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1) for a in arrays], axis=1)
    return np.stack([flat.mean(axis=1), np.median(flat, axis=1), flat.var(axis=1)], axis=-1)
