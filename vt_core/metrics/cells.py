"""Metric cells of a few checkpoints of one seed in numpy: what :func:`vt_core.metrics.store.compute_cells`
gives as a Dataset, for the live watcher, which decodes without xarray (xarray and the dask it
imports were most of a second of its first look, on a machine whose cores training needs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from vt_core.metrics.params import MetricsComputeError

if TYPE_CHECKING:
    import xarray as xr

#: the ways a per-layer metric is aggregated over the model: ``name@max`` (``name`` alone: the mean)
AGGREGATIONS = ("mean", "median", "min", "max", "sum")


@dataclass
class Cells:
    step: np.ndarray                 # (n,) the checkpoints' steps
    epoch: np.ndarray                # (n,)
    metric: list[str]
    value: np.ndarray                # (n, metric): layer kinds averaged over the model
    nonfinite: np.ndarray            # (n,) a weight held NaN/inf (its weight metrics are NaN)
    layer_metric: list[str] = field(default_factory=list)
    layer: list[str] = field(default_factory=list)
    per_layer: np.ndarray | None = None  # (n, layer_metric, layer)

    @classmethod
    def of(cls, ds: xr.Dataset) -> Cells:
        """From cells as a Dataset (``value``, ``nonfinite``, ``epoch``, ``per_layer``)."""
        flags = np.asarray(ds["nonfinite"].values)
        pl = ds["per_layer"] if "per_layer" in ds else None
        return cls(step=ds["step"].values, epoch=ds["epoch"].values, metric=[str(m) for m in ds["metric"].values],
                   value=ds["value"].values, nonfinite=np.asarray(flags.reshape(len(flags), -1).any(axis=1)),
                   layer_metric=[] if pl is None else [str(m) for m in ds["layer_metric"].values],
                   layer=[] if pl is None else [str(x) for x in ds["layer"].values],
                   per_layer=None if pl is None else pl.transpose("step", "layer_metric", "layer").values)

    def dataset(self) -> xr.Dataset:
        import xarray as xr

        ds = xr.Dataset({"value": (("step", "metric"), self.value), "nonfinite": (("step",), self.nonfinite),
                         "epoch": (("step",), self.epoch)}, coords={"step": self.step, "metric": self.metric})
        if self.per_layer is not None:
            ds["per_layer"] = xr.DataArray(self.per_layer, dims=("step", "layer_metric", "layer"),
                                           coords={"layer_metric": self.layer_metric, "layer": self.layer})
        return ds

    def feature(self, f: str) -> np.ndarray:
        """One HMM feature's column, as :func:`vt_core.metrics.store.feature_column` reads it from a
        Dataset of the same cells (``name``, ``name@LAYER``, ``name@max``...; a test holds them equal)."""
        name, _, layer = f.partition("@")
        if layer and (self.per_layer is None or name not in self.layer_metric):
            raise MetricsComputeError(f"feature {f!r}: {name!r} has no per-layer values")
        if layer in AGGREGATIONS:
            per = self.per_layer[:, self.layer_metric.index(name)]  # type: ignore[index]
            per = per[:, ~np.isnan(per).all(axis=0)]  # the layers this metric applies to
            with np.errstate(invalid="ignore"):
                return getattr(np, layer)(per, axis=1)
        if layer:
            if layer not in self.layer:
                raise MetricsComputeError(f"feature {f!r}: no per-layer values for {name!r} at {layer!r}; "
                                          f"layers: {self.layer}")
            return self.per_layer[:, self.layer_metric.index(name), self.layer.index(layer)]  # type: ignore[index]
        if name not in self.metric:
            raise MetricsComputeError(f"feature {f!r} is not in the metrics computed; add it to metrics.names")
        return self.value[:, self.metric.index(name)]
