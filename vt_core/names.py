"""Names that every layer shares, each defined once: the scalars recorded at every checkpoint and
the paper's 14 weight metrics (REFERENCE.md)."""

from __future__ import annotations

import re

#: vt's version (``vt_core.__version__``): part of every cache key of derived data, so a new
#: version recomputes what it may compute differently.
VERSION = "0.1.0"

#: Recorded by the trainer at every checkpoint, stored at the root of each run store, and always
#: available as metrics and HMM features.
SCALAR_FORMULAS: dict[str, str] = {
    "train_loss": "training-set loss at the checkpoint",
    "train_accuracy": "training-set accuracy at the checkpoint",
    "test_loss": "held-out loss at the checkpoint",
    "test_accuracy": "held-out accuracy at the checkpoint",
    "grad_norm": "mean L2 norm of the full gradient over the steps since the previous checkpoint",
}
SCALARS: tuple[str, ...] = tuple(SCALAR_FORMULAS)

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


def is_function_feature(name: str) -> bool:
    """``function_pc1``, ``function_pc2``, ...: the principal components of the per-example losses."""
    return re.fullmatch(r"function_pc[1-9][0-9]*", name) is not None
