"""The metric kernels on numpy blocks of checkpoints (``(B, ...)`` stacks): the lazy path lifts
them over dask blocks (:mod:`vt_core.metrics.compute`), the stream calls them on the blocks it reads
(:mod:`vt_core.metrics.stream`)."""

from __future__ import annotations

import numpy as np

from vt_core.metrics.registry import Metric
from vt_core.metrics.weights import shared_sums, singular_values


def _matrix_kernel(metrics: list[Metric], settings: dict, sv=singular_values):
    """The matrix metrics of a stack (..., a, b); ``sv`` computes the stack's singular values (the
    stream's batched torch ones on a GPU, :mod:`vt_core.metrics.stream`)."""
    need_sv = any(m.needs_sv for m in metrics)

    def kernel(w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, dtype=np.float64)
        finite = np.isfinite(w.sum(axis=(-2, -1)))  # NaN/inf anywhere in a matrix makes its sum so
        if not finite.all():
            w = np.where(finite[..., None, None], w, 0.0)
        s = sv(w) if need_sv else None
        with np.errstate(divide="ignore", invalid="ignore"), shared_sums(w):
            out = np.stack([np.broadcast_to(m(w, s, **settings), finite.shape) for m in metrics], axis=-1)
        out = out.astype(np.float64, copy=True)
        out[~finite] = np.nan
        return out

    return kernel


def _conv_kernel(metrics: list[Metric], settings: dict, kernel_ndim: int):
    """A conv kernel (..., out, in, *k): each metric defined on kernels (``kernels=True``: l1, l2,
    code_sparsity) on every (out, in) slice as a 1 x prod(k) matrix, averaged over the slices, as
    the paper's ``get_tensor_metrics``; NaN for the others (no trace or singular values)."""

    def kernel(w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, dtype=np.float64)
        lead = w.shape[:-kernel_ndim]
        slices = w.reshape(*lead, -1, 1, int(np.prod(w.shape[-kernel_ndim + 2:])))
        finite = np.isfinite(w.reshape(*lead, -1).sum(axis=-1))
        out = np.full((*lead, len(metrics)), np.nan)
        with np.errstate(divide="ignore", invalid="ignore"), shared_sums(slices):
            for i, m in enumerate(metrics):
                if m.kernels:
                    out[..., i] = np.mean(m(slices, None, **settings), axis=-1)
        out[~finite] = np.nan
        return out

    return kernel


def _flat_kernel(metrics: list[Metric], settings: dict, n_current: int, with_init: bool):
    def kernel(*arrays):
        # in the stored dtype (float32): the kernels accumulate in float64 themselves
        cur = np.concatenate([np.asarray(a).reshape(a.shape[0], -1) for a in arrays[:n_current]], axis=1)
        bad = ~np.isfinite(cur).all(axis=1)
        if bad.any():
            cur = np.where(bad[:, None], 0, cur)
        with np.errstate(divide="ignore", invalid="ignore"):
            if with_init:
                init = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays[n_current:]])
                out = np.stack([m(cur, init[None, :], **settings) for m in metrics], axis=-1)
            else:
                out = np.stack([m(cur, **settings) for m in metrics], axis=-1)
        out[bad] = np.nan  # NaN/inf weights give NaN (and the nonfinite flag), never a crash
        return out

    return kernel


def _activation_kernel(metrics: list[Metric], settings: dict):
    def kernel(*arrays):
        return np.stack([m(*arrays, **settings) for m in metrics], axis=-1)

    return kernel


def _nonfinite(*arrays) -> np.ndarray:
    bad = np.zeros(arrays[0].shape[0], dtype=bool)
    for a in arrays:
        bad |= ~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1)
    return bad
