"""Long names and units of metrics and features, for axis labels, legends and explanations: the
same words in the dashboard and the paper figures. Metrics from plugins, and aggregations that are
not listed, keep their own name and no unit."""

from __future__ import annotations

from typing import NamedTuple


class MetricLabel(NamedTuple):
    long_name: str
    units: str


_W = "weight units"
LABELS: dict[str, MetricLabel] = {
    "l1": MetricLabel("L1 norm, mean over matrices", _W),
    "l2": MetricLabel("L2 (Frobenius) norm, mean over matrices", _W),
    "trace": MetricLabel("trace, mean over matrices", _W),
    "spectral": MetricLabel("spectral norm, mean over matrices", _W),
    "code_sparsity": MetricLabel("code sparsity L1/L2, mean over matrices", "ratio"),
    "computational_sparsity": MetricLabel("trace / spectral norm, mean over matrices", "ratio"),
    "mean_singular_value": MetricLabel("mean singular value, mean over matrices", _W),
    "var_singular_value": MetricLabel("singular-value variance, mean over matrices", f"{_W}²"),
    "mean_w": MetricLabel("mean of all weights", _W),
    "median_w": MetricLabel("median of all weights", _W),
    "var_w": MetricLabel("variance of all weights", f"{_W}²"),
    "mean_b": MetricLabel("mean of all biases", "bias units"),
    "median_b": MetricLabel("median of all biases", "bias units"),
    "var_b": MetricLabel("variance of all biases", "bias units²"),
    "effective_rank": MetricLabel("effective rank, mean over matrices", "dimensions"),
    "stable_rank": MetricLabel("stable rank, mean over matrices", "dimensions"),
    "approx_rank": MetricLabel("approximate rank, mean over matrices", "dimensions"),
    "rms": MetricLabel("RMS weight, mean over matrices", _W),
    "dist_init_l1": MetricLabel("L1 distance from initialisation", _W),
    "dist_init_l2": MetricLabel("L2 distance from initialisation", _W),
    "act_sparsity": MetricLabel("zero activations, mean over hookpoints", "fraction"),
    "dormant_fraction": MetricLabel("dormant units, mean over hookpoints", "fraction"),
    "act_norm": MetricLabel("activation norm, mean over hookpoints", "activation units"),
    "act_var": MetricLabel("activation variance, mean over hookpoints", "activation units²"),
    "cka_prev": MetricLabel("CKA with previous checkpoint, mean over hookpoints", "similarity 0–1"),
    "train_loss": MetricLabel("training loss", "loss"),
    "test_loss": MetricLabel("held-out loss", "loss"),
    "train_accuracy": MetricLabel("training accuracy", "fraction correct"),
    "test_accuracy": MetricLabel("held-out accuracy", "fraction correct"),
    "grad_norm": MetricLabel("gradient norm", "gradient units"),
}

#: the metric a convergence threshold applies to (held-out accuracy; hmm.convergence_threshold)
THRESHOLD_METRIC = "test_accuracy"


def metric_label(name: str) -> MetricLabel:
    """``l2`` -> its long name and units; ``l2@blocks.0.mlp.W_in`` -> the same, of that layer."""
    base, _, where = name.partition("@")
    label = LABELS.get(base)
    if label is None:
        return MetricLabel(name, "")
    if where:
        return MetricLabel(f"{label.long_name.split(', mean over')[0]}, {where}", label.units)
    return label


def axis_label(name: str) -> str:
    """``L2 (Frobenius) norm ... [weight units]``: what a plot's axis says."""
    label = metric_label(name)
    return f"{label.long_name} [{label.units}]" if label.units else label.long_name


def short_label(name: str) -> str:
    """``l2 [weight units]``: the name a table or a legend shows."""
    units = metric_label(name).units
    return f"{name} [{units}]" if units else name
