"""``metrics.zarr``: every seed's metrics, written by region, computing only what is missing.

Layout (chunked 1 along ``seed``, so each seed's writer owns its chunks)::

    value      (seed, step, metric)                   float64, NaN where not available
    computed   (seed, step, metric)                   True where ``value`` has been computed
    per_layer  (seed, step, layer_metric, layer)      per weight matrix / hookpoint
    nonfinite  (seed, step)                           a weight held NaN/inf at that checkpoint
    epoch      (seed, step)
    attrs: training_hash, metrics_hash (kernel version + metric settings)

The three stages are: :func:`plan_metrics` (the target coordinates; a new template when seeds,
steps, metrics or layers were added, written beside the old store), :func:`write_seed_metrics`
(one seed: reuse computed cells from the old store, compute the missing ones, write the region),
:func:`finalize_metrics` (swap the new store in). A kill at any point leaves the old store intact.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from vt_core.config.study_config import StudyConfig
from vt_core.metrics.cells import AGGREGATIONS
from vt_core.metrics.compute import MetricsComputeError, layer_metric_names, layer_names, metric_names, seed_metrics
from vt_core.metrics.registry import LAYER_KINDS, get
from vt_core.metrics.roles import RULES_VERSION
from vt_core.names import VERSION, is_function_feature
from vt_core.storage.layout import layout
from vt_core.storage.location import Location, location, move_store, url, zarr_options
from vt_core.storage.run_store import RunStore

#: The schema of metrics.zarr, declared once: each variable's dimensions, dtype and fill value.
#: A seed's region is the same without the leading ``seed``.
SCHEMA: dict[str, tuple[tuple[str, ...], type, object]] = {
    "value": (("seed", "step", "metric"), np.float64, np.nan),
    "computed": (("seed", "step", "metric"), bool, False),
    "per_layer": (("seed", "step", "layer_metric", "layer"), np.float64, np.nan),
    "nonfinite": (("seed", "step"), bool, False),
    "epoch": (("seed", "step"), np.float64, np.nan),
    "run_id": (("seed",), np.int64, -1),  # the training run each seed's values were computed from
}
LABELS = ("metric", "layer_metric", "layer")
#: ``long_name`` (and ``units``) of each variable, so that the store reads at a glance
ATTRS: dict[str, dict[str, str]] = {
    "value": {"long_name": "metric value (each metric in its own units)"},
    "computed": {"long_name": "value has been computed"},
    "per_layer": {"long_name": "metric value per weight matrix or hookpoint"},
    "nonfinite": {"long_name": "a weight held NaN or inf at the checkpoint"},
    "epoch": {"long_name": "passes over the training set", "units": "epochs"},
    "run_id": {"long_name": "training run the values were computed from"},
}


def empty_metrics(coords: dict[str, list], per_seed: bool = False) -> xr.Dataset:
    """A Dataset of :data:`SCHEMA` filled with its fill values over ``coords`` (without the
    ``seed`` dimension when ``per_seed``)."""
    data: dict[str, tuple] = {}
    for name, (dims, dtype, fill) in SCHEMA.items():
        dims = dims[1:] if per_seed else dims
        data[name] = (dims, np.full([len(coords[d]) for d in dims], fill, dtype=dtype), ATTRS[name])
    return xr.Dataset(data, coords={k: (_labels(v) if k in LABELS else v) for k, v in coords.items()
                                    if not (per_seed and k == "seed")})


def _labels(values) -> np.ndarray:
    """Variable-length strings: zarr v3 has a specified dtype for them (fixed-width has none)."""
    return np.asarray([str(v) for v in values], dtype=object)


def metrics_hash(config: StudyConfig) -> str:
    """What every stored value depends on besides the run itself: vt's version, the module rules
    and the metric settings (a change recomputes everything)."""
    parts: list = [VERSION, RULES_VERSION, config.metrics.exclude, config.metrics.dormant_threshold,
                   config.metrics.plugins, config.metrics.convention]
    roles = getattr(config.model, "roles", None)
    if roles:  # a study vt did not train: its roles may be changed (--roles) and the metrics follow
        parts.append({name: entry.role for name, entry in roles.items()})
    blob = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def open_metrics(study: str | Location) -> xr.Dataset:
    """``STUDY/metrics.zarr``, lazily; a clear error when it has not been computed."""
    ds = _open(layout(study).metrics)
    if ds is None:
        raise MetricsComputeError(f"{layout(study).metrics} not found; compute metrics first (`vt analyze {study}`)")
    return ds


def _open(path: str | Location) -> xr.Dataset | None:
    path = location(path)
    if not (path / "zarr.json").is_file():
        return None
    return xr.open_zarr(url(path), consolidated=False, **zarr_options(path))


def _reusable(study: str | Location, config: StudyConfig) -> xr.Dataset | None:
    """The existing metrics.zarr if its values are still valid for this config, else None."""
    old = _open(layout(study).metrics)
    if old is None or "computed" not in old or "run_id" not in old:
        return None
    if old.attrs.get("training_hash") != config.training_hash() or old.attrs.get("metrics_hash") != metrics_hash(config):
        return None
    return old


def _checksummed(ds: xr.Dataset) -> dict:
    """Every variable compressed and followed by a CRC32C checksum (a flipped bit is an error on
    read); chunks are written even when they hold only fill values, so a missing one is damage."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return {name: {"compressors": [ZstdCodec(level=0), Crc32cCodec()]} for name in ds.data_vars}


