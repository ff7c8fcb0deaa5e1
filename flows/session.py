"""What `vt run`, `vt rerun` and `vt analyze` put around a flow: signals, Prefect's temporary server
and the live display.

- **Signals**: the first Ctrl-C (SIGINT) or SIGTERM asks training to stop at its next checkpoint
  (:mod:`vt_core.training.interrupt`): what is written is committed, running seeds end ``interrupted``,
  queued seeds do not start, nothing is analysed, and the command exits 130 naming how to resume.
  A second one exits at once (committed checkpoints are intact: a commit is atomic).
- **The temporary server** (no ``PREFECT_API_URL``): started here with SIGINT and SIGTERM blocked,
  so that the terminal's Ctrl-C reaches vt alone (the writer processes run in their own session for
  the same reason) and the server stays up until vt stops it, quietly.
- **The display** (:class:`flows.display.Display`) subscribes to :mod:`vt_core.progress`.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from vt_core.training import interrupt

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _temporary_server():
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    return None if PREFECT_API_URL.value() else SubprocessASGIServer()


def start_temporary_server(say: Callable[[str], None] | None = None) -> None:
    """Start Prefect's temporary API server now (nothing when a server is configured), with the
    terminal's signals blocked in it: they are inherited as blocked by the server process.
    ``say`` hears what is going on: the start takes seconds, and so does the server's shutdown
    when the command ends (Prefect waits for it at exit), which a person would otherwise watch in
    silence."""
    server = _temporary_server()
    if server is None or server.running:
        return
    if say is not None:
        say("starting Prefect's temporary API server (a few seconds; PREFECT_API_URL points vt at a server of "
            "your own instead) ...")
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(_SIGNALS))
    try:
        server.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    if say is not None:  # at exit handlers run last-registered first: before Prefect stops the server
        atexit.register(say, "closing Prefect's temporary API server (a few seconds) ...")


def _stop_server_now() -> None:
    server = _temporary_server()
    if server is not None and server.server_process is not None:
        server.server_process.kill()


_installed: list[Callable] = []  # the handler of the innermost `interruptible`


def _note(text: str) -> None:
    from vt_core.progress import note

    note(text)


@contextmanager
def keep_stop_on_sigterm() -> Iterator[None]:
    """Inside a flow: Prefect's engine replaces the SIGTERM handler with one that crashes the run;
    put vt's back (a stop at the next checkpoint), so that a scheduler's or a Prefect worker's
    SIGTERM ends the seeds ``interrupted`` with everything committed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = _installed[-1] if _installed else _make_handler(_note)
    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def interruptible(say: Callable[[str], None]) -> Iterator[None]:
    """Turn the first SIGINT / SIGTERM into a stop request and the second into an exit (130)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupt.clear()
    handler = _make_handler(say)
    old = {s: signal.signal(s, handler) for s in _SIGNALS}
    _installed.append(handler)
    try:
        yield
    finally:
        _installed.pop()
        for s, h in old.items():
            signal.signal(s, h)
        interrupt.clear()


def _make_handler(say: Callable[[str], None]) -> Callable:
    def handler(signum, _frame) -> None:
        if interrupt.stop_requested():
            say("stopped at once: every committed checkpoint is intact; run the same command again to resume")
            _stop_server_now()
            os._exit(130)
        interrupt.request_stop()
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        say(f"{name}: stopping at the next checkpoint (what is written is committed; nothing new starts). "
            f"Press Ctrl-C again to quit at once")

    return handler
