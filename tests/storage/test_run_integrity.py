"""Damage to a run store, its resume file and the JSON files of a study is found and named: a
missing chunk is an error (never the fill value), a flipped bit fails its checksum, a commit is one
write of the root metadata, and a lock nobody live holds is taken over."""

import json
import os
import socket

import numpy as np
import pytest
import torch

from vt_core.storage.location import DamagedFileError, read_json, write_json_atomic
from vt_core.storage.run_store import RunStore, StoreError
from vt_core.storage.study import StudyLockedError, study_lock
from vt_core.training.loop import Checkpoint


def ckpt(i):
    return Checkpoint(index=i, step=10 * i, epoch=float(i), scalars={"train_loss": 1.0 / (i + 1)},
                      weights={"layer.weight": np.full((8, 8), float(i), np.float32)},  # > 64 bytes a row:
                      activations={"layer": np.ones((4, 8), np.float32) * i})  # one checkpoint per chunk


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Four checkpoints, each in a chunk of its own (weights, activations) as large rows are."""
    monkeypatch.setattr("vt_core.storage.chunks.CHUNK_BYTES", 64)
    s = RunStore.create(tmp_path / "seed=0000.zarr", seed=0, config_hash="abc", config={"x": 1})
    for i in range(4):
        s.write(ckpt(i))
        s.commit(i + 1, 10 * i)
    s.trim()  # as a finished run's writer does
    s.set_status("complete")
    return s


def chunk(store, array, row):
    """The file of the chunk that holds ``row`` of ``array`` (whatever its key encoding)."""
    arr = RunStore(store.path, mode="r").root[array]
    found = store.path / array / arr.metadata.encode_chunk_key((row // arr.chunks[0],) + (0,) * (arr.ndim - 1))
    assert found.is_file(), found
    return found


def flip(path, at=-9):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def test_intact_store_has_no_problems(store):
    assert store.check(read=True) == []


def test_missing_weight_chunk_is_named_with_its_checkpoint(store):
    chunk(store, "weights/layer.weight", 2).unlink()
    assert RunStore(store.path).root["weights"]["layer.weight"][2].tolist()[0][0] != 2.0  # zarr: fill value
    problems = RunStore(store.path).check()  # cheap check, no chunk read
    assert problems == ["array weights/layer.weight: checkpoint 2 (step 20): chunk missing"]


def test_missing_scalar_chunk_is_named(store):
    chunk(store, "train_loss", 0).unlink()  # scalars: 512 rows to a chunk
    problems = RunStore(store.path).check()
    assert len(problems) == 1 and "train_loss" in problems[0] and "checkpoints 0-3" in problems[0]


@pytest.mark.parametrize("array", ["weights/layer.weight", "activations/layer", "step"])
def test_flipped_bit_fails_its_checksum(store, array):
    flip(chunk(store, array, 1 if array != "step" else 0))
    assert RunStore(store.path).check(read=False) == []  # present: only reading finds it
    problems = RunStore(store.path).check(read=True)
    assert len(problems) == 1 and array in problems[0] and "checksum" in problems[0], problems


def test_truncated_and_empty_chunks_are_found(store):
    c = chunk(store, "activations/layer", 3)
    c.write_bytes(c.read_bytes()[:5])
    c2 = chunk(store, "weights/layer.weight", 0)
    c2.write_bytes(b"")
    problems = RunStore(store.path).check(read=True)
    assert any("activations/layer: checkpoint 3" in p for p in problems)
    assert any("weights/layer.weight: checkpoint 0" in p for p in problems)


def test_bad_root_attributes_are_named(store):
    meta = store.path / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["committed_steps"] = "four"
    meta.write_text(json.dumps(doc))
    assert any("committed_steps" in p for p in RunStore(store.path).check())
    doc["attributes"]["committed_steps"] = 9
    meta.write_text(json.dumps(doc))
    assert any("fewer than the 9 committed" in p for p in RunStore(store.path).check())


def test_a_commit_is_one_write_of_the_root_metadata(store, monkeypatch):
    writes = []
    original = type(store.root).update_attributes

    def counting(self, new):
        writes.append(dict(new))
        return original(self, new)

    monkeypatch.setattr(type(store.root), "update_attributes", counting)
    store.commit(4, 30)
    store.set_status("failed", "x")
    assert [sorted(w) for w in writes] == [["committed_steps", "last_step"], ["error", "owner", "status"]]


def test_all_fill_value_chunks_are_still_written(tmp_path):
    s = RunStore.create(tmp_path / "s.zarr", seed=0, config_hash="abc", config={})
    c = ckpt(0)
    c.scalars = {"train_loss": float("nan")}  # the fill value: zarr would skip the chunk by default
    s.write(c)
    s.commit(1, 0)
    assert s.check() == []


def test_resume_file_is_sealed_and_verified(store):
    store.save_resume({"w": torch.arange(100)})
    assert store.resume_problem(read=True) is None and store.load_resume()["w"].sum() == 4950
    f = store.resume_path
    flip(f, at=200)
    assert store.resume_problem(read=False) is None  # the trailer is intact
    assert "checksum" in store.resume_problem(read=True)
    with pytest.raises(StoreError, match="damaged"):
        store.load_resume()
    f.write_bytes(f.read_bytes()[:300])
    assert "truncated" in store.resume_problem(read=False)


def test_json_documents_verify_themselves(tmp_path):
    p = tmp_path / "a.json"
    write_json_atomic(p, {"chosen_k": 3, "table": [1.5, float("nan")]})
    assert read_json(p)["chosen_k"] == 3
    p.write_text(p.read_text().replace('"chosen_k": 3', '"chosen_k": 4'))
    with pytest.raises(DamagedFileError, match="checksum"):
        read_json(p, "rerun it")
    p.write_text("{ not json")
    with pytest.raises(DamagedFileError, match="not readable JSON"):
        read_json(p)
    p.write_text(json.dumps({"chosen_k": 2}))  # written before checksums: read as it is
    assert read_json(p) == {"chosen_k": 2}


@pytest.mark.parametrize("content", [b"", b"\x00garbage", json.dumps({"pid": "x"}).encode()])
def test_a_lock_no_live_vt_wrote_is_taken_over(tmp_path, content, caplog):
    (tmp_path / ".vt.lock").write_bytes(content)
    with caplog.at_level("WARNING", logger="vt"), study_lock(tmp_path):
        assert json.loads((tmp_path / ".vt.lock").read_text())["pid"] == os.getpid()
    assert "took over the lock" in caplog.text
    assert not (tmp_path / ".vt.lock").exists()


def test_a_live_lock_is_refused(tmp_path):
    me = {"pid": os.getppid(), "host": socket.gethostname(), "since": "now"}
    (tmp_path / ".vt.lock").write_text(json.dumps(me))
    with pytest.raises(StudyLockedError, match=str(os.getppid())), study_lock(tmp_path):
        pass
    assert json.loads((tmp_path / ".vt.lock").read_text()) == me


def test_a_chunk_moved_to_another_row_is_found(store):
    a, b = chunk(store, "weights/layer.weight", 1), chunk(store, "weights/layer.weight", 3)
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)  # both chunks still pass their own CRC32C
    assert RunStore(store.path).check(read=False) == []
    problems = RunStore(store.path).check(read=True)
    assert [p.split(": ")[1] for p in problems] == ["checkpoint 1 (step 10)", "checkpoint 3 (step 30)"], problems
    assert all("recorded at its commit" in p for p in problems)


def test_a_deleted_array_or_group_is_found(store):
    import shutil

    (store.path / "train_loss" / "zarr.json").unlink()
    problems = RunStore(store.path).check()
    assert problems == ["array train_loss is missing (its commits recorded it)"]
    shutil.rmtree(store.path / "weights")
    problems = RunStore(store.path).check()
    assert "array weights/layer.weight is missing (its commits recorded it)" in problems


def test_garbled_array_metadata_is_named(store):
    (store.path / "weights" / "layer.weight" / "zarr.json").write_bytes(b"\xff\xfe garbage")
    problems = RunStore(store.path).check()
    assert problems and all("weights/layer.weight" in p and "zarr.json" in p for p in problems), problems


def test_damage_inside_a_chunk_of_several_checkpoints_is_named_by_checkpoint(tmp_path):
    """Small rows share a chunk (vt_core.storage.chunks.rows_per_chunk): a flipped bit fails the chunk's
    checksum, and the row checksums recorded at each commit name the checkpoint it hit; a
    truncated chunk names the checkpoints cut off."""
    s = RunStore.create(tmp_path / "seed=0000.zarr", seed=0, config_hash="abc", config={"x": 1})
    for i in range(6):
        s.write(ckpt(i))
        s.commit(i + 1, 10 * i)
    arr = s.root["weights"]["layer.weight"]
    assert arr.chunks[0] > 6
    f = chunk(s, "weights/layer.weight", 0)
    intact = f.read_bytes()
    flip(f, at=4 * 8 * 8 * 4 + 17)  # a byte of checkpoint 4
    problems = RunStore(s.path).check(read=True)
    assert problems == ["array weights/layer.weight: checkpoint 4 (step 40): fails its checksum (the stored "
                        "bytes changed) (in the chunk of checkpoints 0-5)"], problems
    f.write_bytes(intact[: 3 * 8 * 8 * 4 + 10])  # checkpoints 3.. cut off
    problems = RunStore(s.path).check(read=True)
    assert [p.split(":")[1].strip() for p in problems] == [f"checkpoint {i} (step {10 * i})" for i in (3, 4, 5)]
    assert all("cut off" in p for p in problems)


def test_stores_swapped_between_seeds_are_named_and_nothing_is_computed_from_them(analysed_study, tmp_path):
    """Issue 34, item 18: two seeds' stores and resume files swapped (a sync tool, a slip of `mv`)
    passed `vt validate` and `vt analyze` computed seed 0's metrics from seed 1's weights. A store
    records its own seed: validation names the swap and the fix, every reader refuses, and the
    repair before training deletes nothing."""
    import shutil

    from vt_core import stages
    from vt_core.stages.train import repair_seeds
    from vt_core.storage.study import validate_study

    study = tmp_path / "study"
    shutil.copytree(analysed_study, study)
    runs = study / "runs"
    for suffix in (".zarr", ".resume.pt"):
        a, b = runs / f"seed=0000{suffix}", runs / f"seed=0001{suffix}"
        a.rename(runs / "swap"), b.rename(a), (runs / "swap").rename(b)
    problems = validate_study(study)
    assert any(p.startswith("seed 0: store seed=0000.zarr holds the run of seed 1") and "put it back at seed=0001.zarr"
               in p for p in problems), problems
    assert any(p.startswith("seed 1: store seed=0001.zarr holds the run of seed 0") for p in problems), problems
    assert not any("retrains it" in p for p in problems if p.startswith(("seed 0", "seed 1")))
    with pytest.raises(StoreError, match="holds the run of seed 1"):
        stages.analyse(study)
    assert repair_seeds(study) == [] and (runs / "seed=0000.zarr").exists() and (runs / "seed=0001.zarr").exists()


@pytest.mark.parametrize("how", ["recomputed", "copied"])
def test_bytes_moved_from_another_store_fail_even_with_valid_checksums(analysed_study, tmp_path, how):
    """Issue 34, item 19: a weight row replaced by the row at the same place in another seed's store,
    with the row checksum recomputed to match (``recomputed``, as a tool that refreshes checksums
    would) or taken from that store (``copied``): both were analysed silently. Each row's checksum
    is keyed by its store's run id, its array and its row, so moved bytes fail here."""
    import shutil

    import zarr

    from vt_core.storage.run_integrity import CHECK_GROUP, row_crc
    from vt_core.storage.study import validate_study

    study = tmp_path / "study"
    shutil.copytree(analysed_study, study)
    dst, src = (zarr.open_group(str(study / "runs" / f"seed={s:04d}.zarr"), mode="r+") for s in (0, 1))
    name = next(p for p, _ in dst["weights"].arrays() if p != "step")  # a parameter: listed in no fixed order
    row = 3
    moved = src["weights"][name][row]
    assert not np.array_equal(moved, dst["weights"][name][row])  # the two seeds' weights differ
    dst["weights"][name][row] = moved
    col = list(dst[CHECK_GROUP]["row_crc"].attrs["columns"]).index(f"weights/{name}")
    fake = row_crc(moved) if how == "recomputed" else src[CHECK_GROUP]["row_crc"][row, col]
    dst[CHECK_GROUP]["row_crc"][row, col] = fake
    problems = validate_study(study)
    assert any(p.startswith(f"seed 0: array weights/{name}") and "does not match the checksum" in p
               for p in problems), problems
