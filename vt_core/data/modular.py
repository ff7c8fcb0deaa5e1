"""Modular addition: every pair (a, b) as tokens [a, b, p] labelled (a + b) mod p."""

from __future__ import annotations

import torch

from vt_core.data import Task


def modular_addition(p: int, train_fraction: float, seed: int) -> Task:
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.flatten(), b.flatten()
    x = torch.stack([a, b, torch.full_like(a, p)], dim=1)  # (p*p, 3); token p is "="
    y = (a + b) % p
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    n_train = int(round(train_fraction * p * p))
    if not 0 < n_train < p * p:
        raise ValueError(f"train_fraction={train_fraction} leaves an empty split for p={p}")
    tr, te = perm[:n_train], perm[n_train:]
    return Task(x[tr], y[tr], x[te], y[te], n_classes=p, input_dim=p + 1)
