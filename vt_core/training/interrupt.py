"""A request to stop training at the next checkpoint (the first Ctrl-C, or SIGTERM).

The edge (the `vt` command, a flow) turns signals into :func:`request_stop`; training checks
:func:`check_stop` after each checkpoint has been handed to its writer, so that everything written
so far is committed and the seed ends ``interrupted``; queued seeds do not start. Nothing here
installs a signal handler: that belongs to whoever owns the process.
"""

from __future__ import annotations

import threading

from vt_core.errors import VtError

_stop = threading.Event()


class Interrupted(VtError, RuntimeError):
    """Training stopped at a checkpoint because a stop was requested."""


def request_stop() -> None:
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def clear() -> None:
    _stop.clear()


def check_stop() -> None:
    """Raise :class:`Interrupted` when a stop has been requested (call at a checkpoint boundary)."""
    if _stop.is_set():
        raise Interrupted("stopped at a checkpoint on request (Ctrl-C or SIGTERM)")


class StudyInterrupted(VtError, RuntimeError):
    """A run stopped on request: the seeds it stopped and those it never started."""

    def __init__(self, study: object, stopped: list[int], not_started: list[int]):
        self.stopped, self.not_started = stopped, not_started
        parts = []
        if stopped:
            parts.append(f"seed{'s' if len(stopped) > 1 else ''} {', '.join(map(str, stopped))} stopped at "
                         f"{'their' if len(stopped) > 1 else 'its'} last checkpoint (everything written is committed)")
        if not_started:
            parts.append(f"seed{'s' if len(not_started) > 1 else ''} {', '.join(map(str, not_started))} not started")
        super().__init__(f"interrupted: {'; '.join(parts) or 'no seed was training'}; nothing was analysed. "
                         f"Run the same command again to resume from the last checkpoints")
