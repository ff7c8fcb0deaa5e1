"""Weight metrics one checkpoint at a time, one parameter at a time: memory that does not grow
with the model's checkpoint count, and none of a lazy graph's fixed cost per block.

The lazy path (:func:`vt_core.metrics.compute.seed_metrics`) lifts each kernel over blocks of
checkpoints with dask; for a large model it held several checkpoints at once (a concatenated
float32 copy for the medians, float64 copies of the initial weights, dask's read-ahead) and paid
~0.3 s of scheduling per block. Here, for each checkpoint:

* each weight parameter's row is read (its chunk checksum verified by zarr, and the row compared
  with the CRC32C recorded when it was committed), its matrices' metrics computed by the same
  kernels as the lazy path (:func:`vt_core.metrics.compute._matrix_kernel` numerics: float64,
  singular values from the Gram matrix), the singular values of same-shaped matrices batched
  through torch on CUDA when ``device`` is one;
* the model-wide statistics are combined from per-parameter pieces: the mean and variance by
  Chan's formula from each parameter's count, mean and squared deviations (float64), the median
  by an exact radix selection on the stored values' bits (two passes of 65,536 counts over the
  parameters held for the checkpoint; the lower middle value under ``paper_code`` as
  ``torch.median``, the midpoint under ``paper_text``), the distances to the initial weights
  parameter by parameter;
* so what is held is the checkpoint's weight matrices in their stored dtype, the initial ones when
  a distance is asked, and one parameter's float64 temporaries.

Equal to the lazy path to ~1e-13 relative (``tests/metrics/test_stream.py``).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

import numpy as np
import xarray as xr

from vt_core.config.study_config import StudyConfig
from vt_core.errors import VtError
from vt_core.metrics.compute import _conv_kernel, _matrix_kernel, matrix_layers, store_roles, weight_arrays
from vt_core.metrics.registry import Metric, get
from vt_core.metrics.weights import SV_THRESHOLD
from vt_core.storage.run_integrity import CHECK_GROUP, ROW_KEY, row_crc, row_key
from vt_core.storage.run_store import RunStore

#: the metric kinds computed here; activations and recorded scalars stay on the lazy path
KINDS = ("matrix", "weights", "biases", "init")


#: a checkpoint's weights from which on they are computed here rather than by the lazy path (whose
#: blocks of many small checkpoints cost less per checkpoint than a row read per parameter here)
STREAM_MIN_BYTES = 16 * 2**20


def worth_streaming(store: RunStore) -> bool:
    g = store.root["weights"]
    return sum(a.dtype.itemsize * int(np.prod(a.shape[1:])) for _, a in g.arrays()) >= STREAM_MIN_BYTES


def return_freed_memory() -> None:
    """Make glibc give every allocation of 1 MiB or more back to the system when it is freed (its
    default raises that threshold to 32 MiB as large blocks are freed, after which a checkpoint's
    freed arrays stay resident, fragmented, and the next checkpoint's are added: 2.6 checkpoints of
    peak memory for a 70M series instead of 1.5, `benchmarks/pythia_scale.py`). No-op elsewhere."""
    import ctypes
    import ctypes.util

    global _RETURNED
    if _RETURNED or not sys.platform.startswith("linux"):
        return
    _RETURNED = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 2**20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


_RETURNED = False


class RowChecksumError(VtError, RuntimeError):
    """A row read for the metrics does not match the CRC32C recorded at its commit."""


class _Rows:
    """Reads one committed row of a weight array, checked against its recorded CRC32C."""

    def __init__(self, store: RunStore):
        self.group = store.root["weights"]
        self.crcs: dict[str, np.ndarray] = {}
        self.key: Callable[[str, int], bytes] = lambda a, r: b""
        if CHECK_GROUP in store.root and "row_crc" in store.root[CHECK_GROUP]:
            arr = store.root[CHECK_GROUP]["row_crc"]
            table = np.asarray(arr[:store.committed])
            self.crcs = {c: table[:, j] for j, c in enumerate(arr.attrs.get("columns") or [])}
            if arr.attrs.get("keyed") == ROW_KEY:
                run_id = store.attrs.get("run_id")
                self.key = lambda a, r: row_key(run_id, a, r)

    def __call__(self, name: str, row: int) -> np.ndarray:
        arr = self.group[name]
        data = np.asarray(arr[row])
        crcs = self.crcs.get(arr.path)
        if crcs is not None and row < len(crcs) and row_crc(data, self.key(arr.path, row)) != crcs[row]:
            raise RowChecksumError(f"array {arr.path}: row {row} does not match the checksum recorded at its commit")
        return data


def _matrices(w: np.ndarray, role: str) -> np.ndarray:
    """One parameter's row as a stack of matrices (layer, a, b), as :func:`compute._as_matrices`."""
    if role == "matrix" and w.ndim == 2:
        return w[None]
    if role == "merged_heads":
        return w.reshape(1, -1, w.shape[-1])
    return w.reshape(-1, *w.shape[-2:])


