"""The thread writer: checkpoints written by a thread of the process that trains, in order.

The training thread hands over a checkpoint (numpy copies) and a snapshot of the resume state
(cloned tensors); one writer thread writes the arrays, then the resume state, then bumps the
commit (:func:`write_committed`). Whatever has queued up while it wrote is written next as one
batch. It waits for up to ``flush_every`` checkpoints or ``flush_seconds`` before writing: every
batch costs a few files and a zarr call per array whatever its size, so fewer, larger batches are
what keeps capture cheap. The commit protocol is unchanged: a kill loses at most the checkpoints
still queued, and the run resumes from the last one committed. At most ``max_pending_bytes`` wait
in memory, so a slow disk slows training down instead of filling the RAM. It is the writer
process's own loop too (:mod:`vt_core.storage.writer`), and the writer wherever there is no process
writer (``VT_WRITER=thread``, other systems, a ``memory://`` store); in the training process its
Python work takes the GIL from the training loop (benchmarks/RESULTS.md, issue 21).
"""

from __future__ import annotations

import queue
import threading
import time

from vt_core.errors import VtError
from vt_core.storage.resume_file import Position
from vt_core.storage.run_store import Checkpoint, RunStore


def snapshot(state):
    """A deep copy of a (nested) state dict whose tensors no longer alias the live ones, on the
    CPU; bytes (a state already serialised) are kept as they are."""
    if isinstance(state, bytes):
        return state
    import torch

    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: snapshot(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(snapshot(v) for v in state)
    return state


def write_committed(store: RunStore, ckpts: list[Checkpoint], state, capacity: int) -> None:
    """The commit protocol, in order: the checkpoints' rows, then the resume state (None: none
    kept), then the commit that makes them readable. A kill at any point leaves the last commit."""
    store.write_batch(ckpts, capacity=capacity)
    if state is not None:
        store.save_resume(state)
    store.commit(ckpts[-1].index + 1, ckpts[-1].step)


class CheckpointWriter:
    def __init__(self, store: RunStore, capacity: int, max_pending_bytes: int = 256 * 2**20,
                 flush_every: int = 16, flush_seconds: float = 2.0):
        store.hold_chunks = True  # the store's one writer until it closes: chunks being filled stay in memory
        self.store, self.capacity = store, capacity
        self.flush_every, self.flush_seconds = flush_every, flush_seconds
        self._queue: queue.Queue = queue.Queue()
        self._room = threading.Condition()
        self._pending = 0
        self._max_pending = max_pending_bytes
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"vt-writer-{store.path.name}", daemon=True)
        self._thread.start()

    def _take(self) -> tuple[list, bool]:
        """The next batch: wait for one item, then gather more until ``flush_every`` items, the
        byte limit, ``flush_seconds`` or the end."""
        first = self._queue.get()
        if first is None:
            return [], True
        items, deadline = [first], time.monotonic() + self.flush_seconds
        while self._backlog(items):  # a writer that fell behind writes all it has as one batch:
            try:  # every zarr call costs the same whatever its size (a starved writer catches up)
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return items, True
            items.append(item)
        while len(items) < self.flush_every and self._pending < self._max_pending // 2:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                return items, True
            items.append(item)
        return items, False

    def _backlog(self, items: list) -> bool:
        return sum(c.nbytes() for c, _ in items) < self._max_pending // 2 and len(items) < 64 * self.flush_every

    def _run(self) -> None:
        done = False
        while not done:
            items, done = self._take()
            if items and self._error is None:  # after a failed write nothing more may be committed
                ckpts, state = [c for c, _ in items], items[-1][1]
                try:
                    write_committed(self.store, ckpts, state, self.capacity)
                except BaseException as err:  # noqa: BLE001 - handed to the training thread
                    self._error = err
            with self._room:
                self._pending -= sum(c.nbytes() for c, _ in items)
                self._room.notify_all()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, ckpt: Checkpoint, state: dict | bytes | Position) -> None:
        """Queue one checkpoint (blocks while too many bytes are waiting); re-raises a write error."""
        self._raise()
        size = ckpt.nbytes()
        with self._room:
            while self._pending > 0 and self._pending + size > self._max_pending and self._thread.is_alive():
                self._room.wait(timeout=1.0)
            self._pending += size
        self._queue.put((ckpt, snapshot(state)))

    def close(self, status: tuple[str, str | None] | None = None) -> None:
        """Write everything queued, stop the thread, re-raise a write error. With ``status``
        (``(status, error)``), a clean end: the arrays are cut to the committed rows and the seed's
        final status is recorded, in the one process that has the store's arrays at hand."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()
        if status is not None:
            self.store.trim()
            self.store.set_status(*status)


class WriterError(VtError, OSError):
    """Writing checkpoints failed; what was committed before stays readable."""
