"""Metrics: a registry of kernels (weights.py, activations.py) and their lazy computation (compute.py).

Importing this package registers the built-in metrics (``weights`` and ``activations`` register
their kernels with :mod:`registry` as they are imported).
"""

from vt_core.metrics import activations, weights  # noqa: F401  (register the built-in metrics)
from vt_core.metrics.registry import REGISTRY, Metric, all_metrics, get, register_metric

__all__ = ["REGISTRY", "Metric", "all_metrics", "get", "register_metric"]
