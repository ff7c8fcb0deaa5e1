"""Build a model from its config and the task's shapes: built-ins or ``"pkg.module:factory"``."""

from __future__ import annotations

import inspect

from torch import nn

from vt_core.config.usercode import ModelFactoryError, resolve_factory
from vt_core.data import Task


def _custom(cfg, task: Task, d_out: int) -> nn.Module:
    fn = resolve_factory(cfg.factory)
    kwargs = dict(cfg.kwargs)
    params = inspect.signature(fn).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key, value in (("input_shape", task.input_shape), ("n_classes", d_out)):
        if key not in kwargs and (key in params or takes_all):
            kwargs[key] = value
    try:
        model = fn(**kwargs)
    except TypeError as err:
        raise ModelFactoryError(f"model.factory {cfg.factory!r} rejected kwargs {sorted(kwargs)}: {err}") from None
    if not isinstance(model, nn.Module):
        raise ModelFactoryError(f"model.factory {cfg.factory!r} returned {type(model).__name__}, not an nn.Module")
    return model


def build_model(cfg, task: Task, d_out: int) -> nn.Module:
    """Seed the global RNG *before* calling this: initialisation depends on it."""
    from vt_core.models.lenet import LeNet5
    from vt_core.models.mlp import MLP
    from vt_core.models.resnet import ResNet
    from vt_core.models.transformer import Transformer

    shape = task.input_shape
    if cfg.name == "mlp":
        return MLP(task.input_dim, list(cfg.hidden), d_out, cfg.activation, cfg.bias, cfg.norm)
    if cfg.name == "transformer":
        return Transformer(
            d_vocab=task.input_dim, d_vocab_out=d_out, n_ctx=shape[0], n_layers=cfg.n_layers,
            d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_head, d_mlp=cfg.d_mlp,
            activation=cfg.activation, layer_norm=cfg.layer_norm,
        )
    if cfg.name == "resnet":
        return ResNet(shape[0], d_out, cfg.width, list(cfg.blocks), cfg.batch_norm, cfg.residual)
    if cfg.name == "lenet5":
        return LeNet5(shape[0], d_out, shape[-1], cfg.activation)
    if cfg.name == "custom":
        return _custom(cfg, task, d_out)
    raise TypeError(f"unknown model config {cfg.name!r}")
