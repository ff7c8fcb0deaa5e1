"""A real Prefect server on loopback: the deployment in deployments/prefect.yaml is created with
`prefect deploy`, a flow run of it (a tiny study) is executed by `prefect worker start` from a
process work pool, and the artifacts are read back from the server's API."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, tiny_dict
from tests.flows.conftest import write_toml

pytestmark = pytest.mark.integration
PREFECT = str(Path(sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, procs=()):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: {p.args[:3]} exited with {p.returncode}")
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s")


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_deployment_runs_on_a_worker_and_publishes_artifacts(tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api, "VT_REPO": str(ROOT),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PYTHONPATH": str(ROOT),
            "PREFECT_SERVER_API_HOST": "127.0.0.1"}
    logs = tmp_path / "logs"
    logs.mkdir()
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              cwd=tmp_path, stdout=open(logs / "server.log", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    worker = None
    try:
        def healthy():
            try:
                return httpx.get(f"{api}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(healthy, 120, "prefect server start", [server])

        def cli(*args):
            r = subprocess.run([PREFECT, "--no-prompt", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                               timeout=180)
            assert r.returncode == 0, f"prefect {' '.join(args)}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
            return r.stdout

        cli("work-pool", "create", "vt-process", "--type", "process")
        cli("deploy", "--prefect-file", "deployments/prefect.yaml", "--all")

        study = tmp_path / "study"
        cfg = write_toml(tiny_dict(study, hmm={"features": ["l2", "spectral", "var_w", "test_accuracy"]}),
                         tmp_path / "tiny.toml")
        with httpx.Client(base_url=api, timeout=30) as c:
            dep = c.get("/deployments/name/vt-study/sparse-parity-nightly")
            assert dep.status_code == 200, dep.text
            dep = dep.json()
            assert dep["work_pool_name"] == "vt-process"
            assert any(s["schedule"].get("cron") == "0 3 * * *" for s in dep.get("schedules", []))
            run = c.post(f"/deployments/{dep['id']}/create_flow_run",
                         json={"parameters": {"config_path": str(cfg)}}).json()

            worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "vt-process", "--limit", "1"], env=env,
                                      cwd=ROOT, stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT,
                                      start_new_session=True)

            def finished():
                state = c.get(f"/flow_runs/{run['id']}").json()["state"]
                return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

            state = _wait(finished, 420, "the flow run", [server, worker])
            assert state["type"] == "COMPLETED", (state, (logs / "worker.log").read_text()[-4000:])
            arts = c.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
            by_key = {a["key"]: a for a in arts}
            assert {"vt-tiny-dashboard", "vt-tiny-summary", "vt-tiny-model-selection"} <= set(by_key), by_key.keys()
            assert "data:image/png;base64," in by_key["vt-tiny-summary"]["data"]
            assert by_key["vt-tiny-model-selection"]["type"] == "table"
        assert (study / "dashboard" / "index.html").is_file()
        assert (study / "analysis.json").is_file()
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
