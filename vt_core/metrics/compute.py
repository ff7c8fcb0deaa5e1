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

import numpy as np
import xarray as xr

from vt_core.config.study_config import StudyConfig
from vt_core.metrics.kernels import _activation_kernel, _conv_kernel, _flat_kernel, _matrix_kernel, _nonfinite
from vt_core.metrics.params import (  # noqa: F401  (MetricsComputeError, layer_metric_names: importers' names)
    MetricsComputeError,
    layer_metric_names,
    matrix_layers,
    metric_names,
    store_roles,
    stored_shapes,
    weight_arrays,
)
from vt_core.metrics.registry import LAYER_KINDS, Metric, get
from vt_core.storage.run_store import RunStore


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
    shapes, roles = stored_shapes(store), store_roles(store, config)
    mats, _ = weight_arrays(shapes, config, roles)
    out = [label for _, _, labels in matrix_layers(shapes, mats, roles) for label in labels]
    if "activations" in store.root:
        out += sorted(str(v) for v in store.dataset("activations").data_vars)
    return out


def _ufunc(kernel, arrays: list[xr.DataArray], core: list[list[str]], out_dim: str, n_out: int) -> xr.DataArray:
    return xr.apply_ufunc(
        kernel, *arrays, input_core_dims=core, output_core_dims=[[out_dim]], dask="parallelized",
        output_dtypes=[np.float64], dask_gufunc_kwargs={"output_sizes": {out_dim: n_out}},
    )


class _Columns:
    """The lazy pieces of one seed's metrics as they are built: one column of ``value`` per
    metric, and the per-layer blocks."""

    def __init__(self, store: RunStore, config: StudyConfig, metrics: list[Metric], index):
        self.store, self.config, self.metrics = store, config, metrics
        self.index = None if index is None else np.asarray(index, dtype=int)
        self.full_w = store.dataset("weights")
        self.weights, self.scalars = self.sel(self.full_w), self.sel(store.dataset())
        self.roles = store_roles(store, config)
        self.mat_names, self.bias_names = weight_arrays(stored_shapes(store), config, self.roles)
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
        for p, role, labels in matrix_layers(stored_shapes(self.store), self.mat_names, self.roles):
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
