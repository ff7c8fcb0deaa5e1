"""A plain MLP: ``layers`` is a Sequential of Linear, optional norm, and activation modules.

Hookpoints are ``layers.0`` (first Linear), ``layers.1`` (its activation), and so on (with a norm,
``layers.1`` is the norm and ``layers.2`` the activation). Image inputs are flattened first.
"""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
NORMS = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}


class MLP(nn.Module):
    def __init__(self, d_in: int, hidden: list[int], d_out: int, activation: str = "relu", bias: bool = True,
                 norm: str = "none"):
        super().__init__()
        self.flatten = nn.Flatten()
        mods: list[nn.Module] = []
        prev = d_in
        for h in hidden:
            mods.append(nn.Linear(prev, h, bias=bias))
            if norm != "none":
                mods.append(NORMS[norm](h))
            mods.append(ACTIVATIONS[activation]())
            prev = h
        mods.append(nn.Linear(prev, d_out, bias=bias))
        self.layers = nn.Sequential(*mods)

    def forward(self, x):  # (B, *input_shape) -> (B, d_out)
        return self.layers(self.flatten(x))
