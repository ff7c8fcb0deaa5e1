"""Weight metrics computed eagerly, a block of checkpoints at a time: memory that does not grow
with the run or the model beyond one checkpoint, and none of a lazy graph's fixed cost.

The lazy path (:func:`vt_core.metrics.compute.seed_metrics`) lifted each kernel over blocks of
checkpoints with dask; for a large model it held several checkpoints at once (a concatenated
float32 copy for the medians, float64 copies of the initial weights, dask's read-ahead) and paid
~0.3 s of scheduling per block. Here, for each block (as many checkpoints as fit in
:data:`BLOCK_BYTES`, at least one):

* each weight parameter's rows are read into one reused buffer (their chunk checksums verified by
  zarr, and each row compared with the CRC32C recorded when it was committed), their matrices'
  metrics computed by the same kernels as the lazy path (:func:`vt_core.metrics.kernels._matrix_kernel`:
  float64, singular values from the Gram matrix), the singular values of same-shaped matrices
  batched through torch on CUDA when ``device`` is one;
* the model-wide statistics are combined from per-parameter pieces: the mean and variance by
  Chan's formula from each parameter's count, mean and squared deviations (float64), the medians
  by partitioning the buffer in place (the lower middle value under ``paper_code`` as
  ``torch.median``, the midpoint under ``paper_text``), the distances to the initial weights
  parameter by parameter;
* so what is held is the block's weights in their stored dtype (a large model: one checkpoint's
  weight matrices, without its embeddings), the initial weights of a small model when a distance is
  asked (a large model's are read again, parameter by parameter), and one parameter's float64
  temporaries.

Equal to the lazy path to ~1e-13 relative and to the paper's code at 1e-10 on every architecture
(``tests/metrics/test_stream.py``, ``tests/metrics/test_paper_code.py``).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from vt_core.config.study_config import StudyConfig
from vt_core.errors import VtError
from vt_core.metrics.cells import Cells
from vt_core.metrics.kernels import _conv_kernel, _matrix_kernel
from vt_core.metrics.params import MetricsComputeError, matrix_layers, store_roles, stored_shapes, weight_arrays
from vt_core.metrics.registry import Metric, get
from vt_core.metrics.weights import device_singular_values, matrix_stack
from vt_core.storage.chunks import DirectChunks, direct
from vt_core.storage.run_integrity import CHECK_GROUP, ROW_KEY, row_crc, row_key
from vt_core.storage.run_store import RunStore

if TYPE_CHECKING:
    import xarray as xr

#: the metric kinds computed here; activations and recorded scalars stay on the lazy path
KINDS = ("matrix", "weights", "biases", "init")


#: a checkpoint's weights from which on the metric stage spreads a seed over tasks of a few
#: checkpoints (:func:`vt_core.stages.metrics.spread`)
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
    """Reads committed rows of a run store's arrays, each checked against the CRC32C recorded at its
    commit. Kept while a store grows (:meth:`update` with the store opened again: the live watcher),
    an array is opened again only when the rows asked for lie past the shape it was opened with,
    and only the new commits' checksums are read. ``direct``: chunks read straight from their files
    (:meth:`vt_core.storage.chunks.DirectChunks.get`: the watcher's few new rows, where zarr's
    per-call cost was most of a look); the metric stage reads through zarr (large chunks, where
    that cost is nothing and zarr's buffers are what the memory figures measure)."""

    def __init__(self, store: RunStore, direct: bool = False):
        self.arrays: dict[str, Any] = {}
        self.readers: dict[str, tuple[Any, DirectChunks | None]] = {}  # by array: the array it reads
        self.crcs = np.zeros((0, 0), dtype=np.uint32)
        self.columns: dict[str, int] = {}
        self.key: Callable[[str, int], bytes] = lambda a, r: b""
        self.direct, self.path = direct, store.path
        self.checked = CHECK_GROUP in store.root and "row_crc" in store.root[CHECK_GROUP]
        self.update(store)
        if self.checked and self._array(f"{CHECK_GROUP}/row_crc", 0).attrs.get("keyed") == ROW_KEY:
            run_id = store.attrs.get("run_id")
            self.key = lambda a, r: row_key(run_id, a, r)

    def update(self, store: RunStore) -> None:
        """The store opened again (more rows may be committed; its training run the same)."""
        self.root, self.committed = store.root, store.committed
        if self.checked and len(self.crcs) < self.committed:
            arr, new = self._read(f"{CHECK_GROUP}/row_crc", len(self.crcs), self.committed)
            self.crcs = new if not len(self.crcs) else np.concatenate([self.crcs, new])
            self.columns = {c: j for j, c in enumerate(arr.attrs.get("columns") or [])}

    def _array(self, path: str, rows: int):
        arr = self.arrays.get(path)
        if arr is None or arr.shape[0] < rows:
            arr = self.arrays[path] = self.root[path]
        return arr

    def _read(self, path: str, lo: int, hi: int) -> tuple[Any, np.ndarray]:
        arr = self._array(path, hi)
        if self.direct:
            if path not in self.readers or self.readers[path][0] is not arr:
                self.readers[path] = (arr, direct(arr, self.path))
            reader = self.readers[path][1]
            if reader is not None:
                return arr, reader.get(lo, hi)
        return arr, np.asarray(arr[lo:hi])

    def weights(self, name: str):
        """The array of a weight parameter (its shape past the step axis does not change)."""
        return self._array(f"weights/{name}", 0)

    def root_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """``rows`` of one of the scalars at the store's root (``step``, ``epoch``, ...), each checked."""
        return self(name, rows, root=True)

    def __call__(self, name: str, rows: np.ndarray, root: bool = False) -> np.ndarray:
        """``rows`` (increasing positions) of one array, (len(rows), *shape), each row checked."""
        lo, hi = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 0)
        arr, data = self._read(name if root else f"weights/{name}", lo, hi)
        if hi - lo != len(rows):
            data = data[np.asarray(rows) - lo]
        j = self.columns.get(arr.path)
        if j is not None:
            for r, row in zip(rows, data):
                if r < len(self.crcs) and row_crc(row, self.key(arr.path, int(r))) != self.crcs[r, j]:
                    raise RowChecksumError(f"array {arr.path}: row {r} does not match the checksum recorded at its commit")
        return data


