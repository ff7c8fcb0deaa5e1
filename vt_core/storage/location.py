"""Where a study lives: a local directory, or any fsspec URL (``memory://``, ``s3://``, ``gs://``, ...).

A local path (or a ``file://`` URL) is a plain :class:`pathlib.Path`; anything else is a
``universal_pathlib`` :class:`~upath.UPath`, which has the same API (``/``, ``exists``,
``read_text``, ``glob``, ...). The few operations whose meaning differs live here, so that the
rest of vt is written once:

* an **atomic write** is a temporary file + rename on a local disk, and a single put elsewhere
  (an object store replaces an object whole: readers see the old or the new version);
* the study lock is an **exclusive create** (``O_EXCL`` locally, fsspec's ``"xb"`` mode elsewhere:
  conditional puts on S3 in s3fs >= 2024.12);
* **moving a Zarr store** (metrics.zarr swapped in) is a directory rename locally; elsewhere a
  copy in which the root ``zarr.json`` comes last and goes first, so that a store without it is
  "absent" and a half-moved store is never read.

Zarr and xarray take the string form (:func:`url`): a path, or the URL.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from vt_core.errors import VtError

if TYPE_CHECKING:  # a local Path or a UPath: the same API
    from upath import UPath as Location
else:
    Location = Union[Path, "UPath"]  # noqa: F821 - upath is imported when a URL is used


class Opened:
    """A study already opened (:class:`vt_core.storage.handle.Study`): :func:`location` returns its
    location as it is, so a handle can go wherever a path or URL can."""

    location: Location


class LocationError(VtError, ValueError):
    """A study location that cannot be used (unknown URL scheme, missing fsspec backend)."""


def scheme(value: str | os.PathLike) -> str | None:
    """The URL scheme of ``value`` (None for a plain path)."""
    s = str(value)
    return s.split("://", 1)[0].lower() if "://" in s else None


def check_url(value: str) -> str:
    """``value`` unchanged if it is a path or a URL whose fsspec backend is installed; else a
    :class:`LocationError` naming the scheme and the package to install."""
    proto = scheme(value)
    if proto in (None, "file", "local"):
        return value
    import fsspec

    try:
        fsspec.get_filesystem_class(proto)
    except ValueError:
        raise LocationError(f"{value!r}: unknown URL scheme {proto!r}; use a local path or an fsspec URL "
                            f"(memory://, s3://, gs://, az://, ...)") from None
    except ImportError as err:
        raise LocationError(f"{value!r}: {err} (pip install it beside vt)") from None
    return value


def local_path(value: str) -> str:
    """The path of a ``file://`` URL (unchanged for a plain path)."""
    if scheme(value) not in ("file", "local"):
        return value
    from urllib.parse import unquote, urlparse

    u = urlparse(value)
    if u.netloc not in ("", "localhost"):
        raise LocationError(f"{value!r}: a file:// URL names this machine (file:///path)")
    return unquote(u.path)


def location(value: str | os.PathLike) -> Location:
    """A local :class:`Path` (``~`` expanded, absolute) or a :class:`UPath` for a URL (an opened
    study's own location)."""
    if isinstance(value, Opened):
        return value.location
    if is_remote(value):
        return value  # already a UPath
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"a study location is a path or a URL string, not {type(value).__name__}")
    proto = scheme(value)
    if proto in (None, "file", "local"):
        return Path(local_path(str(value))).expanduser().resolve()
    from upath import UPath

    check_url(str(value))
    return UPath(str(value), **_fs_options(proto))


# object stores whose fsspec backends cache directory listings (and take ``use_listings_cache``)
_LISTING_CACHES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"}


def _fs_options(proto: str) -> dict:
    """No directory-listing cache on shared object stores: other processes (writers, workers on
    other machines) add files, and a cached listing would hide them (s3fs answers ``exists`` from
    it). Other backends get no options (some pass unknown ones on, e.g. sftp to paramiko)."""
    return {"use_listings_cache": False} if proto in _LISTING_CACHES else {}


def zarr_options(p: Location) -> dict:
    """Keyword arguments for zarr / xarray beside :func:`url` (the same filesystem options)."""
    opts = _fs_options(p.protocol) if is_remote(p) else {}
    return {"storage_options": opts} if opts else {}


def is_remote(p) -> bool:
    """True for a UPath on a non-local filesystem. Imports nothing: before upath is imported (by
    :func:`location` for a URL) no UPath exists, so a process with local paths only (the writer
    child) never loads upath and fsspec."""
    upath = sys.modules.get("upath")
    return upath is not None and isinstance(p, upath.UPath) and not isinstance(p, Path)


