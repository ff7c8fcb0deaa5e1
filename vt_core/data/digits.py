"""scikit-learn's handwritten digits: 1,797 real 8x8 images shipped inside the package."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from vt_core.data import Task, split


def digits(train_fraction: float, seed: int) -> Task:
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    y = torch.tensor(d.target, dtype=torch.long)
    x_tr, y_tr, x_te, y_te = split(x, y, train_fraction, seed)
    return Task(x_tr, y_tr, x_te, y_te, n_classes=10, input_dim=64)
