"""vt_core.metrics.roles: a parameter's role comes from its module's type or declaration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vt_core.metrics.roles import matrix_count, parameter_roles, role_table


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 3)
        self.norm = nn.BatchNorm1d(3)
        self.emb = nn.Embedding(10, 4)
        self.conv = nn.Conv1d(2, 3, 5)
        self.raw = nn.Parameter(torch.zeros(3, 4))
        self.stack = nn.Parameter(torch.zeros(2, 3, 4))
        self.scale = nn.Parameter(torch.ones(3))


class Declared(Custom):
    vt_metric_roles = {"raw": "exclude", "stack": "merged_heads", "proj.bias": "exclude"}


def test_roles_by_module_type():
    r = parameter_roles(Custom())
    assert r == {"proj.weight": "matrix", "proj.bias": "bias", "norm.weight": "exclude", "norm.bias": "exclude",
                 "emb.weight": "exclude", "conv.weight": "kernel", "conv.bias": "bias", "raw": "matrix",
                 "stack": "heads", "scale": "bias"}


def test_declarations_override_by_dotted_name_and_are_checked():
    r = parameter_roles(nn.Sequential(Declared()))
    assert r["0.raw"] == "exclude" and r["0.stack"] == "merged_heads" and r["0.proj.bias"] == "exclude"
    assert r["0.proj.weight"] == "matrix"

    class Bad(nn.Module):
        vt_metric_roles = {"w": "diagonal"}

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(2, 2))

    with pytest.raises(ValueError, match="diagonal"):
        parameter_roles(Bad())


def test_matrix_counts():
    assert matrix_count("heads", (4, 128, 32)) == 4 and matrix_count("merged_heads", (4, 32, 128)) == 1
    assert matrix_count("kernel", (6, 1, 5, 5)) == 1 and matrix_count("bias", (3,)) == 0
    rows = {r["name"]: r for r in role_table(Custom())}
    assert rows["stack"]["matrices"] == 2 and rows["norm.weight"]["module"] == "BatchNorm1d"
