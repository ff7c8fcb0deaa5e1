"""Chunks written straight to disk (vt_core.storage.chunks) are what zarr would have written: zarr reads
them back, their checksums verify, rows committed in a chunk that is still filling survive every
rewrite (and a reopen), and damage met while filling a chunk is refused, never written over."""

import numpy as np
import pytest
import zarr

from vt_core.storage.chunks import CHUNK_BYTES, SMALL_ROW_CHUNK, ChunkError, direct, rows_per_chunk
from vt_core.storage.run_store import Checkpoint, RunStore


def ckpt(i, width=300, big=True):
    rng = np.random.default_rng(i)
    return Checkpoint(index=i, step=7 * i, epoch=i / 2, scalars={"train_loss": float(rng.normal()), "n": float(i)},
                      weights={"w": rng.normal(size=(width, 40)).astype(np.float32),
                               "b": rng.normal(size=width).astype(np.float32),
                               "count": np.arange(5, dtype=np.int64) * i,
                               **({"big": rng.normal(size=(600, 600)).astype(np.float32)} if big else {})},
                      activations={"h": rng.normal(size=(8, width)).astype(np.float64)})


def write(path, batches, direct_writes=True, monkeypatch=None, big=True, hold=False):
    store = RunStore.create(path, seed=3, config_hash="h", config={})
    store.hold_chunks = hold
    if not direct_writes:
        monkeypatch.setattr("vt_core.storage.run_store.direct", lambda arr, root, hold=False: None)
    n = 0
    for size in batches:
        store.write_batch([ckpt(i, big=big) for i in range(n, n + size)])
        n += size
        store.commit(n, 7 * (n - 1))
    return RunStore(path, mode="r")


def arrays(store):
    """Every committed row of every array; the row checksums as the rows they check, since each
    store keys its own by its run id (two stores of equal rows have different checksums)."""
    from vt_core.storage.run_integrity import ROW_KEY

    out = {}
    for g in (None, "weights", "activations", "integrity"):
        grp = store.root if g is None else store.root[g]
        for name, a in grp.arrays():
            if g == "integrity" and name == "row_crc":
                assert a.attrs["keyed"] == ROW_KEY
                continue
            out[f"{g}/{name}"] = np.asarray(a[: store.committed]) if a.ndim else np.asarray(a[...])
    return out


