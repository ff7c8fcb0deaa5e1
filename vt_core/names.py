"""Names that every layer shares, each defined once: the scalars recorded at every checkpoint and
the paper's 14 weight metrics (REFERENCE.md)."""

from __future__ import annotations

#: Recorded by the trainer at every checkpoint, stored at the root of each run store, and always
#: available as metrics and HMM features.
SCALARS: tuple[str, ...] = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "grad_norm")

#: The paper's 14 weight metrics, in the order the paper lists them.
PAPER_METRICS: tuple[str, ...] = (
    "l1",
    "l2",
    "trace",
    "spectral",
    "code_sparsity",
    "computational_sparsity",
    "mean_singular_value",
    "var_singular_value",
    "mean_w",
    "median_w",
    "var_w",
    "mean_b",
    "median_b",
    "var_b",
)
