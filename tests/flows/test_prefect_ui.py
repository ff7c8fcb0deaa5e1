"""What the Prefect UI shows of vt's flow runs: names and tags from the study, artifact keys unique per
study location, and a dashboard pointer the UI can use; all read back from the harness's API."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.sorting import ArtifactSort

from flows.serve_dashboard import serve_directory
from flows.study import analyze_flow
from tests.helpers import ROOT
from vt_core.report.serving import served_url, serving
from vt_core.stages.publish import artifact_key, location_tag
from vt_core.storage.layout import layout
from vt_core.storage.study import load_study

pytestmark = pytest.mark.flow  # runs a Prefect flow or the `vt` command

KINDS = ("dashboard", "summary", "model-selection")


def _analyze(study):
    """`vt analyze` on an analysed study (the analysis is reused: only the artifacts are published)."""
    state = analyze_flow(study=str(study), force=False, return_state=True)
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def _newest(study, kind: str):
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
            any_=[artifact_key(study, "tiny", kind)])), sort=ArtifactSort.CREATED_DESC, limit=1)
    return arts[0]


def test_runs_are_named_and_tagged_and_artifacts_keyed_by_location(analysed_study, tmp_path):
    a, b = tmp_path / "a" / "tiny", tmp_path / "b" / "tiny"  # two studies named "tiny"
    for study in (a, b):
        shutil.copytree(analysed_study, study)
    run_a1, run_b1, run_a2 = _analyze(a), _analyze(b), _analyze(a)
    assert (run_a1.name, run_b1.name, run_a2.name) == ("tiny · analyze 1", "tiny · analyze 1", "tiny · analyze 2")
    assert {"vt", "study:tiny", f"training:{load_study(a).training_hash()}", location_tag(a)} <= set(run_a1.tags)
    assert location_tag(b) in run_b1.tags and location_tag(a) not in run_b1.tags
    with get_client(sync_client=True) as client:  # the runs list filters one study's runs by its tag
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[location_tag(a)])))
    assert {r.id for r in runs} == {run_a1.id, run_a2.id}

    for kind in KINDS:
        key_a, key_b = artifact_key(a, "tiny", kind), artifact_key(b, "tiny", kind)
        assert key_a != key_b and re.fullmatch(r"[a-z0-9-]+", key_a) and key_a.startswith("vt-tiny-")
        assert _newest(a, kind).flow_run_id == run_a2.id and _newest(b, kind).flow_run_id == run_b1.id
    pointer = str(_newest(a, "dashboard").data)  # not served: the path and the command, stated as such
    assert str(a / "dashboard" / "index.html") in pointer and f"vt dashboard {a} --open" in pointer
    assert "file://" not in pointer and "cannot open files" in pointer


def test_a_served_dashboard_is_linked_over_http(analysed_study, tmp_path):
    study = tmp_path / "tiny"
    shutil.copytree(analysed_study, study)
    said, stop = [], threading.Event()
    server = threading.Thread(target=serve_directory, args=(study / "dashboard", "127.0.0.1", 0, said.append, stop,
                                                            functools.partial(serving, study)))
    server.start()
    try:
        for _ in range(100):
            if served_url(study):
                break
            time.sleep(0.05)
        url = served_url(study)
        assert url and said[0] == f"serving {url} (Ctrl-C to stop)"
        with urllib.request.urlopen(url, timeout=10) as page:
            assert b"Bokeh" in page.read()
        run = _analyze(study)
        pointer = _newest(study, "dashboard")
        assert pointer.flow_run_id == run.id and str(pointer.data) == f"[vt dashboard: tiny]({url})"
    finally:
        stop.set()
        server.join()
    assert served_url(study) is None and not layout(study).dashboard_served.exists()
    _analyze(study)  # no longer served: the pointer names the file again
    assert "vt dashboard" in str(_newest(study, "dashboard").data) and "http" not in str(_newest(study, "dashboard").data)


def test_the_temporary_server_gets_two_minutes_to_start_unless_the_user_says():
    code = ("import tasks; from prefect.settings import get_current_settings; "
            "print(get_current_settings().server.ephemeral.startup_timeout_seconds)")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    for extra, expected in (({}, "120"), ({"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "7"}, "7")):
        out = subprocess.run([sys.executable, "-c", code], env={**env, **extra, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                             capture_output=True, text=True, check=True)
        assert out.stdout.split()[-1] == expected
