"""Write checkpoints in the background while training goes on: in a writer process, or a thread.

:func:`make_writer` picks the writer. On Linux it is a **writer process**, a fork of the training
process (``VT_WRITER_START=exec``: a new interpreter, ``python -m vt_core.storage.writer``): the training
process pickles each checkpoint's host arrays and its resume state (``torch.save``-d, or a recorded
seed's :class:`~vt_core.storage.resume_file.Position`) into a pipe, from the training thread, without
waiting for the child, and the child writes them (with the thread writer's loop,
:class:`~vt_core.storage.writer_thread.CheckpointWriter`) at ``runtime.writer_nice``, off the CPU the
training thread was on when it started (:func:`_keep_off`). In a
thread of the training process that work takes the GIL from the training loop (1.3x against 1.03-1.08x
for a process at the demo's cadence, benchmarks/RESULTS.md). The child dies with its parent
(``PR_SET_PDEATHSIG``), so a killed run leaves no writer behind to race the resumed one.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import zarr

from vt_core.runtime import Runtime, RuntimeSettingError
from vt_core.storage.resume_file import Position
from vt_core.storage.run_store import Checkpoint, RunStore
from vt_core.storage.writer_thread import CheckpointWriter, WriterError, snapshot, write_committed

__all__ = ["CheckpointWriter", "ProcessCheckpointWriter", "WriterError", "make_writer", "snapshot",
           "write_committed"]


def _serialise_state(state: dict | bytes | Position) -> bytes | Position:
    """``state`` as it crosses the pipe: a state dict ``torch.save``-d here; bytes and a
    :class:`~vt_core.storage.resume_file.Position` (plain numbers, serialised by the child) as they are."""
    if isinstance(state, (bytes, Position)):
        return state
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)  # copies the tensors out now: later steps cannot change what is saved
    return buf.getvalue()


class ProcessCheckpointWriter:
    """The interface of :class:`CheckpointWriter`, with the writing done by a child process.

    Frames on the child's stdin: 8-byte length + pickle of ``(Checkpoint, state bytes)``; an empty
    frame asks it to write what is queued and exit. It answers one JSON line on stdout: ``{"ok":
    committed}`` or ``{"error": ...}`` as soon as a write fails (then it exits). ``nice``: the
    child's niceness (given in its argv), so that writing yields the cores to training."""

    def __init__(self, store: RunStore, capacity: int, max_pending_bytes: int = 256 * 2**20,
                 flush_every: int = 16, flush_seconds: float = 1.0, nice: int = Runtime.writer_nice,
                 start: str = Runtime.writer_start):
        # smaller batches than the thread writer's: the child's work no longer takes the trainer's
        # GIL, and a child that keeps up leaves less to write after the last step
        self.store = store
        cpu = _current_cpu()
        args = [str(store.path), str(capacity), str(max_pending_bytes), str(flush_every), str(flush_seconds),
                str(os.getpid()), str(nice), str(-1 if cpu is None else cpu)]
        self._proc = _fork_child(args) if start == "fork" and _can_fork() else _exec_child(args)
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None  # both are pipes
        self._stdin, self._stdout = stdin, stdout
        try:  # a larger pipe: fewer wake-ups per checkpoint (Linux; the default 64 KiB otherwise)
            import fcntl

            fcntl.fcntl(self._stdin.fileno(), 1031, 2**20)  # F_SETPIPE_SZ
        except (ImportError, OSError):
            pass
        self._answer: dict | None = None
        self._reader = threading.Thread(target=self._read, name=f"vt-writer-reply-{store.path.name}", daemon=True)
        self._reader.start()
        # frames go into the pipe from the training thread itself, as far as the pipe takes them
        # without waiting; the rest wait here (at most ``max_pending_bytes``) and go at the next
        # checkpoint. No feeder thread: one woke at every checkpoint on the training thread's CPU
        # and took the GIL from it (~400 involuntary switches of the training thread a run beside
        # a CPU-bound process, benchmarks/RESULTS.md)
        self._fd = self._stdin.fileno()
        os.set_blocking(self._fd, False)
        self._out: collections.deque[memoryview] = collections.deque()
        self._pending, self._max_pending = 0, max_pending_bytes
        self._broken = self._ended = False

    def _read(self) -> None:
        line = self._stdout.readline()
        try:
            self._answer = json.loads(line) if line else None
        except ValueError:
            self._answer = {"error": {"type": "WriterError", "errno": None, "message": line.decode(errors="replace")}}

    def _failure(self) -> WriterError:
        self._reader.join(timeout=30)
        err = (self._answer or {}).get("error")
        committed = RunStore(self.store.path, mode="r").committed  # the child committed: read it anew
        if err is None:
            code = self._proc.wait(timeout=30)
            return WriterError(f"{self.store.path}: the checkpoint writer process ended unexpectedly (exit "
                               f"code {code}); checkpoints up to the last commit ({committed}) are intact — "
                               f"run again to resume")
        msg = (f"{self.store.path}: writing checkpoints failed: {err['type']}: {err['message']}. The "
               f"first {committed} checkpoints are committed and intact; fix the cause and run again to "
               f"resume from there")
        return WriterError(err["errno"], msg) if err.get("errno") else WriterError(msg)

    def _pump(self, limit: int | None = None) -> None:
        """Write queued frames into the pipe, as much as it takes now; with ``limit``, waiting for
        room until at most ``limit`` bytes are left queued."""
        while self._out and not self._broken:
            try:
                n = os.write(self._fd, self._out[0])
            except BlockingIOError:
                if limit is None or self._pending <= limit:
                    return
                select.select([], [self._fd], [], 1.0)  # the pipe has room, or a second passed
                if self._answer is not None:  # the child gave up (an error): it reads no more
                    self._broken = True
                continue
            except OSError:  # the child is gone (EPIPE)
                self._broken = True
                return
            self._pending -= n
            if n == len(self._out[0]):
                self._out.popleft()
            else:
                self._out[0] = self._out[0][n:]

    def _send(self, payload: bytes) -> None:
        if self._answer is not None or self._broken:
            raise self._failure()
        self._out.extend((memoryview(struct.pack("<Q", len(payload))), memoryview(payload)))
        self._pending += 8 + len(payload)
        # far behind (more than max_pending_bytes queued): training waits for the writer
        self._pump(self._max_pending if self._pending > self._max_pending else None)
        if self._broken:
            raise self._failure()

    def submit(self, ckpt: Checkpoint, state: dict | bytes | Position) -> None:
        """Hand one checkpoint to the writer (blocks while the writer is far behind)."""
        self._send(pickle.dumps((ckpt, _serialise_state(state)), protocol=pickle.HIGHEST_PROTOCOL))

    def close(self, status: tuple[str, str | None] | None = None) -> None:
        """Write everything queued, wait for the writer, raise if anything failed; ``status``: as
        for :meth:`CheckpointWriter.close` (done by the child)."""
        if not self._ended:
            self._ended = True
            try:
                if status is not None:
                    self._send(pickle.dumps(("close", *status), protocol=pickle.HIGHEST_PROTOCOL))
                self._out.append(memoryview(struct.pack("<Q", 0)))  # asks the child to write what is queued and exit
                self._pump(0)
            finally:  # also when interrupted: the child then sees its input end and stops, never waits
                try:
                    self._stdin.close()
                except OSError:
                    pass
        self._reader.join()
        if not self._answer or "ok" not in self._answer:
            self._proc.wait()
            raise self._failure()
        # everything is committed once the child says so: its exit (~10 ms, unmapping the pages it
        # shares with this process) is waited for beside the loop, not by it
        threading.Thread(target=self._proc.wait, name="vt-writer-reap", daemon=True).start()


