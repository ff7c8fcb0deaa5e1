"""The background checkpoint writers: a child process (Linux default) and a thread.

Both must store exactly the same arrays; a full disk stops the run with a clear error while every
committed checkpoint stays readable and the run resumes from there; a killed trainer takes its
writer process with it (an orphan would race the resumed run)."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT, committed_steps, store_arrays, tiny_dict
from vt_core.config.study_config import parse_config
from vt_core.errors import VtError
from vt_core.runtime import Runtime, RuntimeSettingError
from vt_core.stages.train import train_seed
from vt_core.storage.run_store import RunStore
from vt_core.storage.seed_status import seed_status
from vt_core.storage.study import prepare_study, run_path
from vt_core.storage.writer import CheckpointWriter, ProcessCheckpointWriter, WriterError, make_writer

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the writer process is Linux-only")


def _study(tmp_path: Path, name: str, epochs: int = 12):
    over = dict(model={"name": "mlp", "hidden": [64]}, training={"epochs": epochs}, seeds=[0])
    return prepare_study(parse_config(tiny_dict(tmp_path / name, **over)))


def test_writer_choice(tmp_path, monkeypatch):
    """The runtime chooses the writer; the environment is read at the edge only (Runtime.from_env)."""
    store = RunStore.create(tmp_path / "s.zarr", seed=0, config_hash="x", config={})
    with pytest.raises(RuntimeSettingError, match="writer='threads': use 'process' or 'thread'"):
        make_writer(store, 4, Runtime(writer="threads"))  # type: ignore[arg-type]
    monkeypatch.setenv("VT_WRITER", "process")  # ignored here: make_writer never reads it
    w = make_writer(store, 4, Runtime(writer="thread"))
    assert isinstance(w, CheckpointWriter)
    w.close()
    mem = RunStore.create("memory://vt-writer-choice/s.zarr", seed=0, config_hash="x", config={})
    w = make_writer(mem, 4, Runtime(writer="process"))  # another process cannot see memory://
    assert isinstance(w, CheckpointWriter)
    w.close()
    assert issubclass(WriterError, VtError) and issubclass(WriterError, OSError)


@linux_only
def test_process_writer_by_default_at_the_runtimes_niceness(tmp_path, monkeypatch):
    """The child's niceness comes through its argv (``runtime.writer_nice``), not the environment."""
    store = RunStore.create(tmp_path / "s.zarr", seed=0, config_hash="x", config={})
    monkeypatch.setenv("VT_WRITER_NICE", "3")  # ignored: only Runtime.from_env reads it
    default = make_writer(store, 4)
    assert isinstance(default, ProcessCheckpointWriter)
    default.close()
    w = make_writer(store, 4, Runtime(writer="process", writer_nice=7))
    try:
        assert isinstance(w, ProcessCheckpointWriter) and w._proc.args[6] == "7"
        want = min(os.getpriority(os.PRIO_PROCESS, 0) + 7, 19)  # os.nice adds to the inherited niceness
        deadline = time.time() + 30
        while os.getpriority(os.PRIO_PROCESS, w._proc.pid) != want and time.time() < deadline:
            time.sleep(0.01)
        assert os.getpriority(os.PRIO_PROCESS, w._proc.pid) == want
    finally:
        w.close()


@linux_only
def test_process_and_thread_writers_store_the_samestore_arrays(tmp_path):
    """The forked writer, a writer in a new interpreter (``VT_WRITER_START=exec``) and the thread
    writer store the same arrays."""
    a = _study(tmp_path, "process")
    assert train_seed(a, 0, runtime=Runtime(writer="process"))["committed_steps"] == 13
    for kind, runtime in (("thread", Runtime(writer="thread")), ("exec", Runtime(writer="process", writer_start="exec"))):
        b = _study(tmp_path, kind)
        train_seed(b, 0, runtime=runtime)
        x, y = store_arrays(run_path(a, 0)), store_arrays(run_path(b, 0))
        assert x.keys() == y.keys() and len(x) > 8
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"{kind}: {k}")


def full_disk(monkeypatch, at: int, only: str | None = None) -> None:
    """The disk fills up when row ``at`` of ``weights/layers.0.weight`` is written (in the stores
    whose path contains ``only``): that write and every later one fail with ENOSPC. Patched in
    this process, which the writer processes are forks of (and the thread writer runs in)."""
    from zarr.storage import LocalStore

    from vt_core.storage import chunks as chunk_io

    state = {"full": False}
    put, store_set = chunk_io.DirectChunks.put, LocalStore.set

    def ours(where) -> bool:
        return not only or only in str(where)

    def patched_put(self, rows, start):
        if ours(self.dir):
            if self.dir.as_posix().endswith("weights/layers.0.weight") and start + len(rows) > at:
                state["full"] = True
            if state["full"]:
                raise OSError(errno.ENOSPC, "No space left on device", str(self.dir))
        return put(self, rows, start)

    async def patched_set(self, key, value, *a, **k):
        if state["full"] and ours(self.root):
            raise OSError(errno.ENOSPC, "No space left on device", key)
        return await store_set(self, key, value, *a, **k)

    monkeypatch.setattr(chunk_io.DirectChunks, "put", patched_put)
    monkeypatch.setattr(LocalStore, "set", patched_set)


