"""Metrics of one seed, computed lazily from its Zarr store with xarray + dask.

:func:`seed_metrics` builds a dask-backed Dataset for any subset of metrics and checkpoints;
nothing is computed until it is written or ``.compute()``-d. Each metric's kernel (registry.py) is
lifted over the ``step`` axis with ``xr.apply_ufunc(dask="parallelized")``, on blocks of several
checkpoints at a time. The result has

    value      (step, metric)               one number per checkpoint: layer kinds averaged
    per_layer  (step, layer_metric, layer)  each weight matrix's / hookpoint's own value
    nonfinite  (step,)                      True where a weight held NaN/inf (its metrics are NaN)
    epoch      (step,)
"""

from __future__ import annotations

import fnmatch
import functools
import json

import numpy as np
import xarray as xr

from vt_core.config.study_config import StudyConfig
from vt_core.errors import VtError
from vt_core.metrics.registry import LAYER_KINDS, Metric, get
from vt_core.metrics.roles import WEIGHT_ROLES, parameter_roles
from vt_core.metrics.weights import singular_values
from vt_core.names import SCALARS
from vt_core.storage.run_store import RunStore


class MetricsComputeError(VtError, RuntimeError):
    """Metrics cannot be computed or read as asked."""


def metric_names(config: StudyConfig) -> list[str]:
    """Every column of ``value``: the configured metrics, then the recorded scalars."""
    return list(config.metrics.names) + [s for s in SCALARS if s not in config.metrics.names]


def layer_metric_names(config: StudyConfig) -> list[str]:
    return [n for n in config.metrics.names if get(n).reads in LAYER_KINDS]


def _excluded(name: str, exclude: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in exclude)


def _fallback_role(ndim_stored: int) -> str:
    """A stored parameter that no rule names (``ndim_stored`` counts the step axis)."""
    return "matrix" if ndim_stored == 3 else "bias" if ndim_stored <= 2 else "heads"


@functools.lru_cache(maxsize=8)
def _roles_of_config(training_json: str) -> dict[str, str]:
    from vt_core.config.study_config import parse_config
    from vt_core.data import build_task
    from vt_core.models import build_model

    config = parse_config(json.loads(training_json))
    task = build_task(config.data, config.seeds[0])
    model = build_model(config.model, task, config.output_size(task.n_classes))
    return parameter_roles(model)


def store_roles(store: RunStore, config: StudyConfig) -> dict[str, str]:
    """Each stored parameter's role (:mod:`vt_core.metrics.roles`): from study.json for a study vt
    did not train (where ``--roles`` may have changed them), recorded in the store when
    training started, or (stores written before roles were recorded) from the config's model."""
    declared = getattr(config.model, "roles", None)
    if declared:  # a study vt did not train: the roles in study.json (known, guessed or given)
        return {name: entry.role for name, entry in declared.items()}
    roles = store.attrs.get("parameter_roles")
    if roles:
        return dict(roles)
    return _roles_of_config(json.dumps(config.model_dump(mode="json"), sort_keys=True))


def weight_arrays(weights: xr.Dataset, config: StudyConfig, roles: dict[str, str]) -> tuple[list[str], list[str]]:
    """(weight parameters, bias parameters) that the weight metrics read, sorted by name: by their
    roles, less any ``metrics.exclude`` glob."""
    # sorted: zarr lists members in no fixed order, and layer labels must not depend on it
    params = sorted(str(v) for v in weights.data_vars if not _excluded(str(v), list(config.metrics.exclude)))
    role = {p: roles.get(p, _fallback_role(weights[p].ndim)) for p in params}
    return [p for p in params if role[p] in WEIGHT_ROLES], [p for p in params if role[p] == "bias"]


