"""A model factory whose output gain is huge for one seed, so that seed alone diverges (its
parameters, not its code, differ: the same under vmap as alone)."""

from __future__ import annotations

import torch
from torch import nn


class GainMLP(nn.Module):
    def __init__(self, d_in: int, width: int, n_out: int, gain: float):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, n_out))
        self.gain = nn.Parameter(torch.tensor(gain))

    def forward(self, x):
        return self.layers(x) * self.gain


def make_net(input_shape, n_classes: int, width: int = 16, blowup_seed: int = 1) -> nn.Module:
    d_in = 1
    for s in input_shape:
        d_in *= s
    gain = 1e18 if torch.initial_seed() == blowup_seed else 1.0
    return GainMLP(d_in, width, n_classes, gain)
