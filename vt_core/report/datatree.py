"""A whole study as one :class:`xarray.DataTree`: :func:`open_study`.

::

    /                       attrs: study, training_hash, config (JSON), parts missing so far
    /runs                   scalars (seed, step); coords epoch (seed, step), seed; status per seed
    /weights/seed=0003      that seed's parameters (step, ...), lazily (dask)
    /activations/seed=0003  that seed's activations on the probe batch (step, probe, ...), lazily
    /metrics                value (seed, step, metric), per_layer (seed, step, layer_metric, layer)
    /states                 state (seed, step) decoded, posterior (seed, step, hmm_state); chosen k
                            and the selection table as attributes
    /analysis/states        one row per state: occupancy, first visit, detour, feature means
    /analysis/transitions   one row per transition: probability, seeds, top feature
    /analysis/seeds         convergence step, time in each state, dissimilarity

Only committed checkpoints are visible: a seed still training shows its committed rows, metrics
computed from another run of a seed (retrained since) are hidden, and parts not made yet (no
metrics, no HMM) are absent and named in the root's ``missing`` attribute. Every variable has a
``long_name`` (and ``units`` where it has one); every attribute is one netCDF accepts, so
``to_netcdf`` works on each node's dataset. Nothing is executed or unpickled: Zarr, JSON and npz.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from vt_core.analysis.datasets import analysis_nodes, states_dataset
from vt_core.report.labels import metric_label
from vt_core.storage import schema as naming
from vt_core.storage.handle import Study, StudyRef
from vt_core.storage.layout import RUNS, layout
from vt_core.storage.location import Location
from vt_core.storage.run_store import RunStore


def _describe(ds: xr.Dataset, attrs_of) -> xr.Dataset:
    """Fill in ``long_name``/``units`` from ``attrs_of(name)`` where the store has none; make every
    attribute netCDF-safe."""
    for name, var in ds.variables.items():
        var.attrs = naming.netcdf_attrs({**attrs_of(str(name)), **var.attrs})
    ds.attrs = naming.netcdf_attrs(ds.attrs)
    return ds


def _seed_scalars(store: RunStore) -> xr.Dataset:
    """One seed's committed scalars in memory, epoch as a coordinate, without the 0-d seed."""
    ds = store.dataset().load()
    ds = ds.drop_vars([v for v in ("seed",) if v in ds.variables])
    return ds.reset_coords("epoch") if "epoch" in ds.coords else ds


def runs_dataset(stores: dict[int, RunStore]) -> xr.Dataset:
    """Every seed's scalars on (seed, step), NaN where a seed has no such checkpoint."""
    per_seed = [_seed_scalars(st).expand_dims(seed=[seed]) for seed, st in stores.items()]
    ds = xr.concat(per_seed, dim="seed", join="outer", data_vars="all", fill_value=np.nan)
    # which (seed, step) a seed has: not from the epoch, which a study vt did not train may not know
    have = np.stack([np.isin(ds["step"].values, one["step"].values) for one in per_seed])
    ds = ds.set_coords("epoch").assign_coords(committed=(("seed", "step"), have))
    info = {key: ("seed", [st.attrs.get(key) for st in stores.values()])
            for key in ("status", "committed_steps")}
    info["format_version"] = ("seed", [st.format_version for st in stores.values()])
    info["run_id"] = ("seed", [str(st.attrs.get("run_id")) for st in stores.values()])
    ds = ds.assign(info)
    ds.attrs = {"long_name": "scalars recorded at every checkpoint, every seed"}
    loss = next((naming.loss_of(st.attrs) for st in stores.values()), None)
    extra = {"status": {"long_name": "training status (complete, running, failed, diverged)"},
             "committed": {"long_name": "the seed has a committed checkpoint at this step"},
             "committed_steps": {"long_name": "checkpoints committed", "units": "checkpoints"},
             "format_version": {"long_name": "run store format version"},
             "run_id": {"long_name": "identity of the training run (new when a seed is retrained)"}}
    return _describe(ds, lambda n: extra.get(n) or naming.scalar_attrs(n, loss))


def seed_group(store: RunStore, group: str, seed: int, epoch: xr.DataArray) -> xr.Dataset:
    """A seed's weights or activations, lazily, committed rows only; coords epoch and seed."""
    ds = store.dataset(group)
    ds = ds.assign_coords(epoch=("step", epoch.sel(step=ds["step"].values).values), seed=seed)
    ds.attrs = {k: v for k, v in store.attrs.items() if k not in ("array_kinds", "parameter_roles")}
    ds.attrs["config"] = json.dumps(naming.config_of(store.attrs))
    return _describe(ds, lambda n: naming.scalar_attrs(n) if n in ("step", "epoch", "seed")
                     else naming.array_attrs(group, n))