def plan_metrics(study: str | Location, config: StudyConfig, stores: dict[int, RunStore],
                 steps: list[int] | None = None) -> dict:
    """Target coordinates for ``stores`` (their committed steps, and ``steps`` too: the steps an
    import is about to write); writes a new template unless the old store already fits."""
    study = location(study)
    if not stores:
        raise MetricsComputeError(f"{study}: no seed has finished training; check `vt status {study}`")
    seeds = sorted(stores)
    steps_of = [st.dataset()["step"].values for st in stores.values()] + [np.asarray(steps or [], dtype=np.int64)]
    all_steps = np.unique(np.concatenate(steps_of))
    layers: list[str] = []
    for st in stores.values():
        layers += [n for n in layer_names(st, config) if n not in layers]
    coords = {"seed": seeds, "step": all_steps.tolist(), "metric": metric_names(config),
              "layer_metric": layer_metric_names(config), "layer": layers}
    old = _reusable(study, config)
    same = old is not None and all(list(old[k].values) == list(v) for k, v in coords.items())
    target = layout(study).metrics if same else layout(study).metrics_rebuild
    if not same:
        template = empty_metrics(coords).assign_attrs(
            training_hash=config.training_hash(), metrics_hash=metrics_hash(config),
            convention=config.metrics.convention, rules_version=RULES_VERSION).chunk({"seed": 1})
        template.to_zarr(url(target), mode="w", compute=False, consolidated=False, zarr_format=3,
                         encoding=_checksummed(template), write_empty_chunks=True, **zarr_options(target))
    return {"target": url(target), "rebuild": not same, "seeds": seeds}


BLOCK_CHECKPOINTS = 128  # checkpoints per computed block: peak memory does not grow with the run