def _full_disk(monkeypatch, tmp_path, writer: str, at: int) -> Runtime:
    """The disk fills up at checkpoint ``at``; the runtime that trains with ``writer``."""
    full_disk(monkeypatch, at)
    return Runtime(writer=writer)  # type: ignore[arg-type]


@pytest.mark.parametrize("writer", [pytest.param("process", marks=linux_only), "thread"])
def test_full_disk_stops_the_run_clearly_and_keeps_what_was_committed(tmp_path, monkeypatch, writer):
    clean = _study(tmp_path, "clean", epochs=30)
    train_seed(clean, 0)
    study = _study(tmp_path, "full", epochs=30)
    with monkeypatch.context() as m:
        runtime = _full_disk(m, tmp_path, writer, at=20)
        with pytest.raises(OSError, match="No space left on device") as info:
            train_seed(study, 0, runtime=runtime)
    msg = str(info.value)
    assert isinstance(info.value, WriterError) or writer == "thread"
    path = run_path(study, 0)
    store = RunStore(path, mode="r")
    assert 1 <= store.committed <= 20  # a batch (<= 16 checkpoints) before the disk filled
    if writer == "process":
        assert info.value.errno == errno.ENOSPC
        assert f"first {store.committed} checkpoints are committed and intact" in msg
    if writer == "process":  # the trainer's own disk was not full: it recorded the failure
        assert store.status == "failed" and "No space left on device" in store.attrs["error"]
        row = seed_status(study)[0]
        assert row["status"] == "failed" and "No space left" in row["error"]
    else:  # the status could not be written either; the original error was raised all the same
        assert store.status == "running"
    assert store.validate() == []  # everything committed reads back
    ds = store.dataset("weights")
    assert ds.sizes["step"] == store.committed and np.isfinite(ds["layers.0.weight"].values).all()
    # space again: the same command resumes from the last commit and ends where a clean run ends
    assert train_seed(study, 0)["status"] == "complete"
    a, b = store_arrays(path), store_arrays(run_path(clean, 0))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


KILL_PARENT = """
import sys
from vt_core.runtime import Runtime
from vt_core.stages.train import train_seed
train_seed(sys.argv[1], 0, runtime=Runtime(writer="process"))
"""


