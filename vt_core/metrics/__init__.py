"""Metrics: a registry of kernels (weights.py, activations.py) and their lazy computation (compute.py)."""

from vt_core.metrics.registry import REGISTRY, Metric, all_metrics, get, register_metric

__all__ = ["REGISTRY", "Metric", "all_metrics", "get", "register_metric"]
