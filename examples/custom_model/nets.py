"""A user-defined network for vt: any function returning an nn.Module works as a factory.

Referenced from examples/custom_model.toml as ``factory = "examples.custom_model.nets:make_net"``
(vt imports this module: a factory is code that runs, like any import). vt passes ``input_shape``
and ``n_classes`` when the function accepts them; everything else comes from ``kwargs``.
"""

from __future__ import annotations

import torch
from torch import nn

from vt_core.hooks import HookPoint


class GatedMLP(nn.Module):
    """x -> (W_a x) * sigmoid(W_g x) -> W_out: a gated unit, with named intermediate values."""

    def __init__(self, d_in: int, width: int, n_classes: int):
        super().__init__()
        self.flatten = nn.Flatten()
        self.value = nn.Linear(d_in, width)
        self.gate = nn.Linear(d_in, width)
        self.hook_gate = HookPoint()  # sigmoid(W_g x): how open each unit's gate is
        self.hook_hidden = HookPoint()  # the gated hidden layer
        self.out = nn.Linear(width, n_classes)

    def forward(self, x):
        x = self.flatten(x)
        g = self.hook_gate(torch.sigmoid(self.gate(x)))
        return self.out(self.hook_hidden(self.value(x) * g))


def make_net(input_shape: tuple[int, ...], n_classes: int, width: int = 64) -> nn.Module:
    d_in = 1
    for n in input_shape:
        d_in *= n
    return GatedMLP(d_in, width, n_classes)