class _Moments:
    """Per row of a block: count, mean and sum of squared deviations, combined parameter by
    parameter (Chan et al.), in float64."""

    def __init__(self, rows: int):
        self.n, self.mean, self.m2 = 0, np.zeros(rows), np.zeros(rows)

    def add(self, x: np.ndarray) -> None:
        d = x.reshape(x.shape[0], -1).astype(np.float64)
        k = d.shape[1]
        if not k:
            return
        mean = d.mean(axis=1)
        d -= mean[:, None]
        m2 = (d * d).sum(axis=1)  # row by row, whatever the block (einsum's order depends on it)
        delta, n = mean - self.mean, self.n + k
        self.mean = self.mean + delta * k / n
        self.m2 = self.m2 + m2 + delta * delta * self.n * k / n
        self.n = n

    def var(self, ddof: int) -> np.ndarray:
        return self.m2 / (self.n - ddof) if self.n - ddof > 0 else np.full(len(self.m2), np.nan)


def median(flat: np.ndarray, convention: str) -> np.ndarray:
    """The median of each row of ``flat`` (B, n; the stored dtype), partitioned in place: the lower
    middle value under ``paper_code`` (as ``torch.median``), the midpoint in float64 under ``paper_text``."""
    n = flat.shape[-1]
    if n == 0:
        return np.full(flat.shape[0], np.nan)
    lo, hi = (n - 1) // 2, n // 2
    flat.partition([lo, hi] if hi != lo and convention != "paper_code" else lo, axis=-1)
    if convention == "paper_code":
        return flat[:, lo].astype(np.float64)
    return (flat[:, lo].astype(np.float64) + flat[:, hi].astype(np.float64)) / 2


