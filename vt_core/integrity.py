"""Checking a run store: its root attributes, every array's metadata, the chunks its committed rows
need (:func:`check_store`, cheap: one listing per array), and every committed chunk's checksum
(:func:`verify_store`, which reads them all).

Each problem names the array and the checkpoint (row and step) it concerns, so that a user, or
:func:`vt_core.stages.train.repair_seeds`, knows what is damaged. A missing chunk is always a
problem: zarr would read it as the fill value, a silent NaN.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import zarr

RunStore = Any  # vt_core.store.RunStore (which imports this module)

STATUSES = ("running", "complete", "failed", "diverged")
GROUPS = ("weights", "activations", "examples")

#: attributes every run store has, with the types they must have
_ATTR_TYPES: dict[str, tuple[type, ...]] = {
    "seed": (int,), "config_hash": (str,), "config": (str, dict), "committed_steps": (int,),
    "status": (str,), "run_id": (int,),
}


def check_attrs(attrs: dict) -> list[str]:
    """Problems with a store's root attributes (missing, wrong type, out of range)."""
    out = []
    for key, types in _ATTR_TYPES.items():
        value = attrs.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            out.append(f"root attribute {key!r} is {value!r}, not a {types[0].__name__}")
    n = attrs.get("committed_steps")
    if isinstance(n, int) and n < 0:
        out.append(f"root attribute 'committed_steps' is negative ({n})")
    if isinstance(attrs.get("status"), str) and attrs["status"] not in STATUSES:
        out.append(f"root attribute 'status' is {attrs['status']!r}, not one of {list(STATUSES)}")
    last = attrs.get("last_step")
    if last is not None and (not isinstance(last, int) or isinstance(last, bool) or last < 0):
        out.append(f"root attribute 'last_step' is {last!r}, not a step")
    if isinstance(n, int) and n > 0 and last is None:
        out.append(f"root attribute 'last_step' is missing although {n} checkpoints are committed")
    return out


def _chunk_rows(arr: zarr.Array, n: int):
    """``(first row, last row, keys)`` of each chunk along ``step`` that rows ``< n`` live in."""
    c0 = arr.chunks[0]
    rest = [range(math.ceil(s / c)) for s, c in zip(arr.shape[1:], arr.chunks[1:], strict=True)]
    for i in range(math.ceil(n / c0)):
        keys = [f"{arr.path}/{arr.metadata.encode_chunk_key((i, *r))}" for r in itertools.product(*rest)]
        yield i * c0, min(n, (i + 1) * c0) - 1, keys


def _listing(arr: zarr.Array) -> set[str]:
    from zarr.core.sync import sync

    async def collect():
        return {k async for k in arr.store_path.store.list_prefix(f"{arr.path}/")}

    return sync(collect())


def _where(first: int, last: int, steps: np.ndarray | None) -> str:
    def one(i: int) -> str:
        return f"checkpoint {i}" + (f" (step {int(steps[i])})" if steps is not None and i < len(steps) else "")

    return one(first) if first == last else f"checkpoints {first}-{last}" + (
        f" (steps {int(steps[first])}-{int(steps[last])})" if steps is not None and last < len(steps) else "")


def _why(err: Exception) -> str:
    if "checksum" in str(err):
        return "fails its checksum (the stored bytes changed)"
    return f"cannot be read ({type(err).__name__}: {str(err)[:100]})"


def step_arrays(store: RunStore) -> list[zarr.Array]:
    """Every array with a ``step`` dimension: the scalars at the root, weights, activations."""
    out = [a for _, a in store.root.arrays() if a.ndim]  # not the 0-d seed
    for g in GROUPS:
        if g in store.root:
            out += [a for _, a in store.root[g].arrays()]
    return out


def _steps(store: RunStore, n: int) -> np.ndarray | None:
    try:
        return np.asarray(store.root["step"][:n])
    except Exception:  # noqa: BLE001 - the step array's own damage is reported by the checks
        return None


