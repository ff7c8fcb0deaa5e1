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
import struct
from typing import TYPE_CHECKING, Any

import numpy as np

from vt_core.errors import VtError

if TYPE_CHECKING:
    import zarr

RunStore = Any  # vt_core.storage.run_store.RunStore (which imports this module)

STATUSES = ("running", "complete", "failed", "diverged", "interrupted", "stopped-early")
GROUPS = ("weights", "activations", "examples")
#: the group of ``row_crc`` (step, array): each written row's CRC32C, columns named in its attributes
CHECK_GROUP = "integrity"


#: how a store's row checksums are keyed (the ``keyed`` attribute of ``integrity/row_crc``); stores
#: without it (written before) have plain CRC32Cs of the bytes
ROW_KEY = "run_id:array:row"


def row_key(run_id, array: str, row: int) -> bytes:
    """What a row's checksum is bound to: the store's own run id, the array and the row. Bytes
    moved in from another store (or another array, or another row), even with the checksums that
    were valid there, then fail here."""
    return f"{run_id}:{array}:{row}\n".encode()


def row_crc(row: np.ndarray, key: bytes = b"") -> int:
    """The CRC32C of ``key`` followed by one row's bytes (C order, the stored dtype)."""
    import google_crc32c

    data = np.ascontiguousarray(row).tobytes()
    return int(google_crc32c.extend(google_crc32c.value(key), data) if key else google_crc32c.value(data))

#: attributes every run store has, with the types they must have
_ATTR_TYPES: dict[str, tuple[type, ...]] = {
    "seed": (int,), "config_hash": (str,), "config": (str, dict), "committed_steps": (int,),
    "status": (str,), "run_id": (int,),
}


class ResumeDamagedError(VtError, ValueError):
    """A resume file is truncated or does not match its checksum."""


_TRAILER_MAGIC = b"VTRESUME1"
_ZIP_END = b"PK\x05\x06"  # a zip's end-of-central-directory record: how torch.save's files end


def seal(data: bytes) -> bytes:
    """``data`` + magic + its length (8 bytes) + its CRC32C (4 bytes): a resume file that can be
    checked on its own (a kill between it and the commit leaves a newer, valid one)."""
    import google_crc32c

    return data + _TRAILER_MAGIC + struct.pack("<QI", len(data), google_crc32c.value(data))


def check_trailer(tail: bytes, size: int, name: str) -> int:
    """The payload length a sealed file's trailer gives (damage: a :class:`ResumeDamagedError`); files
    written before the trailer existed (no magic) are taken as they are."""
    n = len(_TRAILER_MAGIC) + 12
    if len(tail) < n or tail[-n:-12] != _TRAILER_MAGIC:
        if _ZIP_END in tail[-64:]:  # an unsealed torch file (a zip) from an older vt: unchecked
            return size
        raise ResumeDamagedError(f"resume file {name} is damaged (truncated or overwritten: no valid trailer)")
    length, _ = struct.unpack("<QI", tail[-12:])
    if length != size - n:
        raise ResumeDamagedError(f"resume file {name} is damaged (it has {size - n} bytes of state, its trailer "
                                 f"says {length})")
    return length


def unseal(data: bytes, name: str) -> bytes:
    """The state bytes of a sealed resume file, verified."""
    import google_crc32c

    length = check_trailer(data[-64:], len(data), name)
    if length == len(data):
        return data  # unsealed (older vt): torch.load decides
    (crc,) = struct.unpack("<I", data[-4:])
    if google_crc32c.value(data[:length]) != crc:
        raise ResumeDamagedError(f"resume file {name} is damaged (its content does not match its checksum)")
    return data[:length]


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
    for g in (*GROUPS, CHECK_GROUP):
        if g in store.root:
            out += [a for _, a in store.root[g].arrays()]
    return out


def _steps(store: RunStore, n: int) -> np.ndarray | None:
    try:
        return np.asarray(store.root["step"][:n])
    except Exception:  # noqa: BLE001 - the step array's own damage is reported by the checks
        return None


