"""Study locations: local paths and fsspec URLs (memory:// here), and the operations that differ."""

import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest

from vt_core.storage.location import (
    LocationError,
    check_url,
    create_exclusive,
    is_remote,
    load_npz,
    location,
    move_store,
    remove_tree,
    same_process_only,
    save_npz,
    url,
    write_text_atomic,
)


@pytest.fixture
def mem():
    """A fresh memory:// folder (fsspec's memory filesystem is one per process)."""
    root = f"memory://vt-tests/{uuid.uuid4().hex}"
    yield location(root)
    fsspec.filesystem("memory").rm(root.removeprefix("memory://"), recursive=True) if location(root).exists() else None


def test_paths_stay_paths_and_urls_become_upaths(tmp_path):
    p = location(str(tmp_path / "a"))
    assert type(p) is type(Path()) and not is_remote(p)
    assert location(f"file://{tmp_path}/a") == p
    m = location("memory://x/y")
    assert is_remote(m) and same_process_only(m) and url(m / "z") == "memory://x/y/z"
    assert location(m) is m
    with pytest.raises(LocationError, match="unknown URL scheme 'nosuch'"):
        location("nosuch://x")
    with pytest.raises(LocationError, match="pip install it beside vt"):
        check_url("sftp://host/x")  # paramiko is not installed
    with pytest.raises(LocationError, match="names this machine"):
        location("file://otherhost/x")


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_exclusive_create_and_atomic_writes(kind, tmp_path, mem):
    root = location(str(tmp_path)) if kind == "local" else mem
    root.mkdir(parents=True, exist_ok=True)
    lock = root / ".lock"
    assert create_exclusive(lock, b"me")
    assert not create_exclusive(lock, b"you")
    assert lock.read_bytes() == b"me"
    write_text_atomic(root / "a.json", "1")
    write_text_atomic(root / "a.json", "2")
    assert (root / "a.json").read_text() == "2"
    assert sorted(p.name for p in root.iterdir()) == [".lock", "a.json"]  # no temporary left behind
    save_npz(root / "sub" / "p.npz", x=np.arange(3), name=np.array("diag"))
    d = load_npz(root / "sub" / "p.npz")
    assert d["x"].tolist() == [0, 1, 2] and str(d["name"]) == "diag"
    remove_tree(root / "sub")
    assert not (root / "sub").exists()
    remove_tree(root / "sub")  # nothing there is fine


def _store(path, value):
    import zarr

    g = zarr.open_group(url(path), mode="w", zarr_format=3)
    a = g.create_array("v", shape=(4,), chunks=(1,), dtype="f8")
    a[:] = value
    return path


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_move_store_replaces_the_old_store(kind, tmp_path, mem):
    import zarr

    root = location(str(tmp_path)) if kind == "local" else mem
    old, new = _store(root / "m.zarr", 1.0), _store(root / "m.zarr.new", 2.0)
    move_store(new, old)
    assert zarr.open_group(url(old), mode="r")["v"][:].tolist() == [2.0] * 4
    assert not new.exists() and not (root / "m.zarr.old").exists()


def test_move_store_killed_midway_leaves_no_half_store(mem, monkeypatch):
    """On an object store the move is a copy: killed part-way, the target reads as absent (its root
    zarr.json comes last), never as a store with some chunks old and some new; the source is intact."""
    import zarr

    from vt_core.metrics.store import _open

    old, new = _store(mem / "m.zarr", 1.0), _store(mem / "m.zarr.new", 2.0)
    fs = new.fs
    real_copy, copied = fs.copy, []

    def dying_copy(src, dst, **kw):
        if len(copied) == 3:
            raise KeyboardInterrupt("killed")
        copied.append(dst)
        return real_copy(src, dst, **kw)

    monkeypatch.setattr(fs, "copy", dying_copy)
    with pytest.raises(KeyboardInterrupt):
        move_store(new, old)
    assert copied and not (old / "zarr.json").exists()
    assert _open(old) is None  # absent: the metrics are recomputed, not read half-moved
    assert zarr.open_group(url(new), mode="r")["v"][:].tolist() == [2.0] * 4
    monkeypatch.setattr(fs, "copy", real_copy)
    move_store(new, old)  # the next run finishes the job
    assert zarr.open_group(url(old), mode="r")["v"][:].tolist() == [2.0] * 4
