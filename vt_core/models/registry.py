"""Build a model from its config and the task's shapes."""

from __future__ import annotations

from torch import nn

from vt_core.config import MLPConfig, TransformerConfig
from vt_core.data import Task
from vt_core.models.mlp import MLP
from vt_core.models.transformer import Transformer


def build_model(cfg: MLPConfig | TransformerConfig, task: Task, d_out: int) -> nn.Module:
    """Seed the global RNG *before* calling this: initialisation depends on it."""
    if isinstance(cfg, MLPConfig):
        return MLP(task.input_dim, list(cfg.hidden), d_out, cfg.activation, cfg.bias)
    if isinstance(cfg, TransformerConfig):
        return Transformer(
            d_vocab=task.input_dim, d_vocab_out=d_out, n_ctx=task.x_train.shape[1],
            n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_head,
            d_mlp=cfg.d_mlp, activation=cfg.activation, layer_norm=cfg.layer_norm,
        )
    raise TypeError(f"unknown model config {type(cfg).__name__}")