def matrix_layers(weights: xr.Dataset, params: list[str], roles: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    """(parameter, role, layer labels) for each weight parameter: a head-split parameter gives
    one layer per head (``blocks.0.attn.W_Q.2``), any other parameter one layer."""
    out = []
    for p in params:
        role = roles.get(p, _fallback_role(weights[p].ndim))
        n = int(np.prod(weights[p].shape[1:-2])) if role == "heads" else 1
        out.append((p, role, [f"{p}.{h}" for h in range(n)] if role == "heads" else [p]))
    return out


def _as_matrices(var: xr.DataArray, role: str, labels: list[str]) -> xr.DataArray:
    """(step, *shape) -> (step, layer, a, b): a matrix as it is, heads one matrix each (leading
    axes stacked), merged heads as one (heads * d_head, d_model) matrix (head-major rows)."""
    dims = var.dims[1:]
    if role == "matrix" and len(dims) == 2:
        return var.rename({dims[0]: "a", dims[1]: "b"}).expand_dims(layer=labels, axis=1)
    if role == "merged_heads":
        return var.stack(a=list(dims[:-1]), create_index=False).rename({dims[-1]: "b"}).expand_dims(
            layer=labels, axis=1).transpose("step", "layer", "a", "b")
    lead = list(dims[:-2])
    stacked = var.stack(layer=lead, create_index=False) if len(lead) > 1 else var.rename({lead[0]: "layer"})
    return stacked.rename({dims[-2]: "a", dims[-1]: "b"}).assign_coords(layer=labels).transpose(
        "step", "layer", "a", "b")


def layer_names(store: RunStore, config: StudyConfig) -> list[str]:
    """The ``layer`` coordinate of this seed: weight matrices and kernels (heads split), then hookpoints."""
    weights = store.dataset("weights")
    roles = store_roles(store, config)
    mats, _ = weight_arrays(weights, config, roles)
    out = [label for _, _, labels in matrix_layers(weights, mats, roles) for label in labels]
    if "activations" in store.root:
        out += sorted(str(v) for v in store.dataset("activations").data_vars)
    return out


def _ufunc(kernel, arrays: list[xr.DataArray], core: list[list[str]], out_dim: str, n_out: int) -> xr.DataArray:
    return xr.apply_ufunc(
        kernel, *arrays, input_core_dims=core, output_core_dims=[[out_dim]], dask="parallelized",
        output_dtypes=[np.float64], dask_gufunc_kwargs={"output_sizes": {out_dim: n_out}},
    )


def _matrix_kernel(metrics: list[Metric], settings: dict, sv=singular_values):
    """The matrix metrics of a stack (..., a, b); ``sv`` computes the stack's singular values (the
    stream's batched torch ones on a GPU, :mod:`vt_core.metrics.stream`)."""
    need_sv = any(m.needs_sv for m in metrics)

    def kernel(w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, dtype=np.float64)
        finite = np.isfinite(w.sum(axis=(-2, -1)))  # NaN/inf anywhere in a matrix makes its sum so
        if not finite.all():
            w = np.where(finite[..., None, None], w, 0.0)
        s = sv(w) if need_sv else None
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.stack([np.broadcast_to(m(w, s, **settings), finite.shape) for m in metrics], axis=-1)
        out = out.astype(np.float64, copy=True)
        out[~finite] = np.nan
        return out

    return kernel


def _conv_kernel(metrics: list[Metric], settings: dict, kernel_ndim: int):
    """A conv kernel (..., out, in, *k): each metric defined on kernels (``kernels=True``: l1, l2,
    code_sparsity) on every (out, in) slice as a 1 x prod(k) matrix, averaged over the slices, as
    the paper's ``get_tensor_metrics``; NaN for the others (no trace or singular values)."""

    def kernel(w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, dtype=np.float64)
        lead = w.shape[:-kernel_ndim]
        slices = w.reshape(*lead, -1, 1, int(np.prod(w.shape[-kernel_ndim + 2:])))
        finite = np.isfinite(w.reshape(*lead, -1).sum(axis=-1))
        out = np.full((*lead, len(metrics)), np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            for i, m in enumerate(metrics):
                if m.kernels:
                    out[..., i] = np.mean(m(slices, None, **settings), axis=-1)
        out[~finite] = np.nan
        return out

    return kernel


def _flat_kernel(metrics: list[Metric], settings: dict, n_current: int, with_init: bool):
    def kernel(*arrays):
        # in the stored dtype (float32): the kernels accumulate in float64 themselves
        cur = np.concatenate([np.asarray(a).reshape(a.shape[0], -1) for a in arrays[:n_current]], axis=1)
        bad = ~np.isfinite(cur).all(axis=1)
        if bad.any():
            cur = np.where(bad[:, None], 0, cur)
        with np.errstate(divide="ignore", invalid="ignore"):
            if with_init:
                init = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays[n_current:]])
                out = np.stack([m(cur, init[None, :], **settings) for m in metrics], axis=-1)
            else:
                out = np.stack([m(cur, **settings) for m in metrics], axis=-1)
        out[bad] = np.nan  # NaN/inf weights give NaN (and the nonfinite flag), never a crash
        return out

    return kernel


