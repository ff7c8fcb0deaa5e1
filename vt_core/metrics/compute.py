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

import numpy as np
import xarray as xr

from vt_core.config import StudyConfig
from vt_core.errors import VtError
from vt_core.metrics.registry import LAYER_KINDS, Metric, get
from vt_core.metrics.weights import singular_values
from vt_core.names import SCALARS
from vt_core.store import RunStore


class MetricsComputeError(VtError, RuntimeError):
    """Metrics cannot be computed or read as asked."""


def metric_names(config: StudyConfig) -> list[str]:
    """Every column of ``value``: the configured metrics, then the recorded scalars."""
    return list(config.metrics.names) + [s for s in SCALARS if s not in config.metrics.names]


def layer_metric_names(config: StudyConfig) -> list[str]:
    return [n for n in config.metrics.names if get(n).reads in LAYER_KINDS]


def _excluded(name: str, exclude: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in exclude)


def _as_matrices(var: xr.DataArray) -> xr.DataArray:
    """(step, *shape) -> (step, layer, a, b): 2-D as is, 3-D split along the first axis (heads),
    4-D and more (conv kernels) reshaped to (out, in * kh * kw)."""
    name, dims = var.name, var.dims[1:]
    if len(dims) == 2:
        return var.rename({dims[0]: "a", dims[1]: "b"}).expand_dims(layer=[name], axis=1)
    if len(dims) == 3:
        layers = [f"{name}.{h}" for h in range(var.sizes[dims[0]])]
        return var.rename({dims[0]: "layer", dims[1]: "a", dims[2]: "b"}).assign_coords(layer=layers)
    stacked = var.stack(b=list(dims[1:]), create_index=False).rename({dims[0]: "a"})
    return stacked.expand_dims(layer=[name], axis=1)


def weight_arrays(weights: xr.Dataset, config: StudyConfig) -> tuple[list[str], list[str]]:
    """(matrix parameters, bias parameters) that the weight metrics read, sorted by name."""
    # sorted: zarr lists members in no fixed order, and layer labels must not depend on it
    params = sorted(str(v) for v in weights.data_vars if not _excluded(str(v), list(config.metrics.exclude)))
    return [p for p in params if weights[p].ndim >= 3], [p for p in params if weights[p].ndim == 2]


def layer_names(store: RunStore, config: StudyConfig) -> list[str]:
    """The ``layer`` coordinate of this seed: matrices (heads split), then hookpoints."""
    weights = store.dataset("weights")
    mats, _ = weight_arrays(weights, config)
    out = []
    for p in mats:
        out += [f"{p}.{h}" for h in range(weights[p].shape[1])] if weights[p].ndim == 4 else [p]
    if "activations" in store.root:
        out += sorted(str(v) for v in store.dataset("activations").data_vars)
    return out


def _ufunc(kernel, arrays: list[xr.DataArray], core: list[list[str]], out_dim: str, n_out: int) -> xr.DataArray:
    return xr.apply_ufunc(
        kernel, *arrays, input_core_dims=core, output_core_dims=[[out_dim]], dask="parallelized",
        output_dtypes=[np.float64], dask_gufunc_kwargs={"output_sizes": {out_dim: n_out}},
    )


def _matrix_kernel(metrics: list[Metric]):
    need_sv = any(m.needs_sv for m in metrics)

    def kernel(w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, dtype=np.float64)
        finite = np.isfinite(w.sum(axis=(-2, -1)))  # NaN/inf anywhere in a matrix makes its sum so
        if not finite.all():
            w = np.where(finite[..., None, None], w, 0.0)
        s = singular_values(w) if need_sv else None
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.stack([np.broadcast_to(m.kernel(w, s), finite.shape) for m in metrics],  # type: ignore[misc]
                           axis=-1)
        out = out.astype(np.float64, copy=True)
        out[~finite] = np.nan
        return out

    return kernel


def _flat_kernel(metrics: list[Metric], n_current: int, with_init: bool):
    def kernel(*arrays):
        # in the stored dtype (float32): the kernels accumulate in float64 themselves
        cur = np.concatenate([np.asarray(a).reshape(a.shape[0], -1) for a in arrays[:n_current]], axis=1)
        bad = ~np.isfinite(cur).all(axis=1)
        if bad.any():
            cur = np.where(bad[:, None], 0, cur)
        with np.errstate(divide="ignore", invalid="ignore"):
            if with_init:
                init = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays[n_current:]])
                out = np.stack([m.kernel(cur, init[None, :]) for m in metrics], axis=-1)
            else:
                out = np.stack([m.kernel(cur) for m in metrics], axis=-1)
        out[bad] = np.nan  # NaN/inf weights give NaN (and the nonfinite flag), never a crash
        return out

    return kernel