def _writer_pids(parent: int) -> list[int]:
    """The writer processes (named ``vt-writer``) that ``parent`` started: its children, or after
    it died, the same pids while they live on."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if comm == "vt-writer" and int(rest[1]) == parent:
                pids.append(int(p.name))
    return pids


@pytest.mark.integration  # starts processes (a kill trial, worker processes or a compiler)
@linux_only
def test_writer_process_dies_with_a_killed_trainer(tmp_path):
    study = _study(tmp_path, "orphan", epochs=400)
    path = run_path(study, 0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILL_PARENT, str(study)], env=env)
    deadline = time.time() + 120
    while committed_steps(path) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "training ended before it could be killed"
    writers = _writer_pids(proc.pid)
    assert writers, "no writer process found while training"
    proc.send_signal(signal.SIGKILL)  # the trainer alone, not its process group
    proc.wait()

    def alive() -> list[int]:
        return [p for p in writers if Path(f"/proc/{p}").exists() and "(vt-writer)" in _stat(p)]

    deadline = time.time() + 10
    while alive() and time.time() < deadline:
        time.sleep(0.05)
    assert alive() == []
    assert RunStore(path, mode="r").validate() == []


def _stat(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""


@linux_only
def test_writer_process_that_vanishes_is_reported(tmp_path):
    store = RunStore.create(tmp_path / "s.zarr", seed=0, config_hash="x", config={})
    w = ProcessCheckpointWriter(store, capacity=4)
    w._proc.kill()
    w._proc.wait()
    with pytest.raises(WriterError, match=r"writer process ended unexpectedly \(exit code -9\).*intact"):
        w.close()


@linux_only
@pytest.mark.parametrize("max_pending", [1, 256 * 2**20], ids=["waits-for-the-writer", "queues-ahead"])
def test_frames_larger_than_the_pipe_arrive_whole_and_in_order(tmp_path, max_pending):
    """Checkpoints of 3 MB (the pipe holds 1 MiB) go in pieces, from the training thread itself:
    waiting for the writer when more than ``max_pending`` bytes are queued, else queued ahead and
    sent at later checkpoints and at close. Every checkpoint is committed, in order, bit for bit."""
    from vt_core.storage.resume_file import Position
    from vt_core.storage.run_store import Checkpoint

    store = RunStore.create(tmp_path / "s.zarr", seed=0, config_hash="x", config={})
    rng = np.random.default_rng(0)
    sent = [rng.standard_normal((750, 1000)).astype(np.float32) for _ in range(6)]
    w = ProcessCheckpointWriter(store, capacity=6, max_pending_bytes=max_pending)
    for i, x in enumerate(sent):
        w.submit(Checkpoint(index=i, step=10 * i, epoch=float(i), scalars={"train_loss": float(i)},
                            weights={"w": x.copy()}), Position(10 * i, i + 1))
        assert w._pending <= max_pending  # waits-for-the-writer: nothing is left queued here
    w.close(("complete", None))
    got = RunStore(store.path, mode="r")
    assert got.committed == 6 and got.status == "complete" and got.check(read=True) == []
    np.testing.assert_array_equal(got.root["weights"]["w"][:], np.stack(sent))
    assert got.root["step"][:].tolist() == [0, 10, 20, 30, 40, 50]
    assert got.load_resume()["position"].tolist() == [50, 6]


def _affinity_after_keep_off(allowed: set[int], cpu: int) -> set[int]:
    code = (f"import os, sys; from vt_core.storage.writer import _keep_off; os.sched_setaffinity(0, {allowed}); "
            f"_keep_off({cpu}); print(sorted(os.sched_getaffinity(0)))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True).stdout
    return set(eval(out))  # noqa: S307 - a list of ints printed by the line above


@linux_only
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_writer_process_keeps_off_the_training_threads_cpu(tmp_path):
    """The writer runs on the CPUs allowed but the one the training thread was on when it started
    (woken by a frame, it would otherwise preempt training there); on a single allowed CPU it stays."""
    from vt_core.storage.writer import _current_cpu

    a, b = sorted(os.sched_getaffinity(0))[:2]
    assert _affinity_after_keep_off({a, b}, a) == {b}
    assert _affinity_after_keep_off({a}, a) == {a}
    assert _affinity_after_keep_off({a, b}, 10_000) == {a, b}
    store = RunStore.create(tmp_path / "s.zarr", seed=0, config_hash="x", config={})
    w = ProcessCheckpointWriter(store, capacity=4)
    try:
        cpu = int(w._proc.args[7])
        assert cpu in os.sched_getaffinity(0) and _current_cpu() is not None
        deadline = time.time() + 30
        while cpu in os.sched_getaffinity(w._proc.pid) and time.time() < deadline:
            time.sleep(0.01)
        assert os.sched_getaffinity(w._proc.pid) == os.sched_getaffinity(0) - {cpu}
    finally:
        w.close()


@linux_only
def test_a_close_interrupted_while_sending_leaves_no_writer_waiting(tmp_path, monkeypatch):
    """Ctrl-C while the last frames go into the pipe: the child sees its input end (a frame cut
    short) and stops without writing what it had not committed; closing again reports it, no hang."""
    from vt_core.storage.resume_file import Position
    from vt_core.storage.run_store import Checkpoint

    store = RunStore.create(tmp_path / "s.zarr", seed=0, config_hash="x", config={})
    w = ProcessCheckpointWriter(store, capacity=4)
    w.submit(Checkpoint(index=0, step=0, epoch=0.0, scalars={"train_loss": 0.0},
                        weights={"w": np.zeros((750, 1000), np.float32)}), Position(0, 1))
    calls = []

    def interrupted(limit=None):
        calls.append(limit)
        raise KeyboardInterrupt

    monkeypatch.setattr(w, "_pump", interrupted)
    with pytest.raises(KeyboardInterrupt):
        w.close(("complete", None))
    assert calls
    t = time.time()
    with pytest.raises(WriterError, match="ended unexpectedly"):
        w.close()
    assert time.time() - t < 30 and w._proc.returncode is not None
    assert RunStore(store.path, mode="r").status != "complete"


def test_a_writer_started_as_a_new_interpreter_finds_the_package_where_it_lies():
    """``VT_WRITER_START=exec`` puts the directory holding ``vt_core/`` on the new interpreter's
    path: computed from the module's depth, so moving the writer into a wing cannot leave
    ``vt_core/`` itself there (which once made ``config``, ``data``, ``models`` top-level names)."""
    from vt_core.storage.writer import package_root

    assert (Path(package_root()) / "vt_core" / "__init__.py").is_file()
    assert Path(package_root()) == ROOT
