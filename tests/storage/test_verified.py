"""What was verified stays verified (vt_core/storage/verified.py): a second full check reads back
only what changed, and damage is still found — by the manifest's stamps when a file changed, and
by `vt validate --full` and by the metrics' own reads when the stamp was restored too."""

from __future__ import annotations

import os
import shutil

import pytest

from vt_core.storage import run_integrity
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import load_study, store_problems, validate_study


@pytest.fixture
def study(analysed_study, tmp_path):
    out = tmp_path / "study"
    shutil.copytree(analysed_study, out)
    for f in (out / "runs").glob("*.verified.json"):
        f.unlink()
    return out


def _reads(monkeypatch) -> list:
    calls: list = []
    real = run_integrity._read_back
    monkeypatch.setattr(run_integrity, "_read_back", lambda arr, chunks, *a: calls.append((arr.path, len(chunks)))
                        or real(arr, chunks, *a))
    return calls


def _weight_chunk(study, seed=0):
    store = study / "runs" / f"seed={seed:04d}.zarr"
    return max((p for p in (store / "weights").rglob("*") if p.is_file() and p.name != "zarr.json"),
               key=lambda p: p.stat().st_size)


def test_a_second_check_reads_nothing_back_and_a_changed_chunk_again(study, monkeypatch):
    config = load_study(study)
    assert store_problems(study, 0, config, read=True) == []
    assert (study / "runs" / "seed=0000.verified.json").is_file()
    calls = _reads(monkeypatch)
    assert store_problems(study, 0, config, read=True) == []
    assert calls == []  # everything verified before and unchanged
    f = _weight_chunk(study)
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1))  # touched: read back again
    assert store_problems(study, 0, config, read=True) == []
    assert len(calls) == 1 and calls[0][0].startswith("weights/")
    assert store_problems(study, 0, config, read=True, full=True) == []
    assert len(calls) > 2  # --full reads everything


def _flip_keeping_stamp(path):
    """One byte of the chunk's body changed; size, modification time and stored CRC32C (the last
    4 bytes) as they were."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_change_with_its_stamp_restored_is_caught_by_the_full_check_and_when_read(study):
    from vt_core import stages

    config = load_study(study)
    assert store_problems(study, 0, config, read=True) == []
    _flip_keeping_stamp(_weight_chunk(study))
    assert store_problems(study, 0, config, read=True) == []  # the stamp cannot see it (documented)
    full = store_problems(study, 0, config, read=True, full=True)
    assert full and "weights/" in full[0] and "checksum" in full[0], full
    assert not (study / "runs" / "seed=0000.verified.json").exists()  # damage found: nothing stays verified
    assert any("weights/" in p for p in validate_study(study, full=True))
    # and where the metrics read it: the chunk's own CRC32C fails, the seed is named as damaged
    (study / "metrics.zarr").rename(study / "old-metrics")
    plan = stages.plan_metrics(study, [0, 1, 2])
    counts = stages.compute_metrics(study, 0, plan)
    assert counts["damaged"] and "weights/" in counts["damaged"]["0"][0]


def test_a_row_rewritten_behind_vts_back_is_caught_by_the_default_check(study):
    """A row rewritten through zarr (a valid chunk with its own CRC32C, a new stamp): read back
    because its stamp changed, and refused by the row checksum recorded at its commit."""
    import zarr

    config = load_study(study)
    assert store_problems(study, 0, config, read=True) == []
    path = study / "runs" / "seed=0000.zarr"
    name = sorted(n for n, _ in RunStore(path, mode="r").root["weights"].arrays())[0]
    arr = zarr.open_group(str(path), mode="r+")["weights"][name]
    arr[1] = arr[2]
    problems = store_problems(study, 0, config, read=True)
    assert problems and "checksum recorded at its commit" in problems[0], problems


def test_a_damaged_or_foreign_manifest_is_ignored(study, monkeypatch):
    config = load_study(study)
    assert store_problems(study, 0, config, read=True) == [] and store_problems(study, 1, config, read=True) == []
    runs = study / "runs"
    manifest = runs / "seed=0000.verified.json"
    manifest.write_text(manifest.read_text().replace('"committed"', '"committed_x"'))  # its checksum fails
    calls = _reads(monkeypatch)
    assert store_problems(study, 0, config, read=True) == []
    assert calls  # read back in full, and verified again
    calls.clear()
    shutil.copy(runs / "seed=0001.verified.json", manifest)  # another run's manifest
    assert store_problems(study, 0, config, read=True) == []
    assert calls


def test_validate_reads_the_manifest_and_writes_nothing(study, monkeypatch):
    """`vt validate` is a reader: a study sent by someone else is checked as it lies — no manifest
    written where there was none, none dropped when damage is found; one written by a run is used."""
    assert validate_study(study) == []
    assert not list((study / "runs").glob("*.verified.json"))
    config = load_study(study)
    assert all(store_problems(study, s, config, read=True) == [] for s in config.seeds)  # as a run records it
    manifest = study / "runs" / "seed=0000.verified.json"
    recorded = manifest.read_bytes()
    calls = _reads(monkeypatch)
    assert validate_study(study) == []
    assert calls == []  # what the run verified is not read back again
    assert manifest.read_bytes() == recorded
    _flip_keeping_stamp(_weight_chunk(study))
    assert any("weights/" in p for p in validate_study(study, full=True))
    assert manifest.read_bytes() == recorded  # found, reported, nothing written
