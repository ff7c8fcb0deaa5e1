"""vt_core.report.serving: the flow links to a dashboard over HTTP only while a live server on this host
serves it."""

from __future__ import annotations

import socket
import subprocess

from vt_core.report.serving import page_url, served_url, serving
from vt_core.storage.layout import layout
from vt_core.storage.location import write_json_atomic


def test_served_while_the_block_runs(tmp_path):
    assert served_url(tmp_path) is None
    with serving(tmp_path, "http://127.0.0.1:8765/index.html"):
        assert served_url(tmp_path) == "http://127.0.0.1:8765/index.html"
    assert served_url(tmp_path) is None and not layout(tmp_path).dashboard_served.exists()


def test_a_dead_server_another_hosts_or_a_damaged_record_points_nowhere(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    record = layout(tmp_path).dashboard_served
    for host, pid in ((socket.gethostname(), gone.pid), ("another-host", 1)):
        write_json_atomic(record, {"url": "http://127.0.0.1:1/index.html", "host": host, "pid": pid})
        assert served_url(tmp_path) is None
    record.write_text("{not json")
    assert served_url(tmp_path) is None


def test_a_newer_server_keeps_its_record(tmp_path):
    with serving(tmp_path, "http://a/index.html"):
        with serving(tmp_path, "http://b/index.html"):
            pass
        write_json_atomic(layout(tmp_path).dashboard_served,
                          {"url": "http://c/index.html", "host": socket.gethostname(), "pid": 1})
    assert layout(tmp_path).dashboard_served.exists()  # the first server's exit leaves another's record


def test_page_url():
    assert page_url("127.0.0.1", 8765) == "http://127.0.0.1:8765/index.html"
    assert page_url("::1", 80) == "http://[::1]:80/index.html"
    assert page_url("0.0.0.0", 80) == f"http://{socket.gethostname()}:80/index.html"
