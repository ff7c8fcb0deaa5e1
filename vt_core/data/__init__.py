"""Generated tasks. Each returns a :class:`Task` of tensors, deterministic in its seed."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Task:
    x_train: torch.Tensor
    y_train: torch.Tensor  # class indices (long)
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    input_dim: int  # features for vectors, vocabulary size for tokens


def build_task(cfg, seed: int) -> Task:
    from vt_core.config import ModularConfig, SparseParityConfig
    from vt_core.data.modular import modular_addition
    from vt_core.data.parity import sparse_parity

    data_seed = seed if cfg.seed is None else cfg.seed
    if isinstance(cfg, SparseParityConfig):
        return sparse_parity(cfg.n_bits, cfg.k, cfg.n_train, cfg.n_test, data_seed)
    if isinstance(cfg, ModularConfig):
        return modular_addition(cfg.p, cfg.train_fraction, data_seed)
    raise TypeError(f"unknown data config {type(cfg).__name__}")
