"""Hookpoints: dotted ``named_modules()`` paths, glob selection, capture in a context manager.

Hooks are global state on a module, so they are only ever installed inside :func:`capture`, which
removes them on exit, including when the forward pass raises (as TransformerLens does).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from vt_core.errors import VtError


class HookPoint(nn.Identity):
    """An identity module that gives an intermediate value a name (``blocks.0.attn.hook_pattern``)."""


class HookpointError(VtError, ValueError):
    """A hookpoint or parameter selection matched nothing."""


def hookpoint_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def _select(patterns: list[str], names: list[str], what: str) -> list[str]:
    chosen: list[str] = []
    for pat in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            close = difflib.get_close_matches(pat, names, n=5, cutoff=0.3) or names[:8]
            raise HookpointError(f"{what} {pat!r} matches nothing; closest existing names: {close}")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def select_hookpoints(model: nn.Module, patterns: list[str]) -> list[str]:
    """Names of the modules matching ``patterns`` (exact names or globs), in model order."""
    names = hookpoint_names(model)
    chosen = set(_select(patterns, names, "hookpoint"))
    return [n for n in names if n in chosen]


def select_parameters(model: nn.Module, patterns: list[str]) -> list[str]:
    names = [n for n, _ in model.named_parameters()]
    chosen = set(_select(patterns, names, "parameter glob"))
    return [n for n in names if n in chosen]


INPUT_SUFFIX = ".input"


@contextmanager
def capture(model: nn.Module, names: list[str], what: str = "output") -> Iterator[dict[str, torch.Tensor]]:
    """Record the named modules' outputs (``name``), inputs (``name.input``) or both into the
    yielded dict (detached copies). The hooks are removed on exit, also when the forward raises."""
    modules = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(_mod, inputs, output):
            if what in ("output", "both"):
                if not isinstance(output, torch.Tensor):
                    raise TypeError(f"hookpoint {name!r} returns {type(output).__name__}, not a tensor; "
                                    f"capture its input, or hook a submodule")
                out[name] = output.detach().clone()
            if what in ("input", "both") and inputs and isinstance(inputs[0], torch.Tensor):
                out[name + INPUT_SUFFIX] = inputs[0].detach().clone()

        return hook

    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(make_hook(name)))
        yield out
    finally:
        for h in handles:
            h.remove()


def describe_hookpoints(model: nn.Module, probe: torch.Tensor) -> list[dict]:
    """Every hookpoint with its module type and the shapes it yields on ``probe`` (one forward)."""
    names = hookpoint_names(model)
    modules = dict(model.named_modules())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture(model, names, "both") as got:
            model(probe)
    finally:
        model.train(was_training)
    return [{"name": n, "type": type(modules[n]).__name__,
             "output": tuple(got[n].shape) if n in got else None,
             "input": tuple(got[n + INPUT_SUFFIX].shape) if n + INPUT_SUFFIX in got else None} for n in names]


def _module_kind(module: nn.Module) -> str:
    """The family a module belongs to, for naming the dimensions of what it stores (:mod:`vt_core.storage.schema`)."""
    from torch.nn.modules import batchnorm, conv, instancenorm, pooling

    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, conv._ConvNd):
        return "conv"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    if isinstance(module, (batchnorm._NormBase, instancenorm._InstanceNorm)):
        return "batchnorm"
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm, *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))):
        return "norm"
    if isinstance(module, (pooling._AvgPoolNd, pooling._MaxPoolNd, pooling._AdaptiveAvgPoolNd,
                           pooling._AdaptiveMaxPoolNd)):
        return "pool"
    return "other"


def array_kinds(model: nn.Module, weights: list[str], hooks: list[str]) -> dict[str, str | list[str]]:
    """``weights/<param>`` and ``activations/<hook>`` -> the owning module's kind, or the names a
    module declares for them in ``vt_dim_names = {"W_Q": ("heads", "d_model", "d_head")}`` (its
    parameters, or its child hookpoints' outputs, by dotted name)."""
    modules = dict(model.named_modules())
    declared: dict[str, list[str]] = {}
    for prefix, module in modules.items():
        for rel, names in (getattr(type(module), "vt_dim_names", None) or {}).items():
            declared[f"{prefix}.{rel}" if prefix else rel] = list(names)
    out: dict[str, str | list[str]] = {}
    for p in weights:
        owner = p.rpartition(".")[0]
        out[f"weights/{p}"] = declared.get(p) or _module_kind(modules[owner])
    for h in hooks:
        out[f"activations/{h}"] = declared.get(h) or _module_kind(modules[h])
    return out
