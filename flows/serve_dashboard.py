"""Serve a dashboard directory over HTTP (``vt dashboard STUDY --serve``): loopback by default."""

from __future__ import annotations

import contextlib
import functools
import http.server
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


def serve_directory(directory: Path, host: str, port: int, say: Callable[[str], None] = print,
                    stop: threading.Event | None = None,
                    served: Callable[[str], AbstractContextManager] | None = None) -> None:
    """Serve until Ctrl-C (or until ``stop`` is set); meanwhile inside ``served(url)`` (which
    records where the page is served: :func:`vt_core.report.serving.serving`)."""
    server = make_server(directory, host, port)
    h, p = server.server_address[:2]
    link = page_url(str(h), int(p))
    say(f"serving {link} (Ctrl-C to stop)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        say(f"warning: bound to {host}: anyone who can reach this machine can read the dashboard")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with served(link) if served else contextlib.nullcontext():
            if stop is None:
                thread.join()
            else:
                stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
