"""A live run against a real Prefect server on loopback: `vt run CONFIG --reference STUDY` is
killed (SIGKILL, the whole process group: the run, its writer and its watcher) while its seeds
train, and run again to the end. ``live.json`` then holds every event the finished stores give,
once each; the server's event feed holds the same events, once each (their ids derive from their
keys), with the seed, step and state as the resource's labels and the study as a related resource."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from flows.live import EVENT_NAMES, event_id
from tests.deployments.test_prefect_server import _stop, _wait
from tests.helpers import ROOT, free_port, write_toml
from vt_core.stages import live
from vt_core.storage.study import load_study

pytestmark = pytest.mark.integration
PREFECT = str(Path(sys.executable).with_name("prefect"))
VT = str(Path(sys.executable).with_name("vt"))


def _seed_status(study: Path, seed: int) -> str | None:
    try:
        return json.loads((study / "runs" / f"seed={seed:04d}.zarr" / "zarr.json").read_text())["attributes"]["status"]
    except (OSError, ValueError, KeyError):
        return None


def test_a_killed_live_run_resumed_loses_and_repeats_no_event(analysed_study, tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api, "PYTHONPATH": str(ROOT),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "VT_TEST_STEP_SLEEP_S": "0.02", "NO_PROXY": ",".join(filter(None, ["127.0.0.1,localhost", os.environ.get("NO_PROXY")]))}
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              cwd=tmp_path, stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        def healthy():
            try:
                return httpx.get(f"{api}/health", timeout=2, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(healthy, 120, "prefect server start", [server])
        study = tmp_path / "study"
        config = load_study(analysed_study).model_dump(mode="json", exclude_none=True)
        # the same task and metrics as the reference, by a model written elsewhere, slowed to about
        # 10 s a seed so that it can be killed while it trains
        config |= {"output_dir": str(study), "seeds": [0, 1], "checkpoints": {"every_steps": 4},
                   "model": {"name": "custom", "factory": "tests.plugins.faulty:make_net", "kwargs": {"width": 32}},
                   "hooks": config["hooks"] | {"activations": ["layers.2"]},
                   "training": config["training"] | {"epochs": 60, "seed_group_size": 1}}
        cfg = write_toml(config, tmp_path / "live.toml")
        cmd = [VT, "run", str(cfg), "--reference", str(analysed_study), "--workers", "1"]

        first = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=open(tmp_path / "first.log", "w"),
                                 stderr=subprocess.STDOUT, start_new_session=True)

        def some_events_while_training():
            doc = json.loads((study / "live.json").read_text()) if (study / "live.json").is_file() else {}
            return len(doc.get("events", [])) >= 2 and _seed_status(study, 1) in (None, "running")

        _wait(some_events_while_training, 300, "live events while seed 1 trains", [first])
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        before = json.loads((study / "live.json").read_text())["events"]
        assert _seed_status(study, 1) != "complete", "the kill came after training; the test proves nothing"

        second = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert "entered state" in second.stdout

        got = [e["key"] for e in live.read_live(study)["events"]]
        assert len(got) == len(set(got)), "an event repeated"
        assert {e["key"] for e in before} <= set(got)
        replay = tmp_path / "replay"  # what the finished stores give, decoded in one go
        replay.mkdir()
        shutil.copy(study / "study.json", replay / "study.json")
        shutil.copytree(study / "runs", replay / "runs")
        expected = {e["key"] for e in live.Watcher(replay, analysed_study).poll()}
        assert set(got) == expected

        ids = {str(event_id(str(study), k)): k for k in got}
        with httpx.Client(base_url=api, timeout=30, trust_env=False) as c:
            def feed():
                r = c.post("/events/filter", json={"filter": {"event": {"prefix": ["vt.seed."]}}, "limit": 50})
                if r.status_code != 200:
                    return None
                page, out = r.json(), []
                while True:
                    out += page["events"]
                    if not page.get("next_page"):
                        break
                    page = c.get(page["next_page"]).json()
                return out if len(out) >= len(got) else None

            events = _wait(feed, 60, "the events in the server's feed")
        assert sorted(e["id"] for e in events) == sorted(ids), "the feed's events are not live.json's, once each"
        by_key = {e["key"]: e for e in live.read_live(study)["events"]}
        for e in events:
            mine = by_key[ids[e["id"]]]
            assert e["event"] == EVENT_NAMES[mine["kind"]]
            assert e["resource"]["vt.seed"] == str(mine["seed"]) and e["resource"]["vt.step"] == str(mine["step"])
            assert e["resource"]["vt.state"] == str(mine["state"])
            roles = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in e["related"]}
            assert roles["study"] == "vt.study.tiny" and roles["flow-run"].startswith("prefect.flow-run.")
        # the documented automation is accepted by the server
        made = subprocess.run([sys.executable, "deployments/live_automation.py", "tiny"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert made.returncode == 0 and "created automation" in made.stdout, made.stdout + made.stderr
        with httpx.Client(base_url=api, timeout=30, trust_env=False) as c:
            autos = c.post("/automations/filter", json={}).json()
        assert any(a["trigger"]["expect"] == ["vt.seed.entered-detour"] for a in autos)
    finally:
        _stop(server)
