"""Tidy tables of a study, for pandas, polars, DuckDB, R: ``vt export``.

``checkpoints``: one row per (seed, step) that some seed has committed: ``seed``, ``step``,
``epoch``, every recorded scalar, every metric (per-layer values as ``metric@layer``, the
``hmm.features`` spelling), the decoded ``state`` and its ``posterior_<k>`` for each state.
``states``: one row per state of the analysis (occupancy, first visit, detour, mean of each
feature as ``mean_<feature>``). Columns of parts not made yet (no metrics, no HMM) are absent.
Formats: parquet (pyarrow), csv, netCDF (the same tables as datasets on (seed, step) and
(hmm_state), with ``long_name`` and ``units``).
"""

from __future__ import annotations

import io

import pandas as pd
import xarray as xr

from vt_core.errors import VtError
from vt_core.names import SCALARS
from vt_core.report.datatree import open_study
from vt_core.storage.layout import RUNS, export_table, layout
from vt_core.storage.location import Location, location, write_bytes_atomic

FORMATS = {"parquet": "parquet", "csv": "csv", "netcdf": "nc"}  # format -> file extension


class ExportError(VtError, ValueError):
    """A study that cannot be exported as asked (unknown format, nothing trained yet)."""


def _node(tree: xr.DataTree, path: str) -> xr.Dataset | None:
    """The dataset at ``path`` of the tree (None where the study has no such part yet)."""
    try:
        return tree[path].to_dataset()
    except KeyError:
        return None


def _scalars(tree: xr.DataTree) -> pd.DataFrame:
    runs = tree[RUNS].to_dataset()
    names = sorted((str(v) for v, var in runs.data_vars.items() if var.dims == ("seed", "step")),
                   key=lambda n: (SCALARS.index(n) if n in SCALARS else len(SCALARS), n))
    df = runs[names].reset_coords(["epoch", "committed"]).to_dataframe()
    return df.loc[df["committed"], ["epoch", *names]]  # not a (seed, step) that seed never had


def _metrics(tree: xr.DataTree, have: list[str]) -> pd.DataFrame | None:
    ds = _node(tree, "metrics")
    if ds is None:
        return None
    cols = [ds["value"].reset_coords(drop=True).to_series().unstack("metric")]
    if "per_layer" in ds:
        per = ds["per_layer"].reset_coords(drop=True).to_series().unstack(["layer_metric", "layer"])
        per.columns = [f"{m}@{layer}" for m, layer in per.columns]
        cols.append(per.loc[:, per.notna().any()])
    df = pd.concat(cols, axis=1)
    df.columns = [str(c) for c in df.columns]
    return df[[c for c in df.columns if c not in have]]


def _states(tree: xr.DataTree) -> pd.DataFrame | None:
    ds = _node(tree, "states")
    if ds is None:
        return None
    df = ds["state"].to_series().where(lambda s: s >= 0).astype("Int64").to_frame("state")
    post = ds["posterior"].to_series().unstack("hmm_state")
    post.columns = [f"posterior_{int(k)}" for k in post.columns]
    return df.join(post)


def checkpoint_table(tree: xr.DataTree) -> pd.DataFrame:
    """One row per committed (seed, step): epoch, scalars, metrics, decoded state, posteriors."""
    if _node(tree, RUNS) is None:
        raise ExportError(f"{tree.attrs.get('location')}: no seed has a run store yet; run the study first")
    df = _scalars(tree)
    for part in (_metrics(tree, list(df.columns)), _states(tree)):
        if part is not None:
            df = df.join(part, how="left")
    return df.reset_index()


def state_table(tree: xr.DataTree) -> pd.DataFrame | None:
    """One row per state of the analysis; None before the study is analysed."""
    ds = _node(tree, "analysis/states")
    if ds is None:
        return None
    df = ds.drop_vars(["mean", "feature"]).to_dataframe()
    means = ds["mean"].to_series().unstack("feature")
    means.columns = [f"mean_{f}" for f in means.columns]
    return df.join(means).reset_index()


def _netcdf(df: pd.DataFrame, index: list[str], tree: xr.DataTree) -> bytes:
    """The table as a dataset on ``index``, each column with the attributes it has in the study."""
    ds = xr.Dataset.from_dataframe(df.set_index(index))
    known = {str(n): v.attrs for node in (RUNS, "analysis/states") if (part := _node(tree, node)) is not None
             for n, v in part.variables.items()}
    for name, var in ds.variables.items():
        name = str(name)
        if name in known:
            var.attrs = dict(known[name])
        elif name.startswith("posterior_"):
            var.attrs = {"long_name": f"posterior probability of state {name.removeprefix('posterior_')}",
                         "units": "probability"}
        elif name == "state":
            var.attrs = {"long_name": "decoded HMM state (Viterbi); NaN where not decoded"}
        else:
            var.attrs = {"long_name": name.replace("_", " ", 1) if name.startswith("mean_") else f"metric {name}"}
        if var.dtype == object and name in df and df[name].dtype == "Int64":  # netCDF has no nullable integers
            ds[name] = var.astype(float)
    return bytes(ds.to_netcdf())


def _encode(df: pd.DataFrame, fmt: str, index: list[str], tree: xr.DataTree) -> bytes:
    if fmt == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False, engine="pyarrow")
        return buf.getvalue()
    if fmt == "csv":
        return df.to_csv(index=False).encode("utf-8")
    return _netcdf(df, index, tree)


def export_study(study: str | Location, fmt: str = "parquet", out: str | Location | None = None) -> list[str]:
    """Write the study's tables in ``fmt`` to directory ``out`` (default ``STUDY/export``, a path
    or a URL); returns the files written."""
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    study = location(study)
    tree = open_study(study)
    directory = layout(study).exports if out is None else location(out)
    tables = {"checkpoints": (checkpoint_table(tree), ["seed", "step"]), "states": (state_table(tree), ["hmm_state"])}
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (df, index) in tables.items():
        if df is None:
            continue
        path = export_table(directory, name, FORMATS[fmt])
        write_bytes_atomic(path, _encode(df, fmt, index, tree))
        written.append(str(path))
    return written


def read_table(path: str | Location) -> pd.DataFrame:
    """A table :func:`export_study` wrote, by its extension (for tests and scripts)."""
    path = location(path)
    data = io.BytesIO(path.read_bytes())
    if path.suffix == ".parquet":
        return pd.read_parquet(data)
    if path.suffix == ".csv":
        return pd.read_csv(data)
    ds = xr.open_dataset(data)
    return ds.to_dataframe().reset_index()