def check_store(store: RunStore, read: bool = False, skip=None) -> list[str]:
    """Every problem of ``store`` (empty if none). Without ``read``: attributes, metadata, shapes, the
    arrays its commits recorded, and the presence of every chunk the committed rows need; with
    ``read`` also each committed chunk is read back, its checksum verified, and each row compared
    with the CRC32C recorded when it was written (a chunk moved to another row is found). ``skip``:
    a predicate on chunk keys whose chunks need not be read back (verified before and unchanged
    since: :mod:`vt_core.storage.verified`)."""
    problems = check_attrs(store.attrs)
    if problems:
        return problems
    n = store.committed
    try:
        arrays = step_arrays(store)
    except Exception:  # noqa: BLE001 - some array's metadata is damaged: name it
        return _unreadable_metadata(store)
    steps = _steps(store, n)
    if n and "step" not in store.root:
        problems.append("array 'step' is missing")
    recorded, run_id = _recorded(store, n, read)
    have = {a.path for a in arrays}
    problems += [f"array {p} is missing (its commits recorded it)" for p in recorded if p not in have]
    for arr in arrays:
        problems += _check_array(arr, n, steps, read, recorded.get(arr.path), run_id, skip)
    if "seed" in store.root:  # 0-d (format 2): its value must be the store's seed
        try:
            if int(store.root["seed"][...]) != store.attrs["seed"]:
                problems.append(f"array seed holds {int(store.root['seed'][...])}, not the store's seed")
        except Exception as err:  # noqa: BLE001
            problems.append(f"array seed: {_why(err)}")
    if "probe" in store.root and store.attrs.get("integrity"):  # the fixed probe batch (older stores
        for _, arr in store.root["probe"].arrays():  # skipped chunks equal to its fill value, 0)
            problems += _check_array(arr, arr.shape[0], None, read, skip=skip)
    return problems


def _recorded(store: RunStore, n: int, read: bool) -> tuple[dict[str, np.ndarray | None], object]:
    """The arrays the commits recorded, with (``read``) each committed row's CRC32C; and the run id
    the checksums are keyed with (None: plain CRC32Cs, a store written before they were keyed)."""
    if CHECK_GROUP not in store.root or "row_crc" not in store.root[CHECK_GROUP]:
        return {}, None
    arr = store.root[CHECK_GROUP]["row_crc"]
    cols = list(arr.attrs.get("columns") or [])
    try:
        crcs = np.asarray(arr[:n]) if read else None
    except Exception:  # noqa: BLE001 - its own chunks are checked like any array's
        crcs = None
    keyed = store.attrs.get("run_id") if arr.attrs.get("keyed") == ROW_KEY else None
    return {c: (None if crcs is None else crcs[:, j]) for j, c in enumerate(cols)}, keyed


def _unreadable_metadata(store: RunStore) -> list[str]:
    import json

    out = []
    for meta in sorted(store.path.rglob("zarr.json"), key=str):
        try:
            json.loads(meta.read_bytes())
        except (OSError, ValueError) as err:
            rel = str(meta)[len(str(store.path)) + 1 :].removesuffix("/zarr.json").removesuffix("zarr.json")
            out.append(f"metadata of {('array or group ' + rel) if rel else 'the store'} (zarr.json) is "
                       f"unreadable ({type(err).__name__})")
    return out or ["the store's arrays cannot be listed (damaged metadata)"]


def _check_array(arr: zarr.Array, n: int, steps: np.ndarray | None, read: bool,
                 crcs: np.ndarray | None = None, run_id=None, skip=None) -> list[str]:
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
        todo = [c for c in chunks if skip is None or not all(skip(k) for k in c[2])]
        for run in _contiguous(todo):  # read back what was not verified before, or changed since
            out += _read_back(arr, run, steps, crcs, run_id)
    return out


def _contiguous(chunks: list) -> list[list]:
    """``chunks`` ((first, last, keys), in order) cut where one does not follow the previous."""
    runs: list[list] = []
    for c in chunks:
        if runs and runs[-1][-1][1] + 1 == c[0]:
            runs[-1].append(c)
        else:
            runs.append([c])
    return runs