def _activation_kernel(metrics: list[Metric], settings: dict):
    def kernel(*arrays):
        return np.stack([m(*arrays, **settings) for m in metrics], axis=-1)

    return kernel


def _nonfinite(*arrays) -> np.ndarray:
    bad = np.zeros(arrays[0].shape[0], dtype=bool)
    for a in arrays:
        bad |= ~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1)
    return bad


class _Columns:
    """The lazy pieces of one seed's metrics as they are built: one column of ``value`` per
    metric, and the per-layer blocks."""

    def __init__(self, store: RunStore, config: StudyConfig, metrics: list[Metric], index):
        self.store, self.config, self.metrics = store, config, metrics
        self.index = None if index is None else np.asarray(index, dtype=int)
        self.full_w = store.dataset("weights")
        self.weights, self.scalars = self.sel(self.full_w), self.sel(store.dataset())
        self.roles = store_roles(store, config)
        self.mat_names, self.bias_names = weight_arrays(self.weights, config, self.roles)
        if not self.mat_names:
            raise MetricsComputeError(f"{store.path}: no weight matrices left after the module rules and "
                                      f"metrics.exclude={config.metrics.exclude} (`vt hooks CONFIG` shows the roles)")
        self.settings = {"convention": config.metrics.convention, "threshold": config.metrics.dormant_threshold}
        self.nan = xr.full_like(self.scalars["epoch"], np.nan, dtype=np.float64)
        self.columns: dict[str, xr.DataArray] = {}
        self.per_layer: list[xr.DataArray] = []

    def sel(self, ds):
        return ds if self.index is None else ds.isel(step=self.index)

    def kind(self, k: str) -> list[Metric]:
        return [m for m in self.metrics if m.reads == k]

    def add_per_layer(self, pl: xr.DataArray, ms: list[Metric]) -> None:
        self.per_layer.append(pl)
        for m in ms:  # layers where a metric does not apply (a conv's trace) are NaN and left out
            self.columns[m.name] = pl.sel(layer_metric=m.name, drop=True).mean("layer", skipna=True)

    def matrices(self) -> None:
        if not (mm := self.kind("matrix")):
            return
        parts = []
        for p, role, labels in matrix_layers(self.weights, self.mat_names, self.roles):
            w = self.weights[p]
            if role == "kernel":
                out = _ufunc(_conv_kernel(mm, self.settings, w.ndim - 1), [w], [list(w.dims[1:])],
                             "layer_metric", len(mm)).expand_dims(layer=labels, axis=1)
            else:
                out = _ufunc(_matrix_kernel(mm, self.settings), [_as_matrices(w, role, labels)], [["a", "b"]],
                             "layer_metric", len(mm))
            parts.append(out)
        pl = xr.concat(parts, dim="layer")
        self.add_per_layer(pl.assign_coords(layer_metric=[m.name for m in mm]), mm)

    def flat(self) -> None:
        for k, pnames in (("weights", self.mat_names), ("biases", self.bias_names)):
            if not (km := self.kind(k)):
                continue
            if not pnames:
                self.columns |= {m.name: self.nan for m in km}
                continue
            arrs = [self.weights[p] for p in pnames]
            out = _ufunc(_flat_kernel(km, self.settings, len(arrs), False), arrs, [list(a.dims[1:]) for a in arrs],
                         "m", len(km))
            self.columns |= {m.name: out.isel(m=i, drop=True) for i, m in enumerate(km)}
        if km := self.kind("init"):
            cur = [self.weights[p] for p in self.mat_names]
            init = [self.full_w[p].isel(step=0, drop=True) for p in self.mat_names]
            out = _ufunc(_flat_kernel(km, self.settings, len(cur), True), cur + init,
                         [list(a.dims[1:]) for a in cur] + [list(a.dims) for a in init], "m", len(km))
            self.columns |= {m.name: out.isel(m=i, drop=True) for i, m in enumerate(km)}

    def activations(self) -> None:
        am, pm = self.kind("activation"), self.kind("activation_pair")
        if not (am or pm):
            return
        if "activations" not in self.store.root:
            raise MetricsComputeError(f"metrics {[m.name for m in am + pm]} read activations, but {self.store.path} "
                                      f"has none; add hookpoints to hooks.activations")
        full_a = self.store.dataset("activations")
        acts = self.sel(full_a)
        hook_rows = []
        for h in sorted(str(v) for v in full_a.data_vars):
            a = acts[h]
            core = [list(a.dims[1:])]
            parts = []
            if am:
                parts.append(_ufunc(_activation_kernel(am, self.settings), [a], core, "layer_metric", len(am)))
            if pm:
                pos = np.arange(full_a.sizes["step"]) if self.index is None else self.index
                prev = full_a[h].isel(step=np.maximum(pos - 1, 0)).assign_coords(step=a["step"])
                pair = _ufunc(_activation_kernel(pm, self.settings), [prev, a], core * 2, "layer_metric", len(pm))
                parts.append(pair.where(xr.DataArray(pos > 0, dims="step", coords={"step": a["step"]})))
            hook_rows.append(xr.concat(parts, dim="layer_metric").expand_dims(layer=[h]))
        pl = xr.concat(hook_rows, dim="layer").assign_coords(layer_metric=[m.name for m in am + pm])
        self.add_per_layer(pl, am + pm)

    def recorded(self) -> None:
        for m in self.kind("scalar"):
            self.columns[m.name] = self.scalars[m.name].astype(np.float64) if m.name in self.scalars else self.nan

    def dataset(self, names: list[str], flags: bool = True) -> xr.Dataset:
        params = self.mat_names + self.bias_names
        if flags:
            nonfinite = xr.apply_ufunc(
                _nonfinite, *[self.weights[p] for p in params],
                input_core_dims=[list(self.weights[p].dims[1:]) for p in params],
                dask="parallelized", output_dtypes=[bool])
        else:  # the caller has the flags (the weights are not read for them here)
            nonfinite = xr.zeros_like(self.scalars["epoch"], dtype=bool).reset_coords(drop=True)
        weight_kinds = ("matrix", "weights", "biases", "init")
        # a checkpoint whose weights hold NaN/inf has no weight metrics (NaN and the flag)
        cols = [self.columns[n].astype(np.float64).reset_coords(drop=True) for n in names]
        cols = [c.where(~nonfinite) if get(n).reads in weight_kinds else c for n, c in zip(names, cols)]
        value = xr.concat(cols, dim="metric")
        value = value.assign_coords(metric=names, step=self.weights["step"]).transpose("step", "metric")
        ds = xr.Dataset({"value": value, "epoch": self.scalars["epoch"].reset_coords(drop=True)})
        ds["nonfinite"] = nonfinite
        if self.per_layer:
            lms = [n for n in names if get(n).reads in LAYER_KINDS]
            pl = xr.concat([p.reindex(layer_metric=lms) for p in self.per_layer], dim="layer")
            ds["per_layer"] = pl.transpose("step", "layer_metric", "layer").reset_coords(drop=True)
        return ds


def seed_metrics(store: RunStore, config: StudyConfig, names: list[str] | None = None,
                 index: list[int] | np.ndarray | None = None, flags: bool = True) -> xr.Dataset:
    """Lazy metrics of one seed for ``names`` (default: all configured + scalars) at the committed
    checkpoints ``index`` (positions along ``step``; default: all). ``flags=False``: no ``nonfinite``
    flags (all False; they read every weight) and no weight metrics masked by them."""
    names = list(metric_names(config) if names is None else names)
    cols = _Columns(store, config, [get(n) for n in names], index)
    cols.matrices()
    cols.flat()
    cols.activations()
    cols.recorded()
    return cols.dataset(names, flags)