def _committed(metrics: xr.Dataset, stores: dict[int, RunStore], runs: xr.Dataset | None) -> xr.DataArray:
    """(seed, step): True where the cell comes from a checkpoint the seed's store has committed,
    in the same training run as the store's."""
    ok = np.zeros((metrics.sizes["seed"], metrics.sizes["step"]), dtype=bool)
    for i, seed in enumerate(metrics["seed"].values):
        st = stores.get(int(seed))
        if st is None or runs is None or str(int(metrics["run_id"].values[i])) != str(st.attrs.get("run_id")):
            continue
        have = runs["step"].values[runs["committed"].sel(seed=seed).values]
        ok[i] = np.isin(metrics["step"].values, have)
    return xr.DataArray(ok, dims=("seed", "step"))


def metrics_dataset(study: Location, stores: dict[int, RunStore], runs: xr.Dataset | None) -> xr.Dataset | None:
    """metrics.zarr with the cells never computed, or not from a committed checkpoint, as NaN."""
    from vt_core.metrics.registry import all_metrics
    from vt_core.metrics.store import _open

    ds = _open(layout(study).metrics)
    if ds is None:
        return None
    ds = ds.load()
    ok = _committed(ds, stores, runs)
    ds["value"] = ds["value"].where(ds["computed"] & ok)
    if "per_layer" in ds:
        ds["per_layer"] = ds["per_layer"].where(ok)
    labels = {d: [str(v) for v in ds[d].values] for d in ("metric", "layer_metric", "layer") if d in ds.dims}
    ds = ds.assign_coords({d: np.asarray(v, dtype=object) for d, v in labels.items()})
    ds = ds.assign(run_id=("seed", [str(int(r)) for r in ds["run_id"].values]))
    ds = ds.set_coords("epoch").assign(visible=ok)
    known = all_metrics()
    units = [naming.scalar_attrs(m).get("units") or metric_label(m).units for m in labels["metric"]]
    formula = [known[m].formula if m in known else "" for m in labels["metric"]]
    ds = ds.assign_coords(metric_units=("metric", np.asarray(units, dtype=object)),
                          metric_formula=("metric", np.asarray(formula, dtype=object)))
    extra = {
        "value": {"long_name": "metric value (units per metric: metric_units)"},
        "per_layer": {"long_name": "metric value per weight matrix or hookpoint"},
        "computed": {"long_name": "value has been computed"},
        "visible": {"long_name": "checkpoint committed in the seed's current training run"},
        "nonfinite": {"long_name": "a weight held NaN or inf at the checkpoint"},
        "run_id": {"long_name": "training run the values were computed from"},
        "metric": {"long_name": "metric"}, "layer_metric": {"long_name": "per-layer metric"},
        "layer": {"long_name": "weight matrix or hookpoint"},
        "metric_units": {"long_name": "units of each metric"}, "metric_formula": {"long_name": "formula of each metric"},
    }
    return _describe(ds, lambda n: extra.get(n) or naming.scalar_attrs(n))


def open_study(study: StudyRef) -> xr.DataTree:
    """The study at ``study`` (a path or any URL the study commands take) as a DataTree (see the
    module's docstring); weights and activations stay lazy until used."""
    study = Study.open(study)
    config = study.config
    paths = study.layout
    stores = {s: RunStore(paths.run(s), mode="r") for s in config.seeds if (paths.run(s) / "zarr.json").is_file()}
    nodes: dict[str, xr.Dataset] = {}
    runs = runs_dataset(stores) if stores else None
    if runs is not None:
        nodes[RUNS] = runs
        for seed, st in stores.items():
            for group in ("weights", "activations"):
                if group in st.root and st.committed:
                    nodes[f"{group}/seed={seed:04d}"] = seed_group(st, group, seed, runs["epoch"].sel(seed=seed))
    metrics = metrics_dataset(study, stores, runs)
    if metrics is not None:
        nodes["metrics"] = metrics
    if paths.paths.is_file() and paths.model.is_file():
        nodes["states"] = states_dataset(study)
    if paths.analysis.is_file():
        nodes |= {f"analysis/{k}": v for k, v in analysis_nodes(study).items()}
    missing = [p for p in (RUNS, "metrics", "states", "analysis/states") if p not in nodes]
    root = xr.Dataset(attrs=naming.netcdf_attrs({
        "study": config.name, "training_hash": config.training_hash(), "location": str(study),
        "config": json.dumps(config.model_dump(mode="json")), "format_version": naming.FORMAT_VERSION,
        "missing": ", ".join(missing)}))
    return xr.DataTree.from_dict({"/": root, **nodes})