def url(p: Location) -> str:
    """The string zarr, xarray and the tasks take: the local path, or the URL."""
    return str(p)


def same_process_only(p: Location) -> bool:
    """memory:// lives in one process: other processes (writer, workers, a cluster) cannot see it."""
    return is_remote(p) and p.protocol == "memory"


def write_bytes_atomic(path: Location, data: bytes) -> None:
    """Readers see the old content or the new one, never a part."""
    if is_remote(path):
        path.write_bytes(data)  # one put: replaced whole
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_text_atomic(path: Location, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


#: the key of a JSON document's own checksum (:func:`write_json_atomic`, :func:`read_json`)
CHECKSUM_KEY = "sha256"


class DamagedFileError(VtError, ValueError):
    """A file of a study cannot be read, or its content does not match its checksum."""


def _digest(doc: dict) -> str:
    body = {k: v for k, v in doc.items() if k != CHECKSUM_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=True).encode()).hexdigest()


def write_json_atomic(path: Location, obj) -> None:
    """The one JSON writer for study files: parents created, numpy values as plain numbers and
    lists, a document (a dict) carrying the SHA-256 of its own content under ``sha256``, written
    atomically (:func:`write_bytes_atomic`). :func:`read_json` checks it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(json.dumps(obj, default=_jsonable))  # as a reader will see it
    if isinstance(doc, dict):
        doc[CHECKSUM_KEY] = _digest(doc)
    write_text_atomic(path, json.dumps(doc, indent=2))


def read_json(path: Location, fix: str = "") -> dict:
    """A JSON document written by :func:`write_json_atomic`, verified: unreadable, not a document, or
    not matching its checksum is a :class:`DamagedFileError` naming the file (and ``fix``, what
    repairs it). Documents from before checksums (no ``sha256``) are read as they are."""
    hint = f"; {fix}" if fix else ""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise DamagedFileError(f"{path} is missing{hint}") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DamagedFileError(f"{path} is damaged (not readable JSON: {str(err)[:100]}){hint}") from None
    if not isinstance(doc, dict):
        raise DamagedFileError(f"{path} is damaged (not a JSON object){hint}")
    if CHECKSUM_KEY in doc and doc[CHECKSUM_KEY] != _digest(doc):
        raise DamagedFileError(f"{path} is damaged (its content does not match its checksum){hint}")
    doc.pop(CHECKSUM_KEY, None)
    return doc


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def create_exclusive(path: Location, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists (then False). Atomic test-and-create; locally
    the file appears with its content (written aside, then hard-linked), so it is never seen empty
    or half-written (a full disk fails before it exists)."""
    if is_remote(path):
        try:
            with path.fs.open(path.path, "xb") as f:
                f.write(data)
        except FileExistsError:
            return False
        return True
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def remove_tree(path: Location) -> None:
    """Delete a directory (or file) and everything below it; nothing there is fine."""
    if is_remote(path):
        if path.exists():
            path.fs.rm(path.path, recursive=True)
        return
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def move_store(src: Location, dst: Location) -> None:
    """Put Zarr store ``src`` in place of ``dst`` (which may exist); ``src`` is gone afterwards.

    Locally two renames (the old store moved aside first). Elsewhere there is no rename: the old
    store's root ``zarr.json`` is deleted first (from then on the store reads as absent), then the
    rest; every file of ``src`` is copied with the root ``zarr.json`` last (until then, absent)."""
    if not is_remote(src):
        aside = dst.with_name(dst.name + ".old")
        remove_tree(aside)
        if dst.exists():
            dst.rename(aside)
        src.rename(dst)
        remove_tree(aside)
        return
    fs = src.fs
    root_meta = dst.path.rstrip("/") + "/zarr.json"
    if fs.exists(root_meta):
        fs.rm(root_meta)
    if fs.exists(dst.path):
        fs.rm(dst.path, recursive=True)
    base = src.path.rstrip("/")
    files = sorted(f for f in fs.find(base) if f != base + "/zarr.json")
    for f in files:
        fs.copy(f, dst.path.rstrip("/") + f[len(base):])
    fs.copy(base + "/zarr.json", root_meta)
    fs.rm(base, recursive=True)


def save_npz(path: Location, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buf.getvalue())


def load_npz(path: Location) -> dict[str, np.ndarray]:
    """Every array of an .npz file, in memory (never unpickled: ``allow_pickle=False``)."""
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as d:
        return {k: d[k] for k in d.files}
