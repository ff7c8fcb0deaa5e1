"""Activation metrics on the fixed probe batch: kernels over (steps, probe, features)."""

from __future__ import annotations

import numpy as np

from vt_core.metrics.registry import register_metric

DORMANT_THRESHOLD = 0.025  # Sokar et al. 2023: a neuron is dormant when its normalised score <= tau


def _flat(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], a.shape[1], -1)


@register_metric("act_sparsity", "activation")
def act_sparsity(a):
    """fraction of activations exactly 0 on the probe batch"""
    return (_flat(a) == 0).mean(axis=(1, 2))


@register_metric("dormant_fraction", "activation")
def dormant_fraction(a, threshold: float = DORMANT_THRESHOLD):
    """fraction of units i with E_x|h_i(x)| / mean_k E_x|h_k(x)| <= tau (Sokar et al. 2023)"""
    score = np.abs(_flat(a)).mean(axis=1)  # (steps, features)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = score / score.mean(axis=1, keepdims=True)
    return np.where(np.isfinite(norm), norm <= threshold, True).mean(axis=1)


@register_metric("act_norm", "activation")
def act_norm(a):
    """mean over probe examples of the L2 norm of the feature vector"""
    x = _flat(a)
    return np.sqrt((x * x).sum(axis=2)).mean(axis=1)


@register_metric("act_var", "activation")
def act_var(a):
    """mean over features of the population variance over the probe batch"""
    return _flat(a).var(axis=1).mean(axis=1)


def linear_cka(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Linear CKA (Kornblith et al. 2019) per leading index: x, y (steps, n, features).

    In the probe batch's Gram form: with centred X and Y, ||Y^T X||_F^2 = <X X^T, Y Y^T>_F, so only
    (n x n) Gram matrices are formed (n = probe size) and memory does not grow with the width of
    the hookpoint (the feature-space form builds features x features matrices)."""
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    k = np.einsum("snf,smf->snm", x, x)  # (steps, n, n)
    g = np.einsum("snf,smf->snm", y, y)
    num = (k * g).sum(axis=(1, 2))
    den = np.sqrt((k * k).sum(axis=(1, 2)) * (g * g).sum(axis=(1, 2)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / den


@register_metric("cka_prev", "activation_pair")
def cka_prev(a_prev, a):
    """linear CKA between the activations at this checkpoint and at the previous one"""
    return linear_cka(_flat(a_prev), _flat(a))
