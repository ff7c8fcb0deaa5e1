"""Which parameters the weight metrics read, and as what: decided by the module that owns them.

One rule per family of module, chosen so that the paper's code (michahu/modeling-training,
``src/metrics.py``: ``get_metrics_transformer``, ``get_metrics_mlp``, ``get_metrics_lenet5``,
``get_metrics_resnet18``) is reproduced on the paper's architectures
(``tests/reference/PAPER_RULES.md`` quotes it):

=====================  =========================================================================
role                   what the metrics do with the parameter
=====================  =========================================================================
``matrix``             one matrix (the per-matrix metrics); its entries are weights
``heads``              (heads, a, b): one matrix per head (attention W_Q, W_K, W_V); weights
``merged_heads``       (heads, d_head, d_model) read as ONE (heads * d_head, d_model) matrix
                       (attention W_O, as the paper's code keeps it); weights
``kernel``             a conv kernel (out, in, *k): never a matrix; l1, l2 and code_sparsity of
                       each (out, in) slice, averaged (``get_tensor_metrics``); no trace,
                       spectral norm or singular values; weights
``bias``               a bias: mean_b, median_b, var_b
``exclude``            read by no weight metric (embeddings, normalisation layers)
=====================  =========================================================================

By module type: ``nn.Linear`` weight ``matrix``, bias ``bias``; ``nn.Conv1d/2d/3d`` weight
``kernel``, bias ``bias``; embeddings and normalisation layers (``nn.Embedding``, ``nn.LayerNorm``,
batch / group / instance / RMS norms) ``exclude``. A module may declare its own parameters' roles
(or its children's, by dotted name) in a class attribute ``vt_metric_roles = {"W_O": "merged_heads"}``:
vt's transformer does so for its attention, embeddings and LayerNorm, and its ResNet leaves out the
shortcut projection and the conv biases as the paper's ResNet-18 code does. Any other parameter
is a ``matrix`` when 2-D, a ``bias`` when 1-D, and ``heads`` (a stack along its first axis) when
it has more dimensions: declare ``vt_metric_roles`` on your own modules to say otherwise.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a model is looked at, not by what only reads a study
    from torch import nn

ROLES = ("matrix", "heads", "merged_heads", "kernel", "bias", "exclude")
WEIGHT_ROLES = ("matrix", "heads", "merged_heads", "kernel")
#: bump when a rule changes: stored metrics computed under other rules are recomputed
RULES_VERSION = 2

@functools.cache
def _types() -> tuple[tuple[type, ...], tuple[type, ...], type]:
    """(excluded module types, convolution types, Linear)."""
    from torch import nn

    excluded = (nn.Embedding, nn.EmbeddingBag, nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase,
                nn.modules.instancenorm._InstanceNorm, *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))
    return excluded, (nn.modules.conv._ConvNd,), nn.Linear


def _by_type(module: nn.Module, name: str, ndim: int) -> str:
    excluded, conv, linear = _types()
    if isinstance(module, excluded):
        return "exclude"
    if isinstance(module, conv):
        return "kernel" if name == "weight" else "bias"
    if isinstance(module, linear):
        return "matrix" if name == "weight" else "bias"
    return "matrix" if ndim == 2 else "bias" if ndim <= 1 else "heads"


def parameter_roles(model: nn.Module) -> dict[str, str]:
    """Every parameter of ``model`` (its ``named_parameters`` name) and its role."""
    roles: dict[str, str] = {}
    for prefix, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            roles[f"{prefix}.{name}" if prefix else name] = _by_type(module, name, p.ndim)
    for prefix, module in model.named_modules():  # declarations override the type rules
        for rel, role in (getattr(type(module), "vt_metric_roles", None) or {}).items():
            if role not in ROLES:
                raise ValueError(f"{type(module).__name__}.vt_metric_roles[{rel!r}] = {role!r}: use one of {ROLES}")
            full = f"{prefix}.{rel}" if prefix else rel
            if full in roles:
                roles[full] = role
    return roles


def matrix_count(role: str, shape: tuple[int, ...]) -> int:
    """How many matrices a parameter of this role and (unstacked) shape contributes."""
    if role == "heads":
        return int(shape[0]) if len(shape) >= 3 else 1
    return 1 if role in ("matrix", "merged_heads", "kernel") else 0


def role_table(model: nn.Module) -> list[dict]:
    """One row per parameter: name, owning module type, shape, role, and how many matrices (or
    conv kernels) the per-matrix metrics read from it. For `vt hooks`."""
    roles = parameter_roles(model)
    owners = {f"{prefix}.{n}" if prefix else n: type(m).__name__
              for prefix, m in model.named_modules() for n, _ in m.named_parameters(recurse=False)}
    return [{"name": name, "module": owners[name], "shape": tuple(p.shape), "role": roles[name],
             "matrices": matrix_count(roles[name], tuple(p.shape))}
            for name, p in model.named_parameters()]
