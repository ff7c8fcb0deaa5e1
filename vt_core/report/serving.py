"""Whether a study's dashboard is being served over HTTP, for the links that point at it.

``vt dashboard STUDY --serve`` records its URL, host and pid in the study while it serves
(:func:`serving`); the flow's dashboard artifact links to that URL while that process lives
(:func:`served_url`), and otherwise says where the standalone file is and how to open it."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from vt_core.runtime import process_alive
from vt_core.storage.layout import layout
from vt_core.storage.location import DamagedFileError, Location, is_remote, read_json, write_json_atomic


def page_url(host: str, port: int, page: str | None = None) -> str:
    """The URL a browser uses for a server bound to ``host`` (serving the dashboard's folder): a
    wildcard address is reached by the machine's name."""
    page = page or layout(".").dashboard.name
    name = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    return f"http://{f'[{name}]' if ':' in name else name}:{port}/{page}"


@contextlib.contextmanager
def serving(study: str | Location, url: str) -> Iterator[None]:
    """Record, while the block runs, that this process serves ``study``'s dashboard at ``url``.
    Remote studies are served from a local copy: nothing is recorded in them."""
    path = layout(study).dashboard_served
    if is_remote(path):
        yield
        return
    me = {"url": url, "host": socket.gethostname(), "pid": os.getpid()}
    write_json_atomic(path, me)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError, DamagedFileError):
            if read_json(path) == me:  # not a record that another server wrote since
                path.unlink()


def served_url(study: str | Location) -> str | None:
    """The http URL of the study's dashboard while a live ``vt dashboard --serve`` on this host
    serves it; None otherwise (never served, stopped, killed, or another host's server)."""
    path = layout(study).dashboard_served
    try:
        if not path.exists():
            return None
        rec = read_json(path)
    except (OSError, DamagedFileError):
        return None  # an unreadable record points nowhere: the artifact then names the file
    alive = rec.get("host") == socket.gethostname() and process_alive(rec.get("pid"))
    return str(rec["url"]) if alive and isinstance(rec.get("url"), str) else None
