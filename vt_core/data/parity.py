"""Sparse parity (Barak et al. 2022): x uniform in {-1, +1}^n, label = prod of the first k bits."""

from __future__ import annotations

import torch

from vt_core.data import Task


def sparse_parity(n_bits: int, k: int, n_train: int, n_test: int, seed: int) -> Task:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (n_train + n_test, n_bits), generator=g).float() * 2 - 1
    y = (x[:, :k].prod(dim=1) > 0).long()  # 1 where the parity is +1
    return Task(x[:n_train], y[:n_train], x[n_train:], y[n_train:], n_classes=2, input_dim=n_bits)
