"""Write checkpoints in a background thread while training goes on.

The training thread hands over a checkpoint (numpy copies) and a snapshot of the resume state
(cloned tensors); one writer thread writes the arrays, then the resume state, then bumps the
commit, in order. The commit protocol is unchanged: a kill loses at most the checkpoints still
queued, and the run resumes from the last one committed. At most ``max_pending`` checkpoints wait
in memory, so a slow disk slows training down instead of filling the RAM.
"""

from __future__ import annotations

import queue
import threading

import torch

from vt_core.store import RunStore
from vt_core.training import Checkpoint


def snapshot(state: dict) -> dict:
    """A deep copy of a (nested) state dict whose tensors no longer alias the live ones, on the CPU."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: snapshot(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(snapshot(v) for v in state)
    return state


class CheckpointWriter:
    def __init__(self, store: RunStore, capacity: int, max_pending: int = 2):
        self.store, self.capacity = store, capacity
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"vt-writer-{store.path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # drain: nothing after a failed write may be committed
            ckpt, state = item
            try:
                self.store.write(ckpt, capacity=self.capacity)
                self.store.save_resume(state)
                self.store.commit(ckpt.index + 1, ckpt.step)
            except BaseException as err:  # noqa: BLE001 - handed to the training thread
                self._error = err

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, ckpt: Checkpoint, state: dict) -> None:
        """Queue one checkpoint (blocks while ``max_pending`` are waiting); re-raises a write error."""
        self._raise()
        self._queue.put((ckpt, snapshot(state)))

    def close(self) -> None:
        """Write everything queued, stop the thread, re-raise a write error."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()
