"""Metrics of one seed, lazily from its Zarr store, written into ``metrics.zarr`` by region.

``seed_metrics`` builds a dask-backed Dataset; nothing is computed until it is written or
``.compute()``-d. ``metrics.zarr`` holds::

    value      (seed, step, metric)          the configured metrics (model-averaged) + the scalars
    per_layer  (seed, step, matrix_metric, layer)   each weight matrix's own values
    epoch      (seed, step)

chunked 1 along ``seed`` so that every seed's writer owns its chunks.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np
import xarray as xr

from vt_core.config import SCALARS, StudyConfig
from vt_core.metrics.weights import GLOBAL_STATS, MATRIX_METRICS, global_stats, matrix_metrics
from vt_core.store import RunStore

METRICS_ZARR = "metrics.zarr"


class MetricsError(RuntimeError):
    """metrics.zarr is missing or does not hold what was asked for."""


def _excluded(name: str, exclude: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in exclude)


def _as_matrices(var: xr.DataArray) -> xr.DataArray:
    """(step, *shape) -> (step, layer, a, b): 2-D as is, 3-D split along the first axis (heads),
    4-D and more (conv kernels) reshaped to (out, rest)."""
    name = var.name
    dims = var.dims[1:]
    if len(dims) == 2:
        return var.rename({dims[0]: "a", dims[1]: "b"}).expand_dims(layer=[name], axis=1)
    if len(dims) == 3:
        layers = [f"{name}.{h}" for h in range(var.sizes[dims[0]])]
        return var.rename({dims[0]: "layer", dims[1]: "a", dims[2]: "b"}).assign_coords(layer=layers)
    stacked = var.stack(b=list(dims[1:]), create_index=False).rename({dims[0]: "a"})
    return stacked.expand_dims(layer=[name], axis=1)


def seed_metrics(store: RunStore, config: StudyConfig) -> xr.Dataset:
    """Lazy Dataset with ``value`` (step, metric), ``per_layer`` (step, matrix_metric, layer)."""
    weights = store.dataset("weights")
    scalars = store.dataset()
    exclude = list(config.metrics.exclude)
    params = [v for v in weights.data_vars if not _excluded(str(v), exclude)]
    mats = [weights[p] for p in params if weights[p].ndim >= 3]
    biases = [weights[p] for p in params if weights[p].ndim == 2]
    if not mats:
        raise MetricsError(f"{store.path}: no weight matrices left after metrics.exclude={exclude}")

    per_layer = []
    for m in mats:
        m = _as_matrices(m)
        # each (a, b) pair gets its own dim names so matrices of different shapes can be concatenated
        per_layer.append(xr.apply_ufunc(
            matrix_metrics, m, input_core_dims=[["a", "b"]], output_core_dims=[["matrix_metric"]],
            dask="parallelized", output_dtypes=[np.float64],
            dask_gufunc_kwargs={"output_sizes": {"matrix_metric": len(MATRIX_METRICS)}},
        ))
    per_layer_da = xr.concat(per_layer, dim="layer").assign_coords(matrix_metric=list(MATRIX_METRICS))
    per_layer_da = per_layer_da.transpose("step", "matrix_metric", "layer")

    def stats(arrays: list[xr.DataArray], suffix: str) -> dict[str, xr.DataArray]:
        if not arrays:
            nan = xr.full_like(scalars["train_loss"], np.nan)
            return {f"{s}_{suffix}": nan for s in GLOBAL_STATS}
        out = xr.apply_ufunc(
            global_stats, *arrays, input_core_dims=[list(a.dims[1:]) for a in arrays],
            output_core_dims=[["stat"]], dask="parallelized", output_dtypes=[np.float64],
            dask_gufunc_kwargs={"output_sizes": {"stat": len(GLOBAL_STATS)}},
        )
        return {f"{s}_{suffix}": out.isel(stat=i, drop=True) for i, s in enumerate(GLOBAL_STATS)}

    columns = {name: per_layer_da.sel(matrix_metric=name, drop=True).mean("layer") for name in MATRIX_METRICS}
    columns |= stats([weights[p] for p in params if weights[p].ndim >= 3], "w")
    columns |= stats(biases, "b")
    for s in SCALARS:
        columns[s] = scalars[s]
    names = list(config.metrics.names) + list(SCALARS)
    value = xr.concat([columns[n].astype(np.float64) for n in names], dim="metric")
    value = value.assign_coords(metric=names).transpose("step", "metric")
    return xr.Dataset({"value": value, "per_layer": per_layer_da, "epoch": scalars["epoch"]})


def _labels(coord: xr.DataArray) -> np.ndarray:
    """Variable-length strings: zarr v3 has a specified dtype for them (fixed-width has none)."""
    return np.asarray([str(v) for v in coord.values], dtype=object)


def init_metrics_store(study: Path, config: StudyConfig, stores: dict[int, RunStore]) -> Path:
    """Create metrics.zarr with every seed and the union of the seeds' steps (NaN-filled)."""
    path = Path(study) / METRICS_ZARR
    seeds = sorted(stores)
    layouts = {s: seed_metrics(st, config) for s, st in stores.items()}
    steps = np.unique(np.concatenate([layouts[s]["step"].values for s in seeds]))
    first = layouts[seeds[0]]
    template = xr.Dataset(
        {
            "value": (("seed", "step", "metric"), np.full((len(seeds), len(steps), first.sizes["metric"]), np.nan)),
            "per_layer": (("seed", "step", "matrix_metric", "layer"),
                          np.full((len(seeds), len(steps), first.sizes["matrix_metric"], first.sizes["layer"]), np.nan)),
            "epoch": (("seed", "step"), np.full((len(seeds), len(steps)), np.nan)),
        },
        coords={"seed": seeds, "step": steps, "metric": _labels(first["metric"]),
                "matrix_metric": _labels(first["matrix_metric"]), "layer": _labels(first["layer"])},
    ).chunk({"seed": 1})
    template.attrs["config_hash"] = config.training_hash()
    template.to_zarr(str(path), mode="w", compute=False, consolidated=False, zarr_format=3)
    return path


def write_seed_metrics(study: Path, config: StudyConfig, store: RunStore, seed: int) -> int:
    """Compute one seed's metrics and write its region of metrics.zarr; returns cells written."""
    path = Path(study) / METRICS_ZARR
    target = xr.open_zarr(str(path), consolidated=False)
    seeds = list(target["seed"].values)
    if seed not in seeds:
        raise MetricsError(f"seed {seed} is not in {path}; rebuild it with `vt analyze {study}`")
    ds = seed_metrics(store, config).reindex(step=target["step"].values)
    ds = ds.expand_dims(seed=[seed]).drop_vars(["seed", "step", "metric", "matrix_metric", "layer"])
    i = seeds.index(seed)
    ds.chunk(-1).to_zarr(str(path), region={"seed": slice(i, i + 1)}, consolidated=False)
    return int(ds["value"].size + ds["per_layer"].size)


def load_features(study: Path, features: list[str]) -> xr.DataArray:
    """The HMM input: ``value`` (seed, step, feature) restricted to ``features``, in memory."""
    path = Path(study) / METRICS_ZARR
    if not path.exists():
        raise MetricsError(f"{path} not found; compute metrics first (`vt analyze {study}`)")
    value = xr.open_zarr(str(path), consolidated=False)["value"]
    missing = [f for f in features if f not in value["metric"].values]
    if missing:
        raise MetricsError(f"features {missing} are not in {path}; add them to metrics.names and re-analyze")
    return value.sel(metric=features).load()