_BLOCK_BYTES = 64 * 2**20


def _key(arr: zarr.Array, run_id):
    """Row -> the key its checksum was computed with (no key for a store of plain checksums)."""
    return (lambda row: row_key(run_id, arr.path, row)) if run_id is not None else (lambda row: b"")


def _read_back(arr: zarr.Array, chunks: list, steps: np.ndarray | None, crcs: np.ndarray | None,
               run_id=None) -> list[str]:
    """Read the committed rows in blocks of <= 64 MiB (one concurrent zarr call each), each row
    compared with its recorded CRC32C (``crcs``); a block that fails to read is read again chunk by
    chunk to name the checkpoints that are damaged."""
    row_bytes = arr.dtype.itemsize * int(np.prod(arr.shape[1:]))
    per_block = max(1, _BLOCK_BYTES // max(row_bytes * arr.chunks[0], 1))
    key = _key(arr, run_id)
    out = []
    for b in range(0, len(chunks), per_block):
        block = chunks[b : b + per_block]
        first = block[0][0]
        try:
            data = arr[first : block[-1][1] + 1]
        except Exception:  # noqa: BLE001 - located below, chunk by chunk
            data = None
        if data is not None:
            if crcs is not None:
                out += [f"array {arr.path}: {_where(first + r, first + r, steps)}: does not match the checksum "
                        f"recorded at its commit (moved, replaced or rewritten)"
                        for r in range(len(data))
                        if first + r < len(crcs) and row_crc(data[r], key(first + r)) != crcs[first + r]]
            continue
        for first, last, keys in block:
            try:
                arr[first : last + 1]
            except Exception as err:  # noqa: BLE001 - every kind of damage is reported
                rows = _locate(arr, first, last, keys, crcs, key) if first < last else None
                if rows:
                    out += [f"array {arr.path}: {_where(r, r, steps)}: {why} (in the chunk of "
                            f"{_where(first, last, None)})" for r, why in rows]
                else:
                    out.append(f"array {arr.path}: {_where(first, last, steps)}: {_why(err)}")
    return out


def _locate(arr: zarr.Array, first: int, last: int, keys: list[str], crcs: np.ndarray | None,
            key=lambda row: b"") -> list | None:
    """The rows of a chunk of several checkpoints that fails to read which are themselves damaged:
    each row's stored bytes compared with the CRC32C recorded at its commit (uncompressed chunks
    only: raw bytes, then the chunk's checksum). ``[(row, why), ...]``, or None where that cannot
    be told (a compressed chunk, no row checksums, or every row intact though the chunk is not)."""
    from zarr.codecs import BytesCodec, Crc32cCodec

    codecs = list(arr.metadata.codecs)
    if crcs is None or len(keys) != 1 or [type(c) for c in codecs] != [BytesCodec, Crc32cCodec]:
        return None
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    try:
        buf = sync(arr.store_path.store.get(keys[0], prototype=default_buffer_prototype()))
    except Exception:  # noqa: BLE001 - unreadable: named as a whole
        return None
    if buf is None:
        return None
    body = buf.to_bytes()[:-4]
    dtype = np.dtype(arr.dtype).newbyteorder("<") if np.dtype(arr.dtype).itemsize > 1 else np.dtype(arr.dtype)
    row_bytes = dtype.itemsize * int(np.prod(arr.shape[1:]))
    c0 = first - first % arr.chunks[0]
    out = []
    for r in range(first, min(last, len(crcs) - 1) + 1):
        lo = (r - c0) * row_bytes
        if lo + row_bytes > len(body):
            out.append((r, "cut off (the chunk file is truncated)"))
        elif row_crc(np.frombuffer(body, dtype=dtype, count=row_bytes // dtype.itemsize, offset=lo), key(r)) != crcs[r]:
            out.append((r, "fails its checksum (the stored bytes changed)"))
    return out or None


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