def test_rows_per_chunk_is_a_power_of_two_within_the_byte_budget():
    assert rows_per_chunk(8) == SMALL_ROW_CHUNK
    for row in (65, 4_000, 48_000, 160_000, CHUNK_BYTES // 2):
        r = rows_per_chunk(row)
        assert r & (r - 1) == 0 and r * row <= CHUNK_BYTES and (r == 64 or 2 * r * row > CHUNK_BYTES)
    assert rows_per_chunk(CHUNK_BYTES // 2 + 1) == 1 and rows_per_chunk(10 * CHUNK_BYTES) == 1


@pytest.mark.parametrize("hold", [False, True], ids=["read-back", "held"])
def test_direct_writes_equal_zarrs_and_verify(tmp_path, monkeypatch, hold):
    batches = [1, 3, 5, 16, 2, 40, 1]  # across chunk boundaries, ragged
    ours = write(tmp_path / "ours.zarr", batches, hold=hold)
    with monkeypatch.context() as m:
        theirs = write(tmp_path / "zarr.zarr", batches, direct_writes=False, monkeypatch=m)
    a, b = arrays(ours), arrays(theirs)
    assert a.keys() == b.keys() and ours.committed == sum(batches)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert ours.check(read=True) == [] and theirs.check(read=True) == []
    # the layout: several checkpoints to a chunk where they fit, flat chunk keys, checksummed
    w = ours.root["weights"]["w"]
    assert w.chunks[0] == rows_per_chunk(300 * 40 * 4) > 1 and ours.root["weights"]["big"].chunks[0] == 1
    assert (ours.path / "weights" / "w" / "c.1.0.0").is_file() and not (ours.path / "weights" / "w" / "c").exists()


def test_rows_committed_in_a_filling_chunk_survive_a_reopen(tmp_path):
    """A second writer (a resumed run) fills the chunk the first one left half full."""
    path = tmp_path / "s.zarr"
    first = write(path, [3])
    store = RunStore(path)
    store.write_batch([ckpt(3), ckpt(4)])
    store.commit(5, 28)
    whole = write(tmp_path / "whole.zarr", [5])
    a, b = arrays(RunStore(path, mode="r")), arrays(whole)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert first.committed == 3 and RunStore(path).check(read=True) == []


def test_a_damaged_chunk_is_refused_not_written_over(tmp_path):
    path = tmp_path / "s.zarr"
    write(path, [3])
    f = path / "weights" / "w" / "c.0.0.0"
    data = bytearray(f.read_bytes())
    data[100] ^= 1
    f.write_bytes(bytes(data))
    store = RunStore(path)
    with pytest.raises(ChunkError, match=r"c\.0\.0\.0 fails its checksum"):
        store.write_batch([ckpt(3)])
    assert f.read_bytes() == bytes(data)  # left as found, for vt validate to name
    problems = RunStore(path).check(read=True)
    assert any("weights/w" in p and "checkpoints 0-2" in p and "checksum" in p for p in problems), problems


def test_rows_read_straight_from_the_chunk_files_are_zarrs_and_verified(tmp_path):
    """DirectChunks.get (the live watcher's reads of new rows): every range zarr reads, across
    chunk boundaries, compressed or not; a chunk whose bytes changed, or missing, is named."""
    store = write(tmp_path / "s.zarr", [1, 3, 5, 16, 2, 40], big=False)
    n = store.committed
    for path in ("weights/w", "weights/b", "weights/count", "step", "epoch", "train_loss", "activations/h"):
        arr = store.root[path]
        reader = direct(arr, store.path)
        assert reader is not None, path
        for lo, hi in ((0, n), (0, 1), (n - 1, n), (3, 20), (30, 40), (5, 5)):
            got = reader.get(lo, hi)
            assert got.dtype == arr.dtype
            np.testing.assert_array_equal(got, np.asarray(arr[lo:hi]), err_msg=f"{path} {lo}:{hi}")
    arr = store.root["weights/w"]
    f = store.path / "weights" / "w" / "c.1.0.0"
    data = bytearray(f.read_bytes())
    data[50] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(ChunkError, match=r"c\.1\.0\.0 fails its checksum"):
        direct(arr, store.path).get(arr.chunks[0], arr.chunks[0] + 1)
    f.unlink()
    with pytest.raises(ChunkError, match=r"c\.1\.0\.0 is missing"):
        direct(arr, store.path).get(0, n)


def test_a_store_with_nested_chunk_keys_is_written_in_its_own_layout(tmp_path):
    """Stores written before flat keys keep ``c/<row>/0``: the direct writer follows the metadata."""
    path = tmp_path / "old.zarr"
    store = RunStore.create(path, seed=0, config_hash="h", config={})
    g = store.root.require_group("weights")
    g.create_array("w", shape=(0, 4), chunks=(1, 4), dtype=np.float32, fill_value=np.nan,
                   compressors=[zarr.codecs.Crc32cCodec()], chunk_key_encoding={"name": "default", "separator": "/"})
    store = RunStore(path)
    store.write_batch([Checkpoint(index=i, step=i, epoch=0.0, scalars={}, weights={"w": np.full(4, i, np.float32)})
                       for i in range(3)])
    store.commit(3, 2)
    assert (path / "weights" / "w" / "c" / "2" / "0").is_file()
    assert np.asarray(RunStore(path).root["weights"]["w"][:3]).tolist() == [[float(i)] * 4 for i in range(3)]


def test_formats_it_does_not_write_go_through_zarr(tmp_path):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    blosc = g.create_array("a", shape=(4, 3), chunks=(1, 3), dtype=np.float32,
                           compressors=[zarr.codecs.BloscCodec()])
    partial = g.create_array("b", shape=(4, 6), chunks=(1, 3), dtype=np.float32,
                             compressors=[zarr.codecs.Crc32cCodec()])
    assert direct(blosc, tmp_path / "g.zarr") is None and direct(partial, tmp_path / "g.zarr") is None
    assert direct(partial, "memory://x") is None


def test_dask_blocks_hold_whole_stored_chunks(tmp_path):
    store = write(tmp_path / "s.zarr", [20, 20], big=False)
    ds = store.dataset("weights", chunk_bytes=300 * 40 * 4 * 50)  # 50 checkpoints of w: 48 whole
    stored = store.root["weights"]["w"].chunks[0]
    assert all(c % stored == 0 for c in ds["w"].chunks[0][:-1])
