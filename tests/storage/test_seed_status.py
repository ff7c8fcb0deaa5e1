"""The study's state from its seeds' (issue 34, item 1): a study stopped cleanly before any seed
finished is interrupted, never failed, and what resumes it names the config it was made from."""

from __future__ import annotations

import pytest

from vt_core.storage.seed_status import resume_command, study_state
from vt_core.storage.study import prepare_study


def _rows(**by_status):
    return [{"seed": s, "status": status} for status, seeds in by_status.items() for s in seeds]


@pytest.mark.parametrize("rows, state", [
    (_rows(interrupted=[0, 1], missing=[2]), "interrupted"),     # Ctrl-C before any seed finished
    (_rows(missing=[0, 1]), "interrupted"),                      # stopped before training began
    (_rows(complete=[0], interrupted=[1]), "interrupted"),
    (_rows(complete=[0], diverged=[1]), "complete"),
    (_rows(diverged=[0, 1]), "failed"),                          # nothing trained to the end
    (_rows(interrupted=[0], failed=[1]), "failed"),
    (_rows(complete=[0], damaged=[1]), "failed"),
    (_rows(complete=[0], running=[1]), "running"),
])
def test_the_state_follows_the_seeds(rows, state):
    assert study_state(rows)[0] == state


def test_the_hint_names_the_config_the_study_was_made_from(tiny_config, tmp_path):
    toml = tmp_path / "my study.toml"
    toml.write_text("# the config's own file\n")
    study = prepare_study(tiny_config, source=toml)
    resume = resume_command(study)
    assert resume == f"`vt run '{toml}'`"
    state, hints = study_state(_rows(interrupted=[0], missing=[1, 2]), resume)
    assert state == "interrupted" and hints == [
        f"seeds 0, 1, 2 interrupted or not started: `vt run '{toml}'` resumes them from their last committed "
        f"checkpoint"]
    prepare_study(tiny_config)  # reopened without a source (an import, a script): the one recorded stays
    assert resume_command(study) == resume
    toml.unlink()
    assert resume_command(study).startswith(f"`vt run CONFIG` with the study's config ({toml} is gone)")


def test_seeds_not_started_while_another_process_holds_the_study_are_queued(tiny_config):
    """`vt status` during a run: the seeds of later seed groups have no store yet; they are queued
    (the study running), not "interrupted or not started", while the run's process lives."""
    import json
    import os
    import socket
    import subprocess
    import sys

    from vt_core.storage.layout import layout
    from vt_core.storage.seed_status import seed_status

    study = prepare_study(tiny_config)
    lock = layout(study).lock
    host = socket.gethostname()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        try:
            lock.write_bytes(json.dumps({"pid": other.pid, "host": host, "since": "now"}).encode())
            rows = seed_status(study)
            assert {r["status"] for r in rows} == {"queued"}
            state, hints = study_state(rows)
            assert state == "running" and hints == [
                f"seeds {', '.join(str(s) for s in tiny_config.seeds)} queued: the run that holds the study "
                f"trains them in their turn"]
        finally:
            other.kill()
    other.wait()
    for holder in (other.pid, os.getpid()):  # its process gone; this process's own lock
        lock.write_bytes(json.dumps({"pid": holder, "host": host, "since": "now"}).encode())
        assert {r["status"] for r in seed_status(study)} == {"missing"}
        assert study_state(seed_status(study))[0] == "interrupted"