def check_store(store: RunStore, read: bool = False) -> list[str]:
    """Every problem of ``store`` (empty if none). Without ``read``: attributes, metadata, shapes and
    the presence of every chunk the committed rows need; with ``read`` also each committed chunk is
    read back, so that a checksum mismatch or an undecodable chunk is found."""
    problems = check_attrs(store.attrs)
    if problems:
        return problems
    n = store.committed
    steps = _steps(store, n)
    if n and "step" not in store.root:
        problems.append("array 'step' is missing")
    for arr in step_arrays(store):
        problems += _check_array(arr, n, steps, read)
    if "seed" in store.root:  # 0-d (format 2): its value must be the store's seed
        try:
            if int(store.root["seed"][...]) != store.attrs["seed"]:
                problems.append(f"array seed holds {int(store.root['seed'][...])}, not the store's seed")
        except Exception as err:  # noqa: BLE001
            problems.append(f"array seed: {_why(err)}")
    if "probe" in store.root and store.attrs.get("integrity"):  # the fixed probe batch (older stores
        for _, arr in store.root["probe"].arrays():  # skipped chunks equal to its fill value, 0)
            problems += _check_array(arr, arr.shape[0], None, read)
    return problems


def _check_array(arr: zarr.Array, n: int, steps: np.ndarray | None, read: bool) -> list[str]:
    name = arr.path
    if arr.shape[0] < n:
        return [f"array {name} has {arr.shape[0]} rows, fewer than the {n} committed"]
    if n == 0 or 0 in arr.shape[1:]:
        return []
    present = _listing(arr)
    chunks = list(_chunk_rows(arr, n))
    out = [f"array {name}: {_where(first, last, steps)}: chunk missing"
           for first, last, keys in chunks if not all(k in present for k in keys)]
    if read and not out:
        out = _read_back(arr, chunks, steps)
    return out


_BLOCK_BYTES = 64 * 2**20


def _read_back(arr: zarr.Array, chunks: list, steps: np.ndarray | None) -> list[str]:
    """Read the committed rows in blocks of <= 64 MiB (one concurrent zarr call each); a block that
    fails is read again chunk by chunk to name the checkpoints that are damaged."""
    row_bytes = arr.dtype.itemsize * int(np.prod(arr.shape[1:]))
    per_block = max(1, _BLOCK_BYTES // max(row_bytes * arr.chunks[0], 1))
    out = []
    for b in range(0, len(chunks), per_block):
        block = chunks[b : b + per_block]
        try:
            arr[block[0][0] : block[-1][1] + 1]
            continue
        except Exception:  # noqa: BLE001 - located below, chunk by chunk
            pass
        for first, last, _ in block:
            try:
                arr[first : last + 1]
            except Exception as err:  # noqa: BLE001 - every kind of damage is reported
                out.append(f"array {arr.path}: {_where(first, last, steps)}: {_why(err)}")
    return out


def verify_store(store: RunStore) -> list[str]:
    """:func:`check_store` with every committed chunk read back (its checksum verified)."""
    return check_store(store, read=True)


def chunk_problems(arr: zarr.Array, name: str, labels: list | None = None, dim: str = "row") -> list[str]:
    """Every chunk of a whole array present and readable (checksums verified); damage is placed by
    the ``labels`` of the first dimension (e.g. the seeds of metrics.zarr) or its index."""
    if not arr.shape or 0 in arr.shape:
        return []

    def where(first: int, last: int) -> str:
        names = [str(labels[i]) if labels is not None and i < len(labels) else str(i) for i in range(first, last + 1)]
        return f"{dim} {names[0]}" if first == last else f"{dim}s {names[0]}-{names[-1]}"

    present = _listing(arr)
    out = []
    for first, last, keys in _chunk_rows(arr, arr.shape[0]):
        if not all(k in present for k in keys):
            out.append(f"array {name}: {where(first, last)}: chunk missing")
            continue
        try:
            arr[first : last + 1]
        except Exception as err:  # noqa: BLE001
            out.append(f"array {name}: {where(first, last)}: {_why(err)}")
    return out
