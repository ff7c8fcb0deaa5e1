"""Study damage (issue 17, "Integrity you can check"): a copy of a small finished study is damaged
one way at a time. `vt validate STUDY` must find each damage and name it (the seed, the array and,
for a chunk, the checkpoint; or the file), without a traceback. For a subset, `vt run CONFIG` must
repair it (exit 0, saying so, after which the study validates and its metrics equal the undamaged
study's: training is deterministic on a CPU) or refuse naming it; never exit 0 with the damage in
place. A stale lock (empty, garbage, a dead pid) is taken over by `vt run`, which says so."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from .conftest import (
    STUDY_SEEDS,
    assert_clean,
    assert_no_traceback_logged,
    config_for,
    diff_snapshots,
    error_lines,
    result_records,
    snapshot,
    vt,
    with_logs,
)

pytestmark = [pytest.mark.timeout(600), pytest.mark.minutes]


# --- locating the parts of a study (the documented layout) ----------------------------------------


def store(study: Path, seed: int) -> Path:
    return study / "runs" / f"seed={seed:04d}.zarr"


def resume_file(study: Path, seed: int) -> Path:
    return study / "runs" / f"seed={seed:04d}.resume.pt"


def chunk(array_dir: Path, row: int) -> Path:
    """The one chunk file that holds checkpoint ``row`` of an array stored one checkpoint per chunk
    (weights, activations), or of a small array stored in one chunk (``row`` 0), whatever its
    chunk key encoding (``c/3/0`` or ``c.3.0``)."""
    import zarr

    arr = zarr.open_array(str(array_dir), mode="r")
    assert row == 0 or arr.chunks[0] == 1, f"test setup: {array_dir} holds {arr.chunks[0]} checkpoints a chunk"
    where = array_dir / arr.metadata.encode_chunk_key((row // arr.chunks[0],) + (0,) * (arr.ndim - 1))
    assert where.is_file(), f"test setup: expected the chunk file {where} for row {row} of {array_dir}"
    return where


def steps_of(study: Path, seed: int) -> list[int]:
    import zarr

    return [int(s) for s in zarr.open_array(str(store(study, seed) / "step"), mode="r")[:]]


def flip_bit(path: Path, offset: int | None = None, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 1 << bit
    path.write_bytes(bytes(data))


def garble(path: Path) -> None:
    path.write_bytes(b'{"garbled": \x00\xff' + path.read_bytes()[:40])


def truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def edit_json(path: Path, fn: Callable[[dict], None]) -> None:
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d, indent=2))


# --- what an output must name ------------------------------------------------------------------------


def seed_re(seed: int) -> str:
    return rf"seed[ =:#]*0*{seed}(?!\d)"


def step_re(study: Path, seed: int, *rows: int) -> str:
    """A checkpoint named by its row or its step (``checkpoint 3``, ``row 3``, ``step 24``, ``step=24``)."""
    steps = steps_of(study, seed)
    alts = "|".join(sorted({str(r) for r in rows} | {str(steps[r]) for r in rows}))
    return rf"(?:step|checkpoint|row|index)s?[ =:#]*(?:{alts})(?!\d)"


def word(token: str) -> str:
    return r"(?<![A-Za-z0-9_])" + re.escape(token) + r"(?![A-Za-z0-9_])"


def any_of(*tokens: str) -> str:
    return "(?:" + "|".join(word(t) for t in tokens) + ")"


@dataclass
class Damage:
    id: str
    #: damages the copy; returns regexes that the output must all match (case-insensitive)
    apply: Callable[[Path], list[str]]


def _weights(study: Path, seed: int, param: str) -> Path:
    return store(study, seed) / "weights" / param


def d_delete_weights_chunk(study):
    chunk(_weights(study, 0, "layers.0.weight"), 3).unlink()
    return [seed_re(0), word("layers.0.weight"), step_re(study, 0, 3)]


def d_delete_scalar_chunk(study):
    chunk(store(study, 0) / "train_loss", 0).unlink()
    return [seed_re(0), word("train_loss")]


def d_flip_weights(study):
    flip_bit(chunk(_weights(study, 1, "layers.0.weight"), 5))  # the lowest mantissa bit of one weight
    return [seed_re(1), word("layers.0.weight"), step_re(study, 1, 5)]


def d_flip_activations(study):
    flip_bit(chunk(store(study, 0) / "activations" / "layers.1", 4))
    return [seed_re(0), word("layers.1"), step_re(study, 0, 4)]


def d_truncate_chunk(study):
    truncate_half(chunk(_weights(study, 1, "layers.2.weight"), 2))
    return [seed_re(1), word("layers.2.weight"), step_re(study, 1, 2)]


def d_empty_chunk(study):
    chunk(_weights(study, 0, "layers.0.bias"), 6).write_bytes(b"")
    return [seed_re(0), word("layers.0.bias"), step_re(study, 0, 6)]


def d_swap_chunks(study):
    a, b = chunk(_weights(study, 0, "layers.0.weight"), 2), chunk(_weights(study, 0, "layers.0.weight"), 7)
    da, db = a.read_bytes(), b.read_bytes()
    assert da != db, "test setup: the two checkpoints' chunks are identical"
    a.write_bytes(db)
    b.write_bytes(da)
    return [seed_re(0), word("layers.0.weight"), step_re(study, 0, 2, 7)]


def d_garble_seed_root(study):
    garble(store(study, 1) / "zarr.json")
    return [seed_re(1), any_of("zarr.json", "seed=0001.zarr")]


def _committed(value):
    def damage(study):
        edit_json(store(study, 0) / "zarr.json", lambda d: d["attributes"].__setitem__("committed_steps", value))
        return [seed_re(0), any_of("committed_steps", "committed", "zarr.json")]

    return damage


def d_garble_array_meta(study):
    garble(_weights(study, 0, "layers.2.weight") / "zarr.json")
    return [seed_re(0), word("layers.2.weight")]


def d_delete_array_meta(study):
    (store(study, 1) / "train_loss" / "zarr.json").unlink()
    return [seed_re(1), word("train_loss")]


def d_delete_weights_group(study):
    shutil.rmtree(store(study, 0) / "weights")
    return [seed_re(0), word("weights")]


def d_garble_resume(study):
    p = resume_file(study, 0)
    p.write_bytes(os.urandom(len(p.read_bytes())))
    return [seed_re(0), any_of("resume", "seed=0000.resume.pt")]


def d_truncate_resume(study):
    truncate_half(resume_file(study, 1))
    return [seed_re(1), any_of("resume", "seed=0001.resume.pt")]


def d_delete_resume(study):
    resume_file(study, 0).unlink()
    return [seed_re(0), any_of("resume", "seed=0000.resume.pt")]


def _file(rel: str, how: Callable[[Path], None], name: str):
    def damage(study):
        how(study / rel)
        return [word(name)]

    return damage


def d_delete_metrics_chunk(study):
    chunk(study / "metrics.zarr" / "value", 0).unlink()
    return [word("metrics.zarr")]


def d_flip_metrics_chunk(study):
    flip_bit(chunk(study / "metrics.zarr" / "value", 1), bit=3)
    return [word("metrics.zarr")]


def d_garble_cache_record(study):
    records = sorted((study / ".prefect" / "results").glob("*"))
    if not records:
        pytest.skip("this study has no cached task results in .prefect/results")
    garble(records[0])
    return [any_of(records[0].name, ".prefect/results", "cache", "cached")]


DAMAGE = [
    Damage("delete-weights-chunk", d_delete_weights_chunk),
    Damage("delete-scalar-chunk", d_delete_scalar_chunk),
    Damage("flip-bit-weights-chunk", d_flip_weights),
    Damage("flip-bit-activations-chunk", d_flip_activations),
    Damage("truncate-weights-chunk", d_truncate_chunk),
    Damage("zero-length-chunk", d_empty_chunk),
    Damage("swap-two-steps-chunks", d_swap_chunks),
    Damage("garble-seed-root-zarr.json", d_garble_seed_root),
    Damage("committed_steps-past-the-rows", _committed(20)),
    Damage("committed_steps-a-string", _committed("9")),
    Damage("committed_steps-negative", _committed(-1)),
    Damage("garble-array-zarr.json", d_garble_array_meta),
    Damage("delete-array-zarr.json", d_delete_array_meta),
    Damage("delete-weights-group", d_delete_weights_group),
    Damage("garble-resume-file", d_garble_resume),
    Damage("truncate-resume-file", d_truncate_resume),
    Damage("garble-study.json", _file("study.json", garble, "study.json")),
    Damage("truncate-study.json", _file("study.json", truncate_half, "study.json")),
    Damage("garble-metrics-root-zarr.json", _file("metrics.zarr/zarr.json", garble, "metrics.zarr")),
    Damage("delete-metrics-chunk", d_delete_metrics_chunk),
    Damage("flip-bit-metrics-chunk", d_flip_metrics_chunk),
    Damage("garble-selection.json", _file("hmm/selection.json", garble, "selection.json")),
    Damage("garble-model.npz", _file("hmm/model.npz", garble, "model.npz")),
    Damage("garble-paths.json", _file("hmm/paths.json", garble, "paths.json")),
    Damage("truncate-analysis.json", _file("analysis.json", truncate_half, "analysis.json")),
    Damage("garble-cache-record", d_garble_cache_record),
]
BY_ID = {d.id: d for d in DAMAGE}


def damage(study: Path, kind: Damage) -> list[str]:
    """Apply ``kind`` and check that it changed the study (a test of the test)."""
    before = snapshot(study)
    patterns = kind.apply(study)
    assert snapshot(study) != before, f"test setup: damage {kind.id} changed nothing"
    return patterns


def unmatched(output: str, patterns: list[str]) -> list[str]:
    return [p for p in patterns if not re.search(p, output, re.IGNORECASE)]


def test_an_undamaged_copy_validates(pristine):
    """Without this, detecting damage means nothing."""
    run = pristine.clean_validate
    assert_clean(run)
    assert run.exit_code == 0, f"an undamaged copy of a finished study does not validate:\n{run.describe()}"


def test_a_finished_seed_needs_no_resume_file(study: Path):
    """Not damage: a complete seed is never resumed, so its resume file is not needed (vt keeps it,
    and `vt validate` checks it when it is there)."""
    d_delete_resume(study)
    run = vt("validate", study)
    assert_clean(run)
    assert run.exit_code == 0, run.describe()


def test_damage_corpus_size():
    assert len(DAMAGE) >= 20


@pytest.mark.parametrize("kind", DAMAGE, ids=[d.id for d in DAMAGE])
def test_validate_names_the_damage(kind: Damage, study: Path, pristine):
    assert pristine.clean_validate.exit_code == 0, "an undamaged copy does not validate (see that test)"
    patterns = damage(study, kind)
    before = snapshot(study)
    run = vt("validate", study)
    assert_clean(run)
    assert run.exit_code in (1, 2), f"`vt validate` did not report damage {kind.id}:\n{run.describe()}"
    missing = unmatched(run.output, patterns)
    assert not missing, f"the report of {kind.id} does not name {missing}:\n{run.describe()}"
    assert snapshot(study) == before, f"`vt validate` changed the study: {diff_snapshots(before, snapshot(study))}"


# --- repair by `vt run` ------------------------------------------------------------------------------

REPAIR_WORDS = re.compile(r"retrain|re-train|recomput|re-comput|repair|rebuil|restor|rewr|redo|re-run|rerun|"
                          r"discard|replac|regenerat", re.IGNORECASE)


def arrays_of(path: Path) -> dict[str, np.ndarray]:
    """Every array of a Zarr group, read with zarr alone (rows past ``committed_steps`` left out)."""
    import zarr

    root = zarr.open_group(str(path), mode="r")
    n = root.attrs.get("committed_steps")
    out = {}
    for name, node in root.members(max_depth=None):
        if isinstance(node, zarr.Array):
            data = node[...]
            dims = node.metadata.dimension_names or ()
            if isinstance(n, int) and dims and dims[0] == "step" and path.name != "metrics.zarr":
                data = data[:n]
            out[name] = data
    return out


def assert_same_values(a: dict, b: dict, what: str, skip=()) -> None:
    names = sorted(set(a) | set(b))
    for name in names:
        if name in skip:
            continue
        assert name in a and name in b, f"{what}: array {name} is in only one of the two"
        x, y = a[name], b[name]
        assert x.shape == y.shape, f"{what}: {name} has shape {x.shape}, the undamaged study's {y.shape}"
        if x.dtype.kind in "fc":
            assert np.array_equal(x, y, equal_nan=True), f"{what}: {name} differs from the undamaged study's"
        else:
            assert (x == y).all(), f"{what}: {name} differs from the undamaged study's"


def metric_values(study: Path) -> dict[str, np.ndarray]:
    import xarray as xr

    ds = xr.open_zarr(str(study / "metrics.zarr"), consolidated=False)
    return {k: ds[k].values for k in ("value", "per_layer")} | {k: ds[k].values for k in ds.coords}


REPAIRABLE = ["delete-weights-chunk", "flip-bit-weights-chunk", "garble-seed-root-zarr.json", "garble-resume-file",
              "delete-metrics-chunk", "truncate-analysis.json", "garble-study.json"]


@pytest.mark.integration
@pytest.mark.parametrize("kind_id", REPAIRABLE)
def test_run_repairs_or_refuses(kind_id: str, study: Path, pristine, prefect_server, capfd):
    patterns = damage(study, BY_ID[kind_id])
    cfg = config_for(study)
    capfd.readouterr()
    run = vt("run", cfg)
    text = with_logs(run, capfd)
    assert_clean(run)
    assert_no_traceback_logged(run, text)
    if run.exit_code != 0:  # refused: one error line naming what is damaged
        assert error_lines(run), f"`vt run` failed on {kind_id} without an 'error:' line:\n{run.describe()}"
        missing = unmatched(run.output, patterns)
        assert not missing, f"`vt run` refused {kind_id} without naming {missing}:\n{run.describe()}"
        return
    assert REPAIR_WORDS.search(text), f"`vt run` exited 0 on {kind_id} without saying what it repaired:\n{run.describe()}"
    assert not unmatched(text, patterns[:1]), f"`vt run` repaired {kind_id} without naming it:\n{run.describe()}"
    check = vt("validate", study)
    assert check.exit_code == 0, f"`vt run` exited 0 but the study still does not validate:\n{check.describe()}"
    assert_same_values(metric_values(study), metric_values(pristine.path), "metrics.zarr after the repair")
    for seed in STUDY_SEEDS:
        # a retrained seed's store is a new run: its row checksums are keyed by its new run id (they
        # verify: `vt validate` passed above); every other array holds the same values
        assert_same_values(arrays_of(store(study, seed)), arrays_of(store(pristine.path, seed)),
                           f"seed {seed}'s store after the repair", skip=("integrity/row_crc",))
    assert json.loads((study / "analysis.json").read_text()), "analysis.json is empty after the repair"
    assert json.loads((study / "study.json").read_text())["training_hash"] == \
        json.loads((pristine.path / "study.json").read_text())["training_hash"]
    assert not (study / ".vt.lock").exists()


@pytest.mark.integration
def test_a_forged_failed_cache_record_does_not_fail_a_complete_seed(study: Path, pristine, prefect_server, capfd):
    """The cache is not trusted over the store: a record saying "failed" for a complete seed."""
    from importlib import metadata

    for i, rec in enumerate(result_records(study)):
        seed = STUDY_SEEDS[i % len(STUDY_SEEDS)]
        inner = {"seed": seed, "status": "failed", "committed_steps": 0, "last_step": None, "error": "forged",
                 "skipped": False, "path": str(store(study, seed))}
        rec.write_text(json.dumps({
            "metadata": {"storage_key": str(rec), "expiration": None, "prefect_version": metadata.version("prefect"),
                         "serializer": {"type": "json", "jsonlib": "json", "dumps_kwargs": {}, "loads_kwargs": {},
                                        "object_encoder": "prefect.serializers.prefect_json_object_encoder",
                                        "object_decoder": "prefect.serializers.prefect_json_object_decoder"},
                         "storage_block_id": None},
            "result": json.dumps(inner)}))
    capfd.readouterr()
    run = vt("run", config_for(study))
    text = with_logs(run, capfd)
    assert run.exit_code == 0, f"a forged cache record failed a complete seed:\n{run.describe()}"
    assert_clean(run)
    assert_no_traceback_logged(run, text)
    for seed in STUDY_SEEDS:  # the stores are untouched (the planted files may stay, and be reported)
        assert_same_values(arrays_of(store(study, seed)), arrays_of(store(pristine.path, seed)), f"seed {seed}'s store")
    assert_same_values(metric_values(study), metric_values(pristine.path), "metrics.zarr")


# --- stale locks ------------------------------------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


LOCKS = {
    "empty": lambda: b"",
    "garbage": lambda: b"\x00\xffnot json at all{{",
    "dead-pid": lambda: json.dumps({"pid": _dead_pid(), "host": socket.gethostname(),
                                    "since": "2024-01-01T00:00:00+00:00"}).encode(),
}


@pytest.mark.integration
@pytest.mark.parametrize("lock", list(LOCKS))
def test_run_takes_over_a_stale_lock(lock: str, study: Path, prefect_server, capfd):
    (study / ".vt.lock").write_bytes(LOCKS[lock]())
    capfd.readouterr()
    run = vt("run", config_for(study))
    text = with_logs(run, capfd)
    assert_clean(run)
    assert_no_traceback_logged(run, text)
    assert run.exit_code == 0, f"`vt run` did not take over a stale lock ({lock}):\n{run.describe()}"
    assert re.search(r"lock", text, re.IGNORECASE), f"`vt run` took over the lock without saying so:\n{run.describe()}"
    assert not (study / ".vt.lock").exists(), "the lock is left behind after the run"