def _flat_fallback(m: Metric, parts: list[np.ndarray], init, settings: dict) -> np.ndarray:
    """A plugin metric over all weights (or biases) concatenated, as the lazy path computes it."""
    flat = np.concatenate([p.reshape(p.shape[0], -1) for p in parts], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if init is not None:
            return np.asarray(m(flat, np.concatenate([p.ravel() for p in init]).astype(np.float64)[None], **settings))
        return np.asarray(m(flat, **settings))


def _flat_values(ms: list[Metric], parts: list[np.ndarray], init,
                 settings: dict, rows: int) -> dict[str, np.ndarray]:
    """The ``weights``/``biases``/``init`` metrics ``ms`` over ``parts`` (a block's parameters, views
    into one buffer), per row, the built-in ones without concatenating them; the medians are left
    to the caller (they reorder the buffer)."""
    if not parts:
        return {m.name: np.full(rows, np.nan) for m in ms}
    ddof = 1 if settings["convention"] == "paper_code" else 0
    moments: _Moments | None = None
    out: dict[str, np.ndarray] = {}
    for m in ms:
        if m.name in ("mean_w", "mean_b", "var_w", "var_b"):
            if moments is None:
                moments = _Moments(rows)
                for p in parts:
                    moments.add(p)
            out[m.name] = moments.mean if m.name.startswith("mean") else moments.var(ddof)
        elif m.name in ("dist_init_l2", "dist_init_l1") and init is not None:
            total = np.zeros(rows)
            for p, p0 in zip(parts, init):
                d = p.reshape(rows, -1).astype(np.float64) - p0.reshape(1, -1).astype(np.float64)
                total += (d * d).sum(axis=1) if m.name == "dist_init_l2" else np.abs(d).sum(axis=1)
            out[m.name] = np.sqrt(total) if m.name == "dist_init_l2" else total
        elif m.name not in ("median_w", "median_b"):
            out[m.name] = _flat_fallback(m, parts, init if m.reads == "init" else None, settings)
    return out


#: checkpoints' weights read and computed at once, at most (at least one checkpoint)
BLOCK_BYTES = 64 * 2**20


class _Initial:
    """The first checkpoint's weight parameters, for the distances to them: held when they fit in
    :data:`BLOCK_BYTES`, else read again parameter by parameter each time (a large model's initial
    weights held beside its current ones were 0.75 checkpoints more of peak memory at 410M)."""

    def __init__(self, rows: _Rows, names: list[str], nbytes: int):
        self.rows, self.names = rows, names
        self.held = [self._read(p) for p in names] if nbytes <= BLOCK_BYTES else None

    def _read(self, name: str) -> np.ndarray:
        return self.rows(name, np.array([0]))[0]

    def __iter__(self):
        if self.held is not None:
            yield from self.held
        else:
            for p in self.names:
                yield self._read(p)


class _Buffer:
    """A block of checkpoints' parameters read into one contiguous array (B, all entries), each
    parameter a view of it (B, *shape): the model-wide median partitions it in place."""

    def __init__(self, rows: _Rows, names: list[str], block: int):
        arrays = [rows.weights(n) for n in names]
        self.names, self.rows = names, rows
        self.shapes = [tuple(a.shape[1:]) for a in arrays]
        sizes = [int(np.prod(s)) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.dtype = np.result_type(*[a.dtype for a in arrays]) if arrays else np.dtype(np.float32)
        self.flat = np.empty((block, int(self.offsets[-1])), dtype=self.dtype)

    def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        self.flat = self.flat[:len(rows)] if len(rows) <= len(self.flat) else np.empty((len(rows), self.flat.shape[1]),
                                                                                      dtype=self.dtype)
        out = {}
        for k, (name, shape) in enumerate(zip(self.names, self.shapes)):
            view = self.flat[:, self.offsets[k]:self.offsets[k + 1]]
            view[:] = self.rows(name, rows).reshape(len(rows), -1)
            out[name] = view.reshape(len(rows), *shape)
        return out


def _matrix_rows(cur: dict[str, np.ndarray], layers: list, mm: list[Metric], settings: dict,
                 device: str | None, rows: int) -> np.ndarray:
    """Each checkpoint's and matrix's (layer's) values of the matrix metrics ``mm`` (B, layer, metric)."""
    if not mm:
        return np.zeros((rows, 0, 0))
    sv = device_singular_values(cur, layers, device) if device is not None and any(m.needs_sv for m in mm) else {}
    out = []
    for p, role, labels in layers:
        if role == "kernel":
            vals = _conv_kernel(mm, settings, cur[p].ndim - 1)(cur[p])
            out.append(np.broadcast_to(vals[:, None], (rows, len(labels), len(mm))))
        else:
            kern = _matrix_kernel(mm, settings, sv=(lambda w, s=sv.get(p): s)) if p in sv else _matrix_kernel(mm, settings)
            out.append(kern(matrix_stack(cur[p], role)))
    return np.concatenate(out, axis=1)


def _bad_rows(parts) -> np.ndarray | None:
    bad = None
    for a in parts:
        b = ~np.isfinite(a.reshape(a.shape[0], -1).sum(axis=1, dtype=np.float64))
        bad = b if bad is None else bad | b
    return bad


def _block(wbuf: _Buffer, bbuf: _Buffer, rows: np.ndarray, init, layers: list,
           metrics: dict[str, list[Metric]], settings: dict, device: str | None) -> tuple:
    """A block of checkpoints: (per-layer matrix values (B, layer, metric), model values by metric
    (B,), nonfinite (B,))."""
    cur, biases = wbuf.read(rows), bbuf.read(rows)
    b = len(rows)
    bad = _bad_rows([*cur.values(), *biases.values()])
    if bad is None:
        bad = np.zeros(b, dtype=bool)
    mm = metrics["matrix"]
    per_layer = _matrix_rows(cur, layers, mm, settings, device, b)
    mats, bias_parts = list(cur.values()), list(biases.values())
    values = _flat_values(metrics["init"], mats, init, settings, b)
    values |= _flat_values(metrics["weights"], mats, None, settings, b)
    values |= _flat_values(metrics["biases"], bias_parts, None, settings, b)
    for m in metrics["weights"] + metrics["biases"]:  # last: they reorder the buffers
        if m.name in ("median_w", "median_b"):
            buf = wbuf if m.reads == "weights" else bbuf
            values[m.name] = median(buf.flat, settings["convention"]) if buf.flat.shape[1] else np.full(b, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a metric NaN on every layer: NaN, no warning
        for j, m in enumerate(mm):
            values[m.name] = np.nanmean(per_layer[:, :, j], axis=1) if per_layer.shape[1] else np.full(b, np.nan)
    for k in values:  # a checkpoint whose weights hold NaN/inf has no weight metrics
        values[k] = np.where(bad, np.nan, np.asarray(values[k], dtype=np.float64))
    return per_layer, values, bad


def weight_metrics(store: RunStore, config: StudyConfig, names: list[str], index: np.ndarray,
                   device: str | None = None) -> xr.Dataset:
    """The weight metrics ``names`` (kinds :data:`KINDS`, and recorded scalars) of one seed at the
    committed checkpoints ``index``, as :func:`vt_core.metrics.compute.seed_metrics` gives them (value, per_layer,
    nonfinite, epoch), computed eagerly a checkpoint at a time. ``device``: where singular values
    are computed (None: numpy, one matrix at a time; a torch device, "cuda" or "cpu": torch, batched)."""
    return WeightMetrics(store, config, names)(store, index, device).dataset()


class WeightMetrics:
    """:func:`weight_metrics` with what a training run's store decides (roles, matrices, layers)
    worked out once: the live watcher computes a few new checkpoints at a time, again and again
    (opening the weights as a Dataset for each was most of its cost). Call it with the store
    opened again (its committed rows grow) while its ``run_id`` is the one it was built from."""

    def __init__(self, store: RunStore, config: StudyConfig, names: list[str], direct: bool = False):
        self.names, self.ms = list(names), [get(n) for n in names]
        self.metrics = {k: [m for m in self.ms if m.reads == k] for k in KINDS}
        self.settings = {"convention": config.metrics.convention, "threshold": config.metrics.dormant_threshold}
        roles = store_roles(store, config)
        shapes = stored_shapes(store)
        self.mat_names, self.bias_names = weight_arrays(shapes, config, roles)
        if not self.mat_names:
            raise MetricsComputeError(f"{store.path}: no weight matrices left after the module rules and "
                                      f"metrics.exclude={config.metrics.exclude} (`vt hooks CONFIG` shows the roles)")
        self.layers = matrix_layers(shapes, self.mat_names, roles)
        self.labels = [label for _, _, ls in self.layers for label in ls]
        self.recorded = {m.name for m in self.ms if m.reads == "scalar" and m.name in store.root}
        self.rows: _Rows | None = None  # kept while the store grows
        self.direct = direct  # chunks read from their files (_Rows)

    def __call__(self, store: RunStore, index: np.ndarray, device: str | None = None) -> Cells:
        return_freed_memory()
        ms, metrics, layers = self.ms, self.metrics, self.layers
        if self.rows is None:
            self.rows = _Rows(store, self.direct)
        else:
            self.rows.update(store)
        rows, index = self.rows, np.asarray(index, dtype=int)
        params = self.mat_names + self.bias_names
        size = {p: rows.weights(p).dtype.itemsize * int(np.prod(rows.weights(p).shape[1:])) for p in params}
        init = _Initial(rows, self.mat_names, sum(size[p] for p in self.mat_names)) if metrics["init"] else None
        block = max(1, min(len(index), BLOCK_BYTES // max(sum(size.values()), 1)))
        wbuf, bbuf = _Buffer(rows, self.mat_names, block), _Buffer(rows, self.bias_names, block)
        value = np.full((len(index), len(ms)), np.nan)
        per_layer = np.full((len(index), len(metrics["matrix"]), len(self.labels)), np.nan)
        nonfinite = np.zeros(len(index), dtype=bool)
        for j in range(0, len(index), block):
            pl, vals, nonfinite[j:j + block] = _block(wbuf, bbuf, index[j:j + block], init, layers, metrics,
                                                      self.settings, device)
            if pl.shape[1]:
                per_layer[j:j + block] = pl.transpose(0, 2, 1)
            if ms:
                value[j:j + block] = np.stack([vals.get(m.name, np.full(len(pl), np.nan)) for m in ms], axis=1)
        for k, m in enumerate(ms):  # recorded scalars, as they were recorded (a nonfinite weight masks none)
            if m.reads == "scalar":
                value[:, k] = rows.root_rows(m.name, index) if m.name in self.recorded else np.nan
        return Cells(step=rows.root_rows("step", index), epoch=rows.root_rows("epoch", index).astype(np.float64),
                     metric=self.names, value=value, nonfinite=nonfinite,
                     layer_metric=[m.name for m in metrics["matrix"]], layer=self.labels,
                     per_layer=per_layer if metrics["matrix"] else None)
