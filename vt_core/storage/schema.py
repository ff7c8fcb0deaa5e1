"""What every stored array is called and measured in: dimension names, ``long_name`` and ``units``,
and the version of the run-store format. Pure Python (the writer process imports it, not torch).

Store formats (the root attribute ``format_version``; absent means 1):

* **1**: weight and activation dimensions ``<array>.d0``, ``<array>.d1`` ...; ``epoch`` a data
  variable; no ``long_name`` or ``units``; the training config a JSON object attribute.
* **2**: dimensions named for what they are (``layers.0.weight.out_features``, ``conv1.weight.kernel_rows``,
  ``blocks.0.attn.W_Q.heads``): the array's name, a dot, the role, so that every dimension is unique
  to its array; ``long_name`` and ``units`` on every array; ``epoch`` and a 0-d ``seed`` are
  coordinates of the scalars (CF ``coordinates`` attribute); the config a JSON string (netCDF
  attributes cannot be objects).

Both are read (:mod:`vt_core.report.datatree`); only 2 is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from vt_core.names import SCALAR_FORMULAS

FORMAT_VERSION = 2

#: a module's kind, as :func:`vt_core.models.hooks.array_kinds` records it, or a declared tuple of names
Kind = str | Sequence[str] | None

LOSS_UNITS = {"cross_entropy": "nats"}  # hinge and mse are in the units of the model's output

_SCALAR_UNITS = {"train_accuracy": "fraction", "test_accuracy": "fraction"}

#: dimension names after ``step`` of a parameter, by (module kind, parameter name, ndim)
_CONV_KERNEL = {1: ("kernel",), 2: ("kernel_rows", "kernel_cols"), 3: ("kernel_depth", "kernel_rows", "kernel_cols")}
_SPATIAL = {1: ("length",), 2: ("rows", "cols"), 3: ("depth", "rows", "cols")}


def _weight_base(kind: Kind, leaf: str, ndim: int) -> tuple[str, ...] | None:
    if kind == "linear":
        return {2: ("out_features", "in_features"), 1: ("out_features",)}.get(ndim)
    if kind == "conv":
        if leaf == "bias" and ndim == 1:
            return ("out_channels",)
        return ("out_channels", "in_channels", *_CONV_KERNEL[ndim - 2]) if ndim - 2 in _CONV_KERNEL else None
    if kind == "embedding" and ndim == 2:
        return ("tokens", "features")
    if kind == "batchnorm" and ndim == 1:
        return ("channels",)
    if kind == "norm" and ndim == 1:
        return ("features",)
    return None


def _activation_base(kind: Kind, ndim: int) -> tuple[str, ...] | None:
    if kind in ("conv", "batchnorm", "pool") and ndim - 1 in _SPATIAL:
        return ("channels", *_SPATIAL[ndim - 1])
    last = "out_features" if kind == "linear" else "features"
    # the usual shapes elsewhere: (features,), a sequence (position, features), an image (C, H, W)
    return {1: (last,), 2: ("position", last), 3: ("channels", "rows", "cols")}.get(ndim)


def dimension_names(group: str, name: str, ndim: int, kind: Kind = None) -> tuple[str, ...]:
    """The names of the ``ndim`` dimensions of ``group/name`` after ``step`` (and ``probe`` for an
    activation): declared by the module (``vt_dim_names``), else by its kind and shape, else
    ``d0, d1, ...``; each prefixed by the array's name, so that no two arrays share one."""
    if kind is not None and not isinstance(kind, str):
        base: tuple[str, ...] | None = tuple(kind) if len(kind) == ndim else None
    elif group == "weights":
        base = _weight_base(kind, name.rsplit(".", 1)[-1], ndim)
    else:
        base = _activation_base(kind, ndim)
    base = base or tuple(f"d{j}" for j in range(ndim))
    return tuple(f"{name}.{b}" for b in base)


def scalar_attrs(name: str, loss: str | None = None) -> dict:
    """``long_name`` and ``units`` of a scalar at the root of a run store (or a column of a table)."""
    if name == "step":
        return {"long_name": "optimizer steps taken", "units": "steps"}
    if name == "epoch":
        return {"long_name": "passes over the training set", "units": "epochs"}
    if name == "seed":
        return {"long_name": "training seed"}
    out = {"long_name": SCALAR_FORMULAS.get(name, name.replace("_", " "))}
    units = _SCALAR_UNITS.get(name) or (LOSS_UNITS.get(loss or "") if name.endswith("_loss") else None)
    return out | ({"units": units} if units else {})


def array_attrs(group: str, name: str, loss: str | None = None) -> dict:
    """``long_name`` (and ``units``) of any array of a run store."""
    if name == "step":
        return scalar_attrs("step")
    if group == "weights":
        return {"long_name": f"parameter {name}"}
    if group == "activations":
        return {"long_name": f"activation at hookpoint {name} on the probe batch"}
    if group == "probe":
        return {"long_name": {"x": "probe batch inputs", "y": "probe batch targets",
                              "example_index": "index of each fixed example in its split",
                              "example_split": "split of each fixed example (0 training, 1 held-out)"}.get(name, name)}
    if group == "examples":
        units = LOSS_UNITS.get(loss or "")
        return {"long_name": "loss of each fixed example" if name == "loss" else name} | ({"units": units} if units else {})
    return scalar_attrs(name, loss)


def config_of(attrs: Mapping) -> dict:
    """The training config stored in a run store's attributes (a JSON string from format 2, an
    object before)."""
    cfg = attrs.get("config")
    return json.loads(cfg) if isinstance(cfg, str) else dict(cfg or {})


def loss_of(attrs: Mapping) -> str | None:
    return (config_of(attrs).get("training") or {}).get("loss")


def netcdf_attrs(attrs: Mapping) -> dict:
    """Attributes netCDF accepts: strings and numbers as they are, booleans as 0/1, integers past
    32 bits as strings, objects and lists as JSON strings; ``None`` left out."""
    out: dict = {}
    for key, v in attrs.items():
        if getattr(v, "ndim", None) == 0:  # a numpy scalar
            v = v.item()
        if v is None:
            continue
        if isinstance(v, bool):
            out[key] = int(v)
        elif isinstance(v, int) and not -(2**31) <= v < 2**31:
            out[key] = str(v)
        elif isinstance(v, (str, int, float)):
            out[key] = v
        else:
            out[key] = json.dumps(v, default=str)
    return out
