"""Canonical metric names, what each reads, and its formula (``vt metrics`` prints this)."""

from __future__ import annotations

from vt_core.config import PAPER_METRICS, SCALARS
from vt_core.metrics.weights import MATRIX_METRICS

METRICS: dict[str, tuple[str, str]] = {
    **{name: ("each weight matrix, averaged over matrices", f) for name, f in MATRIX_METRICS.items()},
    "mean_w": ("all weight-matrix entries concatenated", "mean"),
    "median_w": ("all weight-matrix entries concatenated", "median"),
    "var_w": ("all weight-matrix entries concatenated", "population variance (no Bessel correction)"),
    "mean_b": ("all bias entries concatenated", "mean"),
    "median_b": ("all bias entries concatenated", "median"),
    "var_b": ("all bias entries concatenated", "population variance (no Bessel correction)"),
    "train_loss": ("scalars", "training-set loss, evaluated at the checkpoint"),
    "train_accuracy": ("scalars", "training-set accuracy"),
    "test_loss": ("scalars", "held-out loss"),
    "test_accuracy": ("scalars", "held-out accuracy"),
}
assert set(METRICS) == set(PAPER_METRICS) | set(SCALARS)
