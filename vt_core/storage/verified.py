"""What was verified stays verified: each finished store's manifest of verified chunk files.

Reading every committed chunk back (:func:`vt_core.storage.run_integrity.check_store` with
``read``) is what lets vt reuse a store it did not just write; at the paper's size it took 55 s
for a `vt run` with nothing to do. After a store is read back in full and found intact, the
stamp of every file it holds — size, modification time (ns) and its last 4 bytes (the chunk's
stored CRC32C) — is written beside it (``runs/seed=NNNN.verified.json``, checksummed), taken
*before* the read, so a file changed while it was read is not recorded as verified. The next
check reads back only the chunks whose stamp differs (or that are new); every other check (the
metadata, every chunk present, the row checksums' own array) still runs.

What a stamp cannot see: bytes changed behind vt's back with the size, the modification time and
the stored CRC32C all restored. ``vt validate STUDY --full`` reads everything again (and renews the
manifest); and the metric stage verifies each row it reads against the CRC32C recorded at its
commit (:mod:`vt_core.metrics.stream`), so such a change is still an error where it is used.

Local stores only: on an object store every check reads back in full.
"""

from __future__ import annotations

import os
from pathlib import Path

from vt_core.storage.layout import verified_path
from vt_core.storage.location import DamagedFileError, Location, is_remote, read_json, write_json_atomic

VERSION = 1
Stamp = tuple[int, int, str]


def stamps(store_path: Location) -> dict[str, Stamp] | None:
    """Every data file of a local store (zarr.json metadata aside: always read) -> its stamp; None
    for a remote store."""
    if is_remote(store_path):
        return None
    root = Path(str(store_path))
    out: dict[str, Stamp] = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name == "zarr.json":
                continue
            p = Path(dirpath) / name
            try:
                st = p.stat()
                with open(p, "rb") as f:
                    f.seek(max(st.st_size - 4, 0))
                    tail = f.read(4).hex()
            except OSError:
                continue  # gone: the check reports a missing chunk
            out[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns, tail)
    return out


def load(store_path: Location, run_id, committed: int) -> dict[str, Stamp]:
    """The verified stamps of this store (its run id and commit count), or {} (none, another run's,
    another commit's, or a damaged manifest: then everything is read back)."""
    path = verified_path(store_path)
    if is_remote(store_path) or not path.is_file():
        return {}
    try:
        doc = read_json(path)
    except DamagedFileError:
        return {}
    if doc.get("version") != VERSION or doc.get("run_id") != run_id or doc.get("committed") != committed:
        return {}
    chunks = doc.get("chunks")
    if not isinstance(chunks, dict):
        return {}
    return {k: tuple(v) for k, v in chunks.items() if isinstance(v, list) and len(v) == 3}  # type: ignore[misc]


def save(store_path: Location, run_id, committed: int, verified: dict[str, Stamp]) -> None:
    """Record ``verified`` (stamps taken before a full read that found nothing); a read-only study
    is left as it is."""
    try:
        write_json_atomic(verified_path(store_path), {"version": VERSION, "run_id": run_id, "committed": committed,
                                                      "chunks": {k: list(v) for k, v in verified.items()}})
    except OSError:
        pass


def forget(store_path: Location) -> None:
    try:
        os.unlink(str(verified_path(store_path)))
    except OSError:
        pass


def unchanged(verified: dict[str, Stamp], now: dict[str, Stamp] | None):
    """A predicate on chunk keys (relative to the store): verified before and its stamp the same now."""
    if not verified or now is None:
        return lambda key: False
    return lambda key: key in verified and now.get(key) == verified[key]
