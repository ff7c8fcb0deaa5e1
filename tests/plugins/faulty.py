"""A model factory for fault-injection tests: an MLP that raises mid-training for one seed.

The seed is read at build time (vt seeds torch's RNG with the run's seed just before it builds the
model); the failing seed and step come from the environment, so the same config trains cleanly
once the variable is unset (as a user's fix would make it). ``VT_TEST_STEP_SLEEP_S`` slows each
training forward pass down by that many seconds (a run long enough to be watched, or killed, while
it trains)."""

from __future__ import annotations

import os
import time

import torch
from torch import nn


class FaultyMLP(nn.Module):
    def __init__(self, d_in: int, width: int, n_classes: int, seed: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, n_classes))
        self.seed, self.calls = seed, 0

    def forward(self, x):
        self.calls += 1
        fail = os.environ.get("VT_TEST_FAIL_SEED")
        if self.training and fail is not None and int(fail) == self.seed \
                and self.calls > int(os.environ.get("VT_TEST_FAIL_AFTER", "20")):
            raise RuntimeError(f"injected failure in seed {self.seed} at forward call {self.calls}")
        if self.training and os.environ.get("VT_TEST_STEP_SLEEP_S"):
            time.sleep(float(os.environ["VT_TEST_STEP_SLEEP_S"]))
        return self.layers(x)


def make_net(input_shape, n_classes: int, width: int = 32) -> nn.Module:
    d_in = 1
    for s in input_shape:
        d_in *= s
    return FaultyMLP(d_in, width, n_classes, seed=torch.initial_seed())