class _Forked:
    """A child made by ``os.fork`` (no new interpreter), with the parts of ``Popen`` used here."""

    def __init__(self, pid: int, stdin, stdout, args: list[str]) -> None:
        self.pid, self.stdin, self.stdout, self.args = pid, stdin, stdout, args
        self.returncode: int | None = None

    def kill(self) -> None:
        import signal

        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, 0 if deadline is None else os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:  # type: ignore[operator]
                raise subprocess.TimeoutExpired(f"writer {self.pid}", timeout or 0)
            else:
                time.sleep(0.01)
        return self.returncode


def _can_fork() -> bool:
    """Fork the writer (Linux; ``runtime.writer_start``): a new interpreter would spend ~0.5 s of
    CPU importing numpy and zarr before writing anything, CPU that a loaded machine takes from
    training (issue 21)."""
    return sys.platform.startswith("linux")


def package_root() -> str:
    """The directory that holds ``vt_core/``, for a new interpreter's PYTHONPATH: as many levels
    above this file as this module's dotted name is deep (so that a move of this module cannot
    leave a wrong path behind)."""
    name = __spec__.name if __spec__ else __name__  # "__main__" under `python -m`
    return str(Path(__file__).resolve().parents[name.count(".")])


def _exec_child(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root(), os.environ.get("PYTHONPATH")])),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # it never multiplies
    return subprocess.Popen([sys.executable, "-m", "vt_core.storage.writer", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, close_fds=True,
                            start_new_session=True)  # the terminal's Ctrl-C goes to the trainer only


def _fork_child(args: list[str]) -> _Forked:
    """The writer as a fork of this process: it shares the modules already imported. Only the
    forking thread lives on in the child, which touches nothing of the parent's but zarr (which
    resets its event loop after a fork), numpy and this module, and leaves by ``os._exit``."""
    import signal

    from_parent, to_child = os.pipe()  # (read end, write end)
    from_child, to_parent = os.pipe()
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()  # nothing buffered is written twice
        except (OSError, ValueError, AttributeError):
            pass
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            import gc

            gc.freeze()  # the parent's objects (and its garbage, whose finalizers are the parent's) stay
            os.setsid()  # the terminal's Ctrl-C goes to the trainer, which stops at a checkpoint
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)  # not the trainer's handlers
            os.close(to_child)
            os.close(from_child)
            code = _child_main(args, os.fdopen(from_parent, "rb"), os.fdopen(to_parent, "w"))
        except BaseException:  # noqa: BLE001 - never return into the parent's stack
            code = 1
        finally:
            os._exit(code)
    os.close(from_parent)
    os.close(to_parent)
    return _Forked(pid, os.fdopen(to_child, "wb"), os.fdopen(from_child, "rb"), args)


