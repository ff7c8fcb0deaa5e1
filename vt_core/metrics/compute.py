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

from vt_core.config import SCALARS, StudyConfig
from vt_core.metrics.registry import LAYER_KINDS, Metric, get
from vt_core.metrics.weights import singular_values
from vt_core.store import RunStore


class MetricsError(RuntimeError):
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
            out = np.stack([np.broadcast_to(m.kernel(w, s), finite.shape) for m in metrics], axis=-1)
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


def seed_metrics(store: RunStore, config: StudyConfig, names: list[str] | None = None,
                 index: list[int] | np.ndarray | None = None) -> xr.Dataset:
    """Lazy metrics of one seed for ``names`` (default: all configured + scalars) at the committed
    checkpoints ``index`` (positions along ``step``; default: all)."""
    names = list(metric_names(config) if names is None else names)
    metrics = [get(n) for n in names]
    full_w = store.dataset("weights")
    full_s = store.dataset()
    sel = (lambda ds: ds) if index is None else (lambda ds: ds.isel(step=np.asarray(index, dtype=int)))
    weights, scalars = sel(full_w), sel(full_s)
    mat_names, bias_names = weight_arrays(weights, config)
    if not mat_names:
        raise MetricsError(f"{store.path}: no weight matrices left after metrics.exclude={config.metrics.exclude}")
    steps = weights["step"]
    nan = xr.full_like(scalars["epoch"], np.nan, dtype=np.float64)
    columns: dict[str, xr.DataArray] = {}
    per_layer: list[xr.DataArray] = []

    def kind(k):
        return [m for m in metrics if m.reads == k]

    if mm := kind("matrix"):
        pl = xr.concat([_ufunc(_matrix_kernel(mm), [_as_matrices(weights[p])], [["a", "b"]], "layer_metric", len(mm))
                        for p in mat_names], dim="layer")
        pl = pl.assign_coords(layer_metric=[m.name for m in mm])
        per_layer.append(pl)
        for m in mm:
            columns[m.name] = pl.sel(layer_metric=m.name, drop=True).mean("layer", skipna=False)

    for k, pnames in (("weights", mat_names), ("biases", bias_names)):
        if km := kind(k):
            if not pnames:
                columns |= {m.name: nan for m in km}
                continue
            arrs = [weights[p] for p in pnames]
            out = _ufunc(_flat_kernel(km, len(arrs), False), arrs, [list(a.dims[1:]) for a in arrs], "m", len(km))
            columns |= {m.name: out.isel(m=i, drop=True) for i, m in enumerate(km)}

    if km := kind("init"):
        cur = [weights[p] for p in mat_names]
        init = [full_w[p].isel(step=0, drop=True) for p in mat_names]
        out = _ufunc(_flat_kernel(km, len(cur), True), cur + init,
                     [list(a.dims[1:]) for a in cur] + [list(a.dims) for a in init], "m", len(km))
        columns |= {m.name: out.isel(m=i, drop=True) for i, m in enumerate(km)}

    am, pm = kind("activation"), kind("activation_pair")
    if am or pm:
        if "activations" not in store.root:
            raise MetricsError(f"metrics {[m.name for m in am + pm]} read activations, but {store.path} has none; "
                               f"add hookpoints to hooks.activations")
        full_a = store.dataset("activations")
        acts = sel(full_a)
        hook_rows = []
        thr = config.metrics.dormant_threshold
        for h in sorted(str(v) for v in full_a.data_vars):
            a = acts[h]
            core = [list(a.dims[1:])]
            parts = []
            if am:
                parts.append(_ufunc(_activation_kernel(am, thr, False), [a], core, "layer_metric", len(am)))
            if pm:
                pos = np.arange(full_a.sizes["step"]) if index is None else np.asarray(index, dtype=int)
                prev = full_a[h].isel(step=np.maximum(pos - 1, 0)).assign_coords(step=a["step"])
                pair = _ufunc(_activation_kernel(pm, thr, True), [prev, a], core * 2, "layer_metric", len(pm))
                parts.append(pair.where(xr.DataArray(pos > 0, dims="step", coords={"step": a["step"]})))
            hook_rows.append(xr.concat(parts, dim="layer_metric").expand_dims(layer=[h]))
        pl = xr.concat(hook_rows, dim="layer").assign_coords(layer_metric=[m.name for m in am + pm])
        per_layer.append(pl)
        for m in am + pm:
            columns[m.name] = pl.sel(layer_metric=m.name, drop=True).mean("layer", skipna=False)

    for m in kind("scalar"):
        columns[m.name] = scalars[m.name].astype(np.float64) if m.name in scalars else nan

    value = xr.concat([columns[n].astype(np.float64).reset_coords(drop=True) for n in names], dim="metric")
    value = value.assign_coords(metric=names, step=steps).transpose("step", "metric")
    ds = xr.Dataset({"value": value, "epoch": scalars["epoch"].reset_coords(drop=True)})
    ds["nonfinite"] = xr.apply_ufunc(
        _nonfinite, *[weights[p] for p in mat_names + bias_names],
        input_core_dims=[list(weights[p].dims[1:]) for p in mat_names + bias_names],
        dask="parallelized", output_dtypes=[bool])
    if per_layer:
        lms = [n for n in names if get(n).reads in LAYER_KINDS]
        pl = xr.concat([p.reindex(layer_metric=lms) for p in per_layer], dim="layer")
        ds["per_layer"] = pl.transpose("step", "layer_metric", "layer").reset_coords(drop=True)
    return ds