def _compute_in_blocks(store: RunStore, config: StudyConfig, names: list[str], index: np.ndarray,
                       device: str | None = "auto") -> xr.Dataset:
    """The metrics ``names`` at the checkpoints ``index``: the weight metrics eagerly, a block of
    checkpoints at a time (:mod:`vt_core.metrics.stream`: at most 64 MiB of weights or one checkpoint
    in memory, whatever the run's length, and no graph to schedule), the others (activations,
    recorded scalars) lazily, ``seed_metrics(...).compute()`` one block of
    checkpoints at a time (dask alone may read far ahead of the kernels)."""
    from vt_core.metrics import stream

    weight = [n for n in names if get(n).reads in stream.KINDS]
    other = [n for n in names if n not in weight]
    # the weights are read once, a block at a time, for their metrics and the nonfinite flags (the
    # lazy path's flags read every weight of a block at once: 2 checkpoints of a 410M model)
    a = stream.weight_metrics(store, config, weight, index, device=metrics_device() if device == "auto" else device)
    if not other:
        return a
    blocks = [seed_metrics(store, config, names=other, index=index[i:i + BLOCK_CHECKPOINTS], flags=False).compute()
              for i in range(0, len(index), BLOCK_CHECKPOINTS)]
    b = blocks[0] if len(blocks) == 1 else xr.concat(blocks, dim="step", join="exact")
    out = xr.Dataset({"value": xr.concat([a["value"], b["value"].assign_coords(step=a["step"])], dim="metric"),
                      "nonfinite": a["nonfinite"], "epoch": a["epoch"]})
    pls = [p["per_layer"] for p in (a, b) if "per_layer" in p]
    if pls:
        lms = [n for n in names if get(n).reads in LAYER_KINDS]
        out["per_layer"] = xr.concat([p.assign_coords(step=a["step"]).reindex(layer_metric=lms) for p in pls], dim="layer")
    return out.reindex(metric=names)


def metrics_device() -> str | None:
    """Where the weight metrics' singular values are computed: CUDA when torch sees a GPU, else
    None (numpy on the CPU)."""
    import torch

    return "cuda" if torch.cuda.is_available() else None


def _run_id(store: RunStore) -> int:
    """The identity of the training run behind the store's committed checkpoints (-1 unknown)."""
    rid = store.attrs.get("run_id")
    return -1 if rid is None else int(rid)


def _reuse(block: xr.Dataset, old: xr.Dataset | None, seed: int, store: RunStore, present: np.ndarray) -> str | None:
    """Copy into ``block`` what ``old`` computed for this seed from the same training run, at the
    checkpoints the store has committed. Returns why nothing could be reused, if so."""
    if old is None or seed not in list(old["seed"].values):
        return "new seed" if old is not None else None
    prev = old.sel(seed=seed).load()
    if int(prev["run_id"]) != _run_id(store) or _run_id(store) == -1:
        return "seed retrained (its run store is new)"
    prev = prev.reindex(step=block["step"].values, metric=block["metric"].values,
                        layer_metric=block["layer_metric"].values, layer=block["layer"].values)
    ok = prev["computed"].fillna(False).astype(bool).values & present[:, None]  # never past the commit
    block["computed"][:] = ok
    for var in ("value", "per_layer", "epoch", "nonfinite"):
        block[var][:] = prev[var].fillna(False if var == "nonfinite" else np.nan).values
    return None


