"""Modular arithmetic: every pair (a, b) as tokens [a, b, p] labelled (a op b) mod p."""

from __future__ import annotations

import torch

from vt_core.data import Task, split


def modular_arithmetic(p: int, train_fraction: float, seed: int, op: str = "+") -> Task:
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.flatten(), b.flatten()
    if op == "/":  # a * b^-1 mod p, b != 0 (p prime: b^-1 = b^(p-2))
        keep = b != 0
        a, b = a[keep], b[keep]
        y = (a * torch.tensor([pow(int(v), p - 2, p) for v in b])) % p
    else:
        y = {"+": a + b, "-": a - b, "*": a * b}[op] % p
    x = torch.stack([a, b, torch.full_like(a, p)], dim=1)  # token p is "="
    x_tr, y_tr, x_te, y_te = split(x, y, train_fraction, seed)
    return Task(x_tr, y_tr, x_te, y_te, n_classes=p, input_dim=p + 1)
