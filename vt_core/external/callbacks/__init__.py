"""Callbacks that record a framework's training with :class:`vt_core.external.recorder.Recorder`:
:mod:`vt_core.external.callbacks.lightning` (``pip install -e ".[lightning]"``) and
:mod:`vt_core.external.callbacks.hf` (``pip install -e ".[hf]"``). Each module imports its framework."""

from __future__ import annotations

from collections.abc import Mapping

import torch

#: vt's scalar -> the name a framework usually logs it under
LIGHTNING_SCALARS = {"train_loss": "train_loss", "train_accuracy": "train_acc", "test_loss": "val_loss",
                     "test_accuracy": "val_acc"}
HF_SCALARS = {"train_loss": "loss", "test_loss": "eval_loss", "test_accuracy": "eval_accuracy",
              "grad_norm": "grad_norm"}


def pick(logged: Mapping, names: Mapping[str, str]) -> dict[str, float]:
    """vt's scalars from a framework's logged values (``names``: vt's name -> the logged name)."""
    out = {}
    for ours, theirs in names.items():
        value = logged.get(theirs)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[ours] = float(value.item())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[ours] = float(value)
    return out