def _needed(block: xr.Dataset, missing: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The metrics with a missing cell, and the steps (values) that have one."""
    metrics = list(block["metric"].values)
    return [m for j, m in enumerate(metrics) if missing[:, j].any()], block["step"].values[missing.any(axis=1)]


def _merge(block: xr.Dataset, new: xr.Dataset, missing: np.ndarray) -> None:
    """Put the computed cells ``new`` (its steps and metrics) into ``block`` where they were ``missing``."""
    steps, metrics, layers = block["step"].values, list(block["metric"].values), list(block["layer"].values)
    need_steps, need_metrics = new["step"].values, [str(m) for m in new["metric"].values]
    cur = block["value"].loc[{"step": need_steps, "metric": need_metrics}].values
    mask = missing[np.ix_(np.isin(steps, need_steps), np.array([metrics.index(m) for m in need_metrics]))]
    block["value"].loc[{"step": need_steps, "metric": need_metrics}] = np.where(mask, new["value"].values, cur)
    block["computed"].loc[{"step": need_steps, "metric": need_metrics}] = mask | block["computed"].loc[
        {"step": need_steps, "metric": need_metrics}].values
    block["epoch"].loc[{"step": need_steps}] = new["epoch"].values
    block["nonfinite"].loc[{"step": need_steps}] = new["nonfinite"].values
    if "per_layer" in new:
        nl = new["per_layer"].reindex(layer=layers)
        sub = {"step": need_steps, "layer_metric": list(nl["layer_metric"].values)}
        lm_mask = mask[:, [need_metrics.index(m) for m in sub["layer_metric"]]][:, :, None]
        cur = block["per_layer"].loc[sub].values
        block["per_layer"].loc[sub] = np.where(lm_mask, nl.values, cur)


def _fill(block: xr.Dataset, store: RunStore, config: StudyConfig, missing: np.ndarray, have_steps) -> None:
    """Compute the ``missing`` (step, metric) cells of ``block`` from the store."""
    need_metrics, need_steps = _needed(block, missing)
    if not need_metrics:
        return
    _merge(block, _compute_in_blocks(store, config, need_metrics, np.searchsorted(have_steps, need_steps)), missing)


class SeedRegion:
    """One seed's region of a planned target, in memory until :meth:`write`: cells reused from the
    old store (computed from the same training run, its ``run_id``, at committed checkpoints),
    then :meth:`update` computes those of every checkpoint committed since. Called once by the
    metric stage; again and again while an import commits checkpoints (:mod:`vt_core.stages.metrics`)."""

    def __init__(self, study: str | Location, config: StudyConfig, store: RunStore, seed: int,
                 plan: Mapping[str, Any]):
        target = _open(plan["target"])
        if target is None or seed not in list(target["seed"].values):
            raise MetricsComputeError(f"seed {seed} is not in {plan['target']}; run the metrics plan again "
                                      f"(`vt analyze`)")
        self.config, self.seed, self.target = config, seed, str(plan["target"])
        self.position = list(target["seed"].values).index(seed)
        coords = {"step": target["step"].values, "metric": [str(m) for m in target["metric"].values],
                  "layer_metric": [str(m) for m in target["layer_metric"].values],
                  "layer": [str(x) for x in target["layer"].values]}
        self.block = empty_metrics(coords, per_seed=True)
        self.run_id = _run_id(store)
        self.why = _reuse(self.block, _reusable(study, config), seed, store, self._present(store))
        self.reused, self.computed = int(self.block["computed"].sum()), 0

    def _present(self, store: RunStore) -> np.ndarray:
        return np.isin(self.block["step"].values, store.dataset()["step"].values)

    def missing(self, store: RunStore) -> np.ndarray:
        """(step, metric): cells of committed checkpoints not computed yet."""
        return (~self.block["computed"].values) & self._present(store)[:, None]

    def tasks(self, store: RunStore, checkpoints: int) -> list[dict]:
        """The missing cells as tasks of at most ``checkpoints`` checkpoints each: ``{"seed", "names",
        "index"}`` (positions in the store), for :func:`compute_cells` on any worker."""
        names, steps = _needed(self.block, self.missing(store))
        index = np.searchsorted(store.dataset()["step"].values, steps).tolist()
        return [{"seed": self.seed, "names": names, "index": index[i:i + checkpoints]}
                for i in range(0, len(index), checkpoints)] if names else []

    def apply(self, store: RunStore, computed: list[xr.Dataset]) -> None:
        """Put cells computed elsewhere (:func:`compute_cells`) in; they count as computed here."""
        missing = self.missing(store)
        for new in computed:
            _merge(self.block, new, missing)
        self.computed += int(missing.sum()) if computed else 0

    def update(self, store: RunStore) -> int:
        """Compute the cells of every committed checkpoint not computed yet; how many."""
        if _run_id(store) != self.run_id:
            raise MetricsComputeError(f"seed {self.seed}: its run store was replaced while its metrics were computed")
        missing = (~self.block["computed"].values) & self._present(store)[:, None]
        _fill(self.block, store, self.config, missing, store.dataset()["step"].values)
        self.computed += int(missing.sum())
        return int(missing.sum())

    def write(self) -> None:
        """The region, written whole into the target (chunked one seed per chunk: no other writer)."""
        self.block["run_id"] = ((), np.int64(self.run_id))
        out = self.block.expand_dims(seed=[self.seed]).drop_vars(["seed", "step", "metric", "layer_metric", "layer"])
        out.chunk(-1).to_zarr(self.target, region={"seed": slice(self.position, self.position + 1)},
                              consolidated=False, write_empty_chunks=True, **zarr_options(location(self.target)))

    def counts(self) -> dict:
        return {"seed": self.seed, "computed": self.computed, "reused": self.reused,
                "why": (self.why or "new checkpoints or metrics") if self.computed else None}


def compute_cells(store: RunStore, config: StudyConfig, names: list[str], index: list[int],
                  device: str | None = "auto") -> xr.Dataset:
    """One task's cells (:meth:`SeedRegion.tasks`): the metrics ``names`` at the store positions ``index``.
    ``device``: where singular values are computed (``auto``: :func:`metrics_device`; None: numpy)."""
    return _compute_in_blocks(store, config, list(names), np.asarray(index, dtype=int), device)


def write_seed_metrics(study: str | Location, config: StudyConfig, store: RunStore, seed: int,
                       plan: Mapping[str, Any]) -> dict:
    """Fill this seed's region of the target (:class:`SeedRegion`). Returns the cells computed and
    reused, and why cells were recomputed when they were."""
    region = SeedRegion(study, config, store, seed, plan)
    region.update(store)
    region.write()
    return region.counts()


def finalize_metrics(study: str | Location, plan: Mapping[str, Any]) -> str:
    """Put a rebuilt store in place of the old one (:func:`vt_core.storage.location.move_store`)."""
    final = layout(study).metrics
    if plan["rebuild"]:
        move_store(location(plan["target"]), final)
    return url(final)


def load_features(study: str | Location, features: list[str]) -> xr.DataArray:
    """The HMM input (seed, step, metric) in memory.

    ``name`` is the column of ``value`` (layer kinds averaged over the model, as the paper does);
    ``name@LAYER`` picks one weight matrix's or hookpoint's value; ``name@max`` (or mean, median,
    min, sum) aggregates the per-layer values another way."""
    ds = open_metrics(study)
    cols = []
    for f in features:
        if is_function_feature(f):  # the PCs of the per-example losses (vt_core.metrics.function)
            from vt_core.metrics.function import function_features

            cols.append(function_features(study, [f], ds["seed"].values, ds["step"].values).isel(metric=0, drop=True))
        else:
            cols.append(feature_column(ds, f))
    return xr.concat(cols, dim="metric").assign_coords(metric=list(features)).transpose("seed", "step", "metric").load()


def feature_column(ds: xr.Dataset, f: str) -> xr.DataArray:
    """One feature of :func:`load_features` from metric cells (``value``, ``per_layer``): of a
    study's metrics.zarr, or of the checkpoints a live run just committed (:mod:`vt_core.stages.live`)."""
    name, _, layer = f.partition("@")
    if layer in AGGREGATIONS:
        if "per_layer" not in ds or name not in ds["layer_metric"].values:
            raise MetricsComputeError(f"feature {f!r}: {name!r} has no per-layer values to aggregate")
        per = ds["per_layer"].sel(layer_metric=name, drop=True).load()
        has = per.notnull().any(dim=[d for d in per.dims if d != "layer"])  # the layers this metric applies to
        return getattr(per.where(has, drop=True), layer)(dim="layer", skipna=False)
    if layer:
        if "per_layer" not in ds or name not in ds["layer_metric"].values or layer not in ds["layer"].values:
            raise MetricsComputeError(f"feature {f!r}: no per-layer values for {name!r} at {layer!r}; layers: "
                                      f"{[str(x) for x in ds['layer'].values] if 'layer' in ds else []}")
        return ds["per_layer"].sel(layer_metric=name, layer=layer, drop=True)
    if name not in ds["metric"].values:
        raise MetricsComputeError(f"feature {f!r} is not in metrics.zarr; add it to metrics.names and re-analyze")
    return ds["value"].sel(metric=name, drop=True)