def _torch_singular_values(stack: np.ndarray, device: str) -> np.ndarray:
    """Singular values of a stack of same-shaped matrices on ``device`` (float64, the Gram form of
    :func:`vt_core.metrics.weights.singular_values`), in one batched call."""
    import torch

    w = torch.from_numpy(np.ascontiguousarray(stack)).to(device=device, dtype=torch.float64)
    gram = w @ w.mT if w.shape[-2] <= w.shape[-1] else w.mT @ w
    s = torch.linalg.eigvalsh(gram).flip(-1).clamp(min=0).sqrt().cpu().numpy()
    return np.where(s < SV_THRESHOLD, 0.0, s)


#: same-shaped matrices sent to the device in one call, at most (their stored bytes)
DEVICE_BATCH_BYTES = 64 * 2**20


class _Moments:
    """Count, mean and sum of squared deviations, combined parameter by parameter (Chan et al.)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        k = x.size
        if not k:
            return
        d = x.astype(np.float64).ravel()
        mean = float(d.mean())
        d -= mean
        m2 = float(d @ d)
        delta, n = mean - self.mean, self.n + k
        self.mean += delta * k / n
        self.m2 += m2 + delta * delta * self.n * k / n
        self.n = n

    def var(self, ddof: int) -> float:
        return self.m2 / (self.n - ddof) if self.n - ddof > 0 else float("nan")


def median(flat: np.ndarray, convention: str) -> float:
    """The median of ``flat`` (1-D, the stored dtype), partitioned in place: the lower middle value
    under ``paper_code`` (as ``torch.median``), the midpoint in float64 under ``paper_text``."""
    n = flat.size
    if n == 0:
        return float("nan")
    lo, hi = (n - 1) // 2, n // 2
    flat.partition([lo, hi] if hi != lo and convention != "paper_code" else lo)
    return float(flat[lo]) if convention == "paper_code" else (float(flat[lo]) + float(flat[hi])) / 2


def _flat_fallback(m: Metric, parts: list[np.ndarray], init: list[np.ndarray] | None, settings: dict) -> float:
    """A plugin metric over all weights (or biases) concatenated, as the lazy path computes it."""
    flat = np.concatenate([p.ravel() for p in parts])[None]
    with np.errstate(divide="ignore", invalid="ignore"):
        if init is not None:
            return float(m(flat, np.concatenate([p.ravel() for p in init]).astype(np.float64)[None], **settings)[0])
        return float(m(flat, **settings)[0])


def _flat_values(ms: list[Metric], parts: list[np.ndarray], init: list[np.ndarray] | None,
                 settings: dict) -> dict[str, float]:
    """The ``weights``/``biases``/``init`` metrics ``ms`` over ``parts`` (a checkpoint's parameters,
    views into one buffer), the built-in ones without concatenating them; the medians are left to
    :func:`_medians` (they reorder the buffer)."""
    if not parts:
        return {m.name: float("nan") for m in ms}
    ddof = 1 if settings["convention"] == "paper_code" else 0
    moments: _Moments | None = None
    out = {}
    for m in ms:
        if m.name in ("mean_w", "mean_b", "var_w", "var_b"):
            if moments is None:
                moments = _Moments()
                for p in parts:
                    moments.add(p)
            out[m.name] = moments.mean if m.name.startswith("mean") else moments.var(ddof)
        elif m.name in ("dist_init_l2", "dist_init_l1") and init is not None:
            total = 0.0
            for p, p0 in zip(parts, init):
                d = (p.astype(np.float64) - p0.astype(np.float64)).ravel()
                total += float(d @ d) if m.name == "dist_init_l2" else float(np.abs(d).sum())
            out[m.name] = float(np.sqrt(total)) if m.name == "dist_init_l2" else total
        elif m.name not in ("median_w", "median_b"):
            out[m.name] = _flat_fallback(m, parts, init if m.reads == "init" else None, settings)
    return out


def _device_sv(cur: dict[str, np.ndarray], layers: list, device: str) -> dict[str, np.ndarray]:
    """Every matrix parameter's singular values, same-shaped matrices batched into one call."""
    by_shape: dict[tuple, list[tuple[str, np.ndarray]]] = {}
    for p, role, _ in layers:
        if role == "kernel":
            continue
        st = _matrices(cur[p], role)
        finite = np.isfinite(st.sum(axis=(-2, -1), dtype=np.float64))
        by_shape.setdefault(st.shape[1:], []).append((p, np.where(finite[:, None, None], st, 0)))
    out = {}
    for group in by_shape.values():
        batch: list[tuple[str, np.ndarray]] = []
        for k, item in enumerate(group):
            batch.append(item)
            if k == len(group) - 1 or sum(st.nbytes for _, st in batch) + group[k + 1][1].nbytes > DEVICE_BATCH_BYTES:
                s, i = _torch_singular_values(np.concatenate([st for _, st in batch]), device), 0
                for p, st in batch:
                    out[p], i = s[i:i + len(st)], i + len(st)
                batch = []
    return out


