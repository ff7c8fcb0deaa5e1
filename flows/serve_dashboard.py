"""Serve a dashboard directory over HTTP (``vt dashboard STUDY --serve``): loopback by default."""

from __future__ import annotations

import contextlib
import functools
import http.server
import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from vt_core.report.serving import page_url


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per request is noise for a single page
        pass


def make_server(directory: Path, host: str = "127.0.0.1", port: int = 0) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    return http.server.ThreadingHTTPServer((host, port), handler)


class _Terminated(Exception):
    """SIGTERM arrived (a service manager, `kill`): stop serving as Ctrl-C does."""


@contextlib.contextmanager
def _stop_on_sigterm():
    """While serving, SIGTERM stops the server like Ctrl-C, so that what ``served`` recorded is
    removed (the default SIGTERM ends the process without running any cleanup)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise _Terminated

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except _Terminated:
        pass
    finally:
        signal.signal(signal.SIGTERM, before)


def serve_directory(directory: Path, host: str, port: int, say: Callable[[str], None] = print,
                    stop: threading.Event | None = None,
                    served: Callable[[str], AbstractContextManager] | None = None, page: str | None = None) -> None:
    """Serve until Ctrl-C (or until ``stop`` is set); meanwhile inside ``served(url)`` (which
    records where the page is served: :func:`vt_core.report.serving.serving`)."""
    server = make_server(directory, host, port)
    h, p = server.server_address[:2]
    link = page_url(str(h), int(p), page)
    say(f"serving {link} (Ctrl-C to stop)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        say(f"warning: bound to {host}: anyone who can reach this machine can read the dashboard")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with _stop_on_sigterm(), served(link) if served else contextlib.nullcontext():
            if stop is None:
                thread.join()
            else:
                stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
