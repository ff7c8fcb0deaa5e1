"""One Zarr v3 store per seed, written one checkpoint at a time with an atomic commit.

Layout of ``runs/seed=NNNN.zarr``::

    step, epoch, train_loss, ...      (step)               scalars at the root, so that
                                                           xr.open_zarr(store) is a labelled Dataset
    weights/step, weights/<param>     (step, *shape)       e.g. weights/layers.0.weight
    activations/step, activations/<hook>  (step, probe, *shape)
    probe/x, probe/y                  the fixed probe batch
    seed                              0-d; with epoch, a coordinate of the scalars
    attrs: format_version, seed, config_hash, config (JSON), committed_steps, last_step, status, error,
           integrity

Every array carries ``long_name`` (and ``units``); dimensions are named for what they are
(:mod:`vt_core.storage.schema`, which also says how format 1 differs); chunks: :mod:`vt_core.storage.chunks`.
Beside it ``seed=NNNN.resume.pt``: model + optimizer + RNG state of the last commit.

Commit protocol: a batch of checkpoints' arrays is written first, then the resume state (tmp file +
rename), and ``committed_steps`` is bumped last. Readers only look at the first ``committed_steps``
rows; on resume anything past them is cut off. Every file is written through a temporary + rename
(an object store replaces an object whole), so a kill leaves the old or the new version of each
file. A change of the root attributes (a commit, a status) is one write of the root ``zarr.json``.
The store may be a local path or an fsspec URL (:mod:`vt_core.storage.location`).

Integrity: every chunk ends with a CRC32C checksum (``integrity = "crc32c"``), so a flipped bit or a
truncated chunk is an error when it is read, never a wrong number; a missing chunk would read as
the fill value, so :meth:`RunStore.check` names the chunks the committed rows need that are absent,
and :meth:`RunStore.verify` also reads every committed chunk (older stores without ``integrity``:
missing chunks are found, flipped bits are not).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import zarr

from vt_core.errors import VtError
from vt_core.runtime import process_alive
from vt_core.storage import resume_file
from vt_core.storage import schema as naming
from vt_core.storage.chunks import CHUNK_KEYS, SMALL_ROW_CHUNK, WRITE_ALL, DirectChunks, codecs, direct, rows_per_chunk
from vt_core.storage.layout import resume_path
from vt_core.storage.location import Location, location, url, zarr_options
from vt_core.storage.run_integrity import (
    CHECK_GROUP,
    ROW_KEY,
    STATUSES,
    ResumeDamagedError,
    check_store,
    row_crc,
    row_key,
    step_arrays,
)

if TYPE_CHECKING:  # torch and xarray are imported where used: the writer process needs neither
    import xarray as xr

#: rows an array of unknown final size grows by at least (:meth:`RunStore._put`)
GROW_ROWS = 1024

#: the ``integrity`` attribute of a store whose every chunk carries a CRC32C checksum
INTEGRITY = "crc32c"


@dataclass
class Checkpoint:
    """One checkpoint as the trainer yields it and the store writes it (host numpy arrays)."""

    index: int
    step: int
    epoch: float
    scalars: dict[str, float]
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    activations: dict[str, np.ndarray] = field(default_factory=dict)
    examples: dict[str, np.ndarray] = field(default_factory=dict)  # "loss": (2N,) per-example losses

    def nbytes(self) -> int:
        """Bytes of its weights and activations."""
        return sum(a.nbytes for a in self.weights.values()) + sum(a.nbytes for a in self.activations.values())


class StoreError(VtError, RuntimeError):
    """A run store is missing, belongs to another config, or is damaged."""


class RunStore:
    def __init__(self, path: str | Location, mode: str = "r+"):
        self.path = location(path)
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"no run store at {self.path}; run the study (vt run CONFIG) to create it")
        self.root = zarr.open_group(url(self.path), mode=mode, zarr_format=3, **zarr_options(self.path))
        self._arrays: dict[tuple[str, str], zarr.Array] = {}
        self._groups: dict[str, zarr.Group] = {}
        self._datasets: dict[tuple, xr.Dataset] = {}
        self._direct: dict[str, DirectChunks | None] = {}  # each written array's direct chunk writer
        self.hold_chunks = False  # keep chunks being filled in memory (a run's one writer: vt_core.storage.chunks)
        self._run_id = None  # read once, for the row checksums' key
        attrs = self.root.attrs
        self.format_version = int(attrs.get("format_version", 1))
        self._kinds: dict = dict(attrs.get("array_kinds") or {})
        self._loss = naming.loss_of(attrs)

    @classmethod
    def create(cls, path: str | Location, *, seed: int, config_hash: str, config: dict,
               roles: dict[str, str] | None = None, kinds: dict | None = None) -> RunStore:
        """A new, empty store. ``roles``: each parameter's role for the weight metrics
        (:mod:`vt_core.metrics.roles`); ``kinds``: each array's module kind, which names its
        dimensions (:func:`vt_core.models.hooks.array_kinds`). ``run_id`` is new for every store created:
        the identity of this training run, which metrics computed from it are keyed by (a retrained
        seed gets a new one, a resumed seed keeps it)."""
        path = location(path)
        root = zarr.open_group(url(path), mode="w-", zarr_format=3, **zarr_options(path))
        seed_arr = root.create_array("seed", shape=(), dtype=np.int64, dimension_names=(),
                                     attributes=naming.scalar_attrs("seed"), compressors=codecs(True),
                                     config=WRITE_ALL, chunk_key_encoding=CHUNK_KEYS)
        seed_arr[...] = seed
        root.update_attributes({  # one write of the root metadata
            "format_version": naming.FORMAT_VERSION, "seed": seed, "config_hash": config_hash,
            "config": json.dumps(config), "committed_steps": 0, "last_step": None, "status": "running",
            "error": None, "parameter_roles": roles, "run_id": secrets.randbits(62), "array_kinds": kinds,
            "integrity": INTEGRITY,
        })
        return cls(path)

    # -- attributes -------------------------------------------------------------------------------

    @property
    def attrs(self) -> dict:
        return dict(self.root.attrs)

    @property
    def committed(self) -> int:
        return int(self.root.attrs["committed_steps"])

    @property
    def status(self) -> str:
        return str(self.root.attrs["status"])

    def set_status(self, status: str, error: str | None = None, total_steps: int | None = None) -> None:
        """Record the status; a running seed also records which process trains it, and how many
        steps its training takes in all (``total_steps``: what the live watcher compares predictions with)."""
        assert status in STATUSES, status
        owner = {"host": socket.gethostname(), "pid": os.getpid()} if status == "running" else None
        more = {} if total_steps is None else {"total_steps": int(total_steps)}
        self.root.update_attributes({"status": status, "error": error, "owner": owner, **more})

    def effective_status(self) -> str:
        """``interrupted`` for a seed marked running whose process (on this host) is gone."""
        a = self.attrs
        owner = a.get("owner") or {}
        if a["status"] == "running" and owner.get("host") == socket.gethostname() and not process_alive(owner.get("pid")):
            return "interrupted"
        return str(a["status"])

    # -- writing ----------------------------------------------------------------------------------

    def _array(self, group: zarr.Group, name: str) -> zarr.Array | None:
        key = (group.path, name)
        if key not in self._arrays and name in group:
            self._arrays[key] = group[name].with_config(WRITE_ALL)
        return self._arrays.get(key)

    def _put(self, group: zarr.Group, name: str, rows: np.ndarray, start: int, dims: tuple[str, ...],
             capacity: int) -> zarr.Array:
        """Write ``rows`` (n, *shape) at rows start .. start + n of array ``group/name``."""
        rows = np.asarray(rows)
        shape = rows.shape[1:]
        arr = self._array(group, name)
        if arr is None:
            fill = np.nan if rows.dtype.kind == "f" else (0 if rows.dtype.kind == "u" else -1)
            # rows of a few bytes (scalars, step): 512 to a chunk, rewritten at each commit (<= 4 KiB);
            # others as many as fit in CHUNK_BYTES (the writer holds the chunk being filled)
            per_chunk = rows_per_chunk(rows.dtype.itemsize * int(np.prod(shape)))
            arr = group.create_array(
                name, shape=(self._rows_for(0, start + len(rows), capacity), *shape), chunks=(per_chunk, *shape),
                dtype=rows.dtype,
                fill_value=fill, dimension_names=dims, attributes=self._array_attrs(group.path, name),
                compressors=codecs(per_chunk == SMALL_ROW_CHUNK), config=WRITE_ALL, chunk_key_encoding=CHUNK_KEYS,
            )
            self._arrays[(group.path, name)] = arr
        if arr.shape[1:] != shape:
            raise StoreError(f"{self.path}: array {group.path}/{name} has shape {arr.shape[1:]}, got {shape}")
        end = start + len(rows)
        if arr.shape[0] < end:
            arr.resize((self._rows_for(arr.shape[0], end, capacity), *shape))
        key = arr.path
        if key not in self._direct:
            self._direct[key] = direct(arr, self.path, hold=self.hold_chunks)
        writer = self._direct[key]
        if writer is None:
            arr[start:end] = rows
        else:  # whole chunks in zarr's format without zarr's per-chunk cost (vt_core.storage.chunks)
            writer.put(rows, start)
        return arr

    @staticmethod
    def _rows_for(have: int, end: int, capacity: int) -> int:
        """Rows to give an array that must hold ``end``: the expected number at once, or (none
        expected: a recorder) double, by 1,024 at least. A resize is a zarr call (60% of the
        writer's time when each array doubled from 1); rows past the last commit are never read,
        and are trimmed when the run ends."""
        return capacity if capacity >= end else max(end, 2 * have, GROW_ROWS)

    def _array_attrs(self, group: str, name: str) -> dict:
        if self.format_version < 2:
            return {}
        attrs = naming.array_attrs(group or "", name, self._loss)
        if not group and name not in ("step", "epoch"):  # CF: epoch and seed label every scalar
            attrs["coordinates"] = "epoch seed"
        return attrs

    def _dims(self, group: str, name: str, ndim: int, lead: int) -> tuple[str, ...]:
        """Names of the dimensions of ``group/name`` after ``step`` and the ``lead`` ones."""
        if self.format_version < 2:
            return tuple(f"{name}.d{j}" for j in range(lead, ndim))
        return naming.dimension_names(group, name, ndim - lead, self._kinds.get(f"{group}/{name}"))

    def write(self, ckpt: Checkpoint, capacity: int = 0) -> None:
        """Write every array of one checkpoint at row ``ckpt.index`` (idempotent: rewrites the row)."""
        self.write_batch([ckpt], capacity)

    def write_batch(self, ckpts: list[Checkpoint], capacity: int = 0) -> None:
        """Write consecutive checkpoints with one zarr call per array (rows ``ckpts[0].index`` on).

        ``capacity`` (the expected number of checkpoints) sizes the arrays once; rows past the
        committed count are never read, and :meth:`truncate` trims them when the run ends."""
        i = ckpts[0].index
        if [c.index for c in ckpts] != list(range(i, i + len(ckpts))):
            raise StoreError(f"{self.path}: checkpoints {[c.index for c in ckpts]} are not consecutive")
        steps = np.array([c.step for c in ckpts], dtype=np.int64)
        written: list[tuple[zarr.Array, np.ndarray]] = [(self._put(self.root, "step", steps, i, ("step",), capacity),
                                                         steps)]
        epochs = np.array([c.epoch for c in ckpts], dtype=np.float64)
        written.append((self._put(self.root, "epoch", epochs, i, ("step",), capacity), epochs))
        for k in ckpts[0].scalars:
            values = np.array([c.scalars[k] for c in ckpts], dtype=np.float64)
            written.append((self._put(self.root, k, values, i, ("step",), capacity), values))
        for gname, lead in (("weights", ()), ("activations", ("probe",)), ("examples", ("example",))):
            arrays = getattr(ckpts[0], gname)
            if not arrays:
                continue
            g = self._group(gname)
            written.append((self._put(g, "step", steps, i, ("step",), capacity), steps))
            for name, value in arrays.items():
                extra = self._dims(gname, name, value.ndim, len(lead))
                rows = value[None] if len(ckpts) == 1 else np.stack([getattr(c, gname)[name] for c in ckpts])
                written.append((self._put(g, name, rows, i, ("step", *lead, *extra), capacity), rows))
        self._put_row_crcs(written, i, capacity)

    def _group(self, name: str) -> zarr.Group:
        if name not in self._groups:
            self._groups[name] = self.root.require_group(name)
        return self._groups[name]

    def _put_row_crcs(self, written: list[tuple[zarr.Array, np.ndarray]], start: int, capacity: int) -> None:
        """The CRC32C of every row just written, per array (``integrity/row_crc``, columns named in
        its attributes): what ties each checkpoint's bytes to its array and row, so that a chunk
        moved or replaced by another valid one is found (:func:`vt_core.storage.run_integrity.check_store`).
        Stores begun before this record existed do not start it midway."""
        if (start > 0 and (CHECK_GROUP, "row_crc") not in self._arrays  # known to exist: no zarr call
                and (CHECK_GROUP not in self.root or "row_crc" not in self.root[CHECK_GROUP])):
            return
        by = {a.path: (a, rows) for a, rows in written}
        old = self._array(self._group(CHECK_GROUP), "row_crc")
        cols = list(old.attrs["columns"]) if old is not None and "columns" in old.attrs else list(by)
        if set(cols) != set(by):
            raise StoreError(f"{self.path}: the arrays written ({sorted(by)}) are not those of earlier checkpoints")
        # keyed by this store's run id, the array and the row (a store begun with plain checksums goes on so)
        keyed = old is None or old.attrs.get("keyed") == ROW_KEY
        if keyed and self._run_id is None:
            self._run_id = self.attrs.get("run_id")
        crcs = np.array([[row_crc(r.astype(by[c][0].dtype, copy=False),
                                  row_key(self._run_id, c, start + i) if keyed else b"")
                          for i, r in enumerate(by[c][1])] for c in cols], dtype=np.uint32).T
        arr = self._put(self._group(CHECK_GROUP), "row_crc", crcs, start, ("step", "array"), capacity)
        if old is None:
            arr.update_attributes({"columns": cols, "keyed": ROW_KEY})

    def write_probe(self, x: np.ndarray, y: np.ndarray, lead: str = "probe") -> None:
        """The probe batch (``probe/x``, ``probe/y``); with ``lead="example"``, the fixed examples
        whose losses ``examples/loss`` records: ``x`` their index in their split
        (``probe/example_index``), ``y`` the split (``probe/example_split``: 0 training, 1 held-out)."""
        g = self.root.require_group("probe")
        for name, v in (("x", x), ("y", y)) if lead == "probe" else (("example_index", x), ("example_split", y)):
            v = np.asarray(v)
            dims = (lead, *(f"probe_{name}.d{j}" for j in range(1, v.ndim)))
            a = g.create_array(name, shape=v.shape, dtype=v.dtype, dimension_names=dims, overwrite=True,
                               attributes=self._array_attrs("probe", name), compressors=codecs(True),
                               config=WRITE_ALL, chunk_key_encoding=CHUNK_KEYS)
            a[...] = v

    def save_resume(self, state: dict | bytes | resume_file.Position) -> None:
        """Write the resume state atomically, sealed with its length and CRC32C (:mod:`vt_core.storage.resume_file`)."""
        resume_file.save(self.resume_path, state)

    def resume_problem(self, read: bool = True) -> str | None:
        """Why the resume file is damaged (None: it is not, or there is none)."""
        return resume_file.problem(self.resume_path, read)

    def load_resume(self) -> dict | None:
        """The resume state of the last commit (None: none written yet), verified; nothing unpickled."""
        try:
            return resume_file.load(self.resume_path)
        except ResumeDamagedError as err:
            raise StoreError(str(err)) from None

    @property
    def resume_path(self) -> Location:
        """Beside the store (seed=0003.resume.pt): a foreign file inside it makes zarr warn."""
        return resume_path(self.path)

    def commit(self, n: int, last_step: int) -> None:
        """Mark the first ``n`` rows as committed: the last write of a checkpoint, one write of the
        root metadata."""
        self.root.update_attributes({"committed_steps": n, "last_step": last_step})

    def trim(self) -> None:
        """Cut the arrays this object wrote to the committed rows, at a clean end of writing (no
        chunk past them was written, so none is looked for: a zarr resize otherwise tries to delete
        every chunk of the rows it drops, 1,000 of them for an array grown by :data:`GROW_ROWS`)."""
        import asyncio

        from zarr.core.sync import sync

        n = self.committed
        cut = [a.async_array.resize((n, *a.shape[1:]), delete_outside_chunks=False)
               for a in self._arrays.values() if a.ndim and a.shape[0] > n]

        async def all_of():  # one trip to zarr's event loop, not one per array
            await asyncio.gather(*cut)

        sync(all_of())
        self._arrays.clear()  # their metadata changed underneath (a later write opens them again)
        self._direct.clear()

    def truncate(self, n: int) -> None:
        """Drop every row past ``n`` (uncommitted leftovers of a killed run)."""
        self._direct.clear()  # chunks held in memory may hold the rows dropped here
        for arr in step_arrays(self):
            if arr.shape[0] > n:
                arr.resize((n, *arr.shape[1:]))

    # -- reading ----------------------------------------------------------------------------------

    def dataset(self, group: str | None = None, chunk_bytes: int = 8 * 2**20) -> xr.Dataset:
        """Lazy (dask) Dataset of the committed rows of ``group`` (None: the scalars at the root).

        Each dask chunk spans as many stored checkpoints as fit in ``chunk_bytes`` for the largest
        array, so that one task reads a block of checkpoints in one (concurrent) zarr call."""
        key = (group, chunk_bytes, self.committed)
        if key in self._datasets:  # opening is slow (metadata of every array): reuse while unchanged
            return self._datasets[key]
        import xarray as xr

        g = self.root if group is None else self.root[group]
        arrays = [a for _, a in g.arrays() if a.ndim]
        per_step = max([a.dtype.itemsize * int(np.prod(a.shape[1:])) for a in arrays] or [1])
        n = max(1, int(chunk_bytes // max(per_step, 1)))
        # whole stored chunks (powers of two), so that no chunk is decoded by two tasks; a chunk
        # larger than a task (small rows beside a large one) is split: those arrays are small
        stored = max([a.chunks[0] for a in arrays if a.chunks[0] <= n] or [1])
        n = n // stored * stored
        with warnings.catch_warnings():
            # the small-row arrays (step, scalars) are stored 512 rows to a chunk: splitting them
            # across blocks is intended (they are tiny), so zarr's advice does not apply
            warnings.filterwarnings("ignore", message="The specified chunks separate the stored chunks")
            ds = xr.open_zarr(url(self.path), group=group, consolidated=False, chunks={"step": n},
                              **zarr_options(self.path))
        self._datasets[key] = ds = ds.isel(step=slice(0, self.committed))
        return ds

    def check(self, read: bool = False, skip=None) -> list[str]:
        """Problems found (empty if none), each naming the array and checkpoint: attributes,
        metadata, a chunk missing from the committed rows, and with ``read`` a chunk that fails its
        checksum (:mod:`vt_core.storage.run_integrity`)."""
        return check_store(self, read=read, skip=skip)

    def validate(self) -> list[str]:
        """:meth:`check` reading every committed chunk back."""
        return self.check(read=True)