def _activation_kernel(metrics: list[Metric], threshold: float, pair: bool):
    def kernel(*arrays):
        outs = []
        for m in metrics:
            kw = {"threshold": threshold} if m.name == "dormant_fraction" else {}
            outs.append(m.kernel(*arrays, **kw))
        return np.stack(outs, axis=-1)

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
        self.mat_names, self.bias_names = weight_arrays(self.weights, config)
        if not self.mat_names:
            raise MetricsComputeError(f"{store.path}: no weight matrices left after "
                                      f"metrics.exclude={config.metrics.exclude}")
        self.nan = xr.full_like(self.scalars["epoch"], np.nan, dtype=np.float64)
        self.columns: dict[str, xr.DataArray] = {}
        self.per_layer: list[xr.DataArray] = []

    def sel(self, ds):
        return ds if self.index is None else ds.isel(step=self.index)

    def kind(self, k: str) -> list[Metric]:
        return [m for m in self.metrics if m.reads == k]

    def add_per_layer(self, pl: xr.DataArray, ms: list[Metric]) -> None:
        self.per_layer.append(pl)
        for m in ms:
            self.columns[m.name] = pl.sel(layer_metric=m.name, drop=True).mean("layer", skipna=False)

    def matrices(self) -> None:
        if not (mm := self.kind("matrix")):
            return
        pl = xr.concat([_ufunc(_matrix_kernel(mm), [_as_matrices(self.weights[p])], [["a", "b"]], "layer_metric",
                               len(mm)) for p in self.mat_names], dim="layer")
        self.add_per_layer(pl.assign_coords(layer_metric=[m.name for m in mm]), mm)

    def flat(self) -> None:
        for k, pnames in (("weights", self.mat_names), ("biases", self.bias_names)):
            if not (km := self.kind(k)):
                continue
            if not pnames:
                self.columns |= {m.name: self.nan for m in km}
                continue
            arrs = [self.weights[p] for p in pnames]
            out = _ufunc(_flat_kernel(km, len(arrs), False), arrs, [list(a.dims[1:]) for a in arrs], "m", len(km))
            self.columns |= {m.name: out.isel(m=i, drop=True) for i, m in enumerate(km)}
        if km := self.kind("init"):
            cur = [self.weights[p] for p in self.mat_names]
            init = [self.full_w[p].isel(step=0, drop=True) for p in self.mat_names]
            out = _ufunc(_flat_kernel(km, len(cur), True), cur + init,
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
        thr = self.config.metrics.dormant_threshold
        hook_rows = []
        for h in sorted(str(v) for v in full_a.data_vars):
            a = acts[h]
            core = [list(a.dims[1:])]
            parts = []
            if am:
                parts.append(_ufunc(_activation_kernel(am, thr, False), [a], core, "layer_metric", len(am)))
            if pm:
                pos = np.arange(full_a.sizes["step"]) if self.index is None else self.index
                prev = full_a[h].isel(step=np.maximum(pos - 1, 0)).assign_coords(step=a["step"])
                pair = _ufunc(_activation_kernel(pm, thr, True), [prev, a], core * 2, "layer_metric", len(pm))
                parts.append(pair.where(xr.DataArray(pos > 0, dims="step", coords={"step": a["step"]})))
            hook_rows.append(xr.concat(parts, dim="layer_metric").expand_dims(layer=[h]))
        pl = xr.concat(hook_rows, dim="layer").assign_coords(layer_metric=[m.name for m in am + pm])
        self.add_per_layer(pl, am + pm)

    def recorded(self) -> None:
        for m in self.kind("scalar"):
            self.columns[m.name] = self.scalars[m.name].astype(np.float64) if m.name in self.scalars else self.nan

    def dataset(self, names: list[str]) -> xr.Dataset:
        value = xr.concat([self.columns[n].astype(np.float64).reset_coords(drop=True) for n in names], dim="metric")
        value = value.assign_coords(metric=names, step=self.weights["step"]).transpose("step", "metric")
        ds = xr.Dataset({"value": value, "epoch": self.scalars["epoch"].reset_coords(drop=True)})
        params = self.mat_names + self.bias_names
        ds["nonfinite"] = xr.apply_ufunc(
            _nonfinite, *[self.weights[p] for p in params],
            input_core_dims=[list(self.weights[p].dims[1:]) for p in params],
            dask="parallelized", output_dtypes=[bool])
        if self.per_layer:
            lms = [n for n in names if get(n).reads in LAYER_KINDS]
            pl = xr.concat([p.reindex(layer_metric=lms) for p in self.per_layer], dim="layer")
            ds["per_layer"] = pl.transpose("step", "layer_metric", "layer").reset_coords(drop=True)
        return ds


def seed_metrics(store: RunStore, config: StudyConfig, names: list[str] | None = None,
                 index: list[int] | np.ndarray | None = None) -> xr.Dataset:
    """Lazy metrics of one seed for ``names`` (default: all configured + scalars) at the committed
    checkpoints ``index`` (positions along ``step``; default: all)."""
    names = list(metric_names(config) if names is None else names)
    cols = _Columns(store, config, [get(n) for n in names], index)
    cols.matrices()
    cols.flat()
    cols.activations()
    cols.recorded()
    return cols.dataset(names)
