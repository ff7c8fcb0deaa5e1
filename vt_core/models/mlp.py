"""A plain MLP: ``layers`` is a Sequential of Linear and activation modules.

Hookpoints are ``layers.0`` (first Linear), ``layers.1`` (its activation), and so on.
"""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MLP(nn.Module):
    def __init__(self, d_in: int, hidden: list[int], d_out: int, activation: str = "relu", bias: bool = True):
        super().__init__()
        mods: list[nn.Module] = []
        prev = d_in
        for h in hidden:
            mods += [nn.Linear(prev, h, bias=bias), ACTIVATIONS[activation]()]
            prev = h
        mods.append(nn.Linear(prev, d_out, bias=bias))
        self.layers = nn.Sequential(*mods)

    def forward(self, x):  # (B, d_in) -> (B, d_out)
        return self.layers(x)