def make_writer(store: RunStore, capacity: int, runtime: Runtime | None = None,
                max_pending_bytes: int = 256 * 2**20) -> CheckpointWriter | ProcessCheckpointWriter:
    """The writer ``runtime.writer`` names (None: :class:`Runtime`'s defaults, the process writer
    on Linux), at niceness ``runtime.writer_nice``; the thread writer for a memory:// store
    (another process cannot see it). At most ``max_pending_bytes`` of checkpoints wait (1: one
    checkpoint at a time, each handed over once the previous one is taken)."""
    from vt_core.storage.location import same_process_only

    runtime = Runtime() if runtime is None else runtime
    kind = runtime.writer
    if kind not in ("process", "thread"):
        raise RuntimeSettingError(f"runtime.writer={kind!r}: use 'process' or 'thread' (VT_WRITER)")
    if kind == "thread" or same_process_only(store.path):
        return CheckpointWriter(store, capacity, max_pending_bytes)
    return ProcessCheckpointWriter(store, capacity, max_pending_bytes, nice=runtime.writer_nice,
                                   start=runtime.writer_start)


def _current_cpu() -> int | None:
    """The CPU the calling thread runs on now (Linux: field 39 of /proc/thread-self/stat); None
    where that cannot be read."""
    try:
        with open("/proc/thread-self/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[36])
    except (OSError, ValueError, IndexError):
        return None


def _keep_off(cpu: int) -> set[int] | None:
    """Keep this process (and the threads it starts later) off ``cpu``, the CPU the training thread
    was on when it started the writer, where other CPUs are allowed; returns the CPUs it was allowed
    before (None: unchanged). Woken by a frame, the writer is otherwise placed on the CPU of the
    thread that wrote it (the kernel's wake-affine choice) and preempts training there: ~400
    involuntary switches of the training thread in the demo's run beside a CPU-bound process, ~60
    when kept off it (benchmarks/RESULTS.md). Training is not pinned: the kernel may still move it
    (and would move it away from a busy writer)."""
    try:
        allowed = os.sched_getaffinity(0)
        if cpu in allowed and len(allowed) > 1:
            os.sched_setaffinity(0, allowed - {cpu})
            return allowed
    except (OSError, AttributeError):
        pass
    return None


def _allow(cpus: set[int]) -> None:
    """Let every thread of this process run on ``cpus`` again: once training waits for the writer
    to finish, the CPU it trained on is free."""
    try:
        for tid in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(tid), cpus)
    except (OSError, ValueError):
        pass


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(15, b"vt-writer", 0, 0, 0)  # PR_SET_NAME: what ps and top show for it
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _read_exact(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError
    return data


def _child_main(argv: list[str], inp=None, out=None) -> int:
    """The writer process: frames from ``inp`` (stdin), one answer line to ``out`` (stdout)."""
    path, capacity, max_pending, flush_every, flush_seconds, parent, nice, cpu = argv
    _die_with_parent(int(parent))
    allowed = _keep_off(int(cpu)) if int(cpu) >= 0 else None
    try:  # training comes first: where the cores are all busy the writer yields to it
        os.nice(int(nice))
    except (OSError, AttributeError, ValueError):
        pass
    zarr.config.set({"threading.max_workers": 1})  # one core's worth of writing, not every core's
    if out is None:
        out = sys.stdout
        sys.stdout = sys.stderr  # nothing but the answer goes to the parent's pipe
    if inp is None:
        inp = sys.stdin.buffer
    writer = None
    final: tuple[str, str | None] | None = None
    answer: dict[str, object]
    try:
        store = RunStore(path)
        writer = CheckpointWriter(store, int(capacity), int(max_pending), int(flush_every), float(flush_seconds))
        while True:
            try:
                (n,) = struct.unpack("<Q", _read_exact(inp, 8))
                frame = _read_exact(inp, n)
            except EOFError:  # the parent went away (or was interrupted) without closing, maybe
                return 1  # in the middle of a frame: write nothing more
            if n == 0:
                if allowed:
                    _allow(allowed)
                break
            item = pickle.loads(frame)
            if item[0] == "close":  # the final status, sent before the end
                final = (item[1], item[2])
                continue
            writer.submit(*item)
        writer.close(final)
        answer = {"ok": store.committed}
    except BaseException as err:  # noqa: BLE001 - reported to the parent
        answer = {"error": {"type": type(err).__name__, "errno": getattr(err, "errno", None), "message": str(err)}}
    out.write(json.dumps(answer) + "\n")
    out.flush()
    return 0 if "ok" in answer else 1


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
