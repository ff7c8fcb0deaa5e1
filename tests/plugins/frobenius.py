"""A user metric, registered the documented way (used by tests/metrics/test_registry.py)."""

from vt_core.metrics.registry import register_metric


@register_metric("frobenius_squared", reads="matrix")
def frobenius_squared(w, s):
    """sum_ij w_ij^2"""
    return (w * w).sum(axis=(-2, -1))