class _Buffer:
    """One checkpoint's parameters read into one contiguous array (reused from checkpoint to
    checkpoint), each parameter a view of it: the model-wide median partitions it in place."""

    def __init__(self, rows: _Rows, names: list[str]):
        arrays = [rows.group[n] for n in names]
        self.names, self.rows = names, rows
        self.shapes = [tuple(a.shape[1:]) for a in arrays]
        sizes = [int(np.prod(s)) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        dtype = np.result_type(*[a.dtype for a in arrays]) if arrays else np.float32
        self.flat = np.empty(int(self.offsets[-1]), dtype=dtype)

    def read(self, row: int) -> dict[str, np.ndarray]:
        out = {}
        for k, (name, shape) in enumerate(zip(self.names, self.shapes)):
            view = self.flat[self.offsets[k]:self.offsets[k + 1]]
            view[:] = self.rows(name, row).ravel()
            out[name] = view.reshape(shape)
        return out


def _matrix_rows(cur: dict[str, np.ndarray], layers: list, mm: list[Metric], settings: dict,
                 device: str | None) -> np.ndarray:
    """Each matrix's (layer's) values of the matrix metrics ``mm`` (layer, metric)."""
    if not mm:
        return np.zeros((0, 0))
    use_device = device is not None and any(m.needs_sv for m in mm)
    sv = _device_sv(cur, layers, device) if use_device and device is not None else {}
    rows = []
    for p, role, labels in layers:
        if role == "kernel":
            rows.append(np.broadcast_to(_conv_kernel(mm, settings, cur[p].ndim)(cur[p][None])[0], (len(labels), len(mm))))
        else:
            kern = _matrix_kernel(mm, settings, sv=(lambda w, s=sv.get(p): s)) if p in sv else _matrix_kernel(mm, settings)
            rows.append(kern(_matrices(cur[p], role)))
    return np.concatenate(rows)


def _checkpoint(wbuf: _Buffer, bbuf: _Buffer, row: int, init: list[np.ndarray] | None, layers: list,
                metrics: dict[str, list[Metric]], settings: dict, device: str | None) -> tuple:
    """One checkpoint: (per-layer matrix values (layer, metric), model values by metric, nonfinite)."""
    cur, biases = wbuf.read(row), bbuf.read(row)
    bad = any(not np.isfinite(a.sum(dtype=np.float64)) for a in [*cur.values(), *biases.values()])
    mm = metrics["matrix"]
    per_layer = _matrix_rows(cur, layers, mm, settings, device)
    values: dict[str, float] = {}
    if not bad:
        mats, bias_parts = list(cur.values()), list(biases.values())
        values |= _flat_values(metrics["init"], mats, init, settings)
        values |= _flat_values(metrics["weights"], mats, None, settings)
        values |= _flat_values(metrics["biases"], bias_parts, None, settings)
        for m in metrics["weights"] + metrics["biases"]:  # last: they reorder the buffers
            if m.name in ("median_w", "median_b"):
                flat = (wbuf if m.reads == "weights" else bbuf).flat
                values[m.name] = median(flat, settings["convention"]) if flat.size else float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a metric NaN on every layer: NaN, no warning
        for j, m in enumerate(mm):
            values[m.name] = float("nan") if bad or not len(per_layer) else float(np.nanmean(per_layer[:, j]))
    return per_layer, values, bad


def weight_metrics(store: RunStore, config: StudyConfig, names: list[str], index: np.ndarray,
                   device: str | None = None) -> xr.Dataset:
    """The weight metrics ``names`` (kinds :data:`KINDS`) of one seed at the committed checkpoints
    ``index``, as :func:`vt_core.metrics.compute.seed_metrics` gives them (value, per_layer,
    nonfinite, epoch), computed eagerly a checkpoint at a time. ``device``: where singular values
    are computed (None: numpy, one matrix at a time; a torch device, "cuda" or "cpu": torch, batched)."""
    return_freed_memory()
    ms = [get(n) for n in names]
    metrics = {k: [m for m in ms if m.reads == k] for k in KINDS}
    settings = {"convention": config.metrics.convention, "threshold": config.metrics.dormant_threshold}
    roles = store_roles(store, config)
    wds = store.dataset("weights")
    mat_names, bias_names = weight_arrays(wds, config, roles)
    layers = matrix_layers(wds, mat_names, roles)
    labels = [label for _, _, ls in layers for label in ls]
    rows = _Rows(store)
    init = [rows(p, 0) for p in mat_names] if metrics["init"] else None
    wbuf, bbuf = _Buffer(rows, mat_names), _Buffer(rows, bias_names)
    index = np.asarray(index, dtype=int)
    value = np.full((len(index), len(ms)), np.nan)
    per_layer = np.full((len(index), len(metrics["matrix"]), len(labels)), np.nan)
    nonfinite = np.zeros(len(index), dtype=bool)
    for j, i in enumerate(index):
        pl, vals, nonfinite[j] = _checkpoint(wbuf, bbuf, int(i), init, layers, metrics, settings, device)
        if len(pl):
            per_layer[j] = pl.T
        value[j] = [vals.get(m.name, np.nan) for m in ms]
    scalars = store.dataset().isel(step=index)
    ds = xr.Dataset({"value": (("step", "metric"), value), "nonfinite": (("step",), nonfinite),
                     "epoch": (("step",), scalars["epoch"].values.astype(np.float64))},
                    coords={"step": scalars["step"].values, "metric": names})
    if metrics["matrix"]:
        ds["per_layer"] = xr.DataArray(per_layer, dims=("step", "layer_metric", "layer"),
                                       coords={"layer_metric": [m.name for m in metrics["matrix"]], "layer": labels})
    return ds
