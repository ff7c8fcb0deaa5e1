"""A real Prefect server on loopback: the deployment in deployments/prefect.yaml is created with
`prefect deploy`, a flow run of it (a tiny study with one seed that raises) is executed by
`prefect worker start` from a process work pool and fails naming the seed; `prefect flow-run
retry` completes it without retraining the others; the artifacts are read back from the API."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, free_port, tiny_dict, write_toml
from vt_core.stages.publish import artifact_key

pytestmark = pytest.mark.integration
PREFECT = str(Path(sys.executable).with_name("prefect"))


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
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api, "VT_REPO": str(ROOT),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PYTHONPATH": str(ROOT),
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "NO_PROXY": ",".join(filter(None, ["127.0.0.1,localhost", os.environ.get("NO_PROXY")]))}
    logs = tmp_path / "logs"
    logs.mkdir()
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              cwd=tmp_path, stdout=open(logs / "server.log", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    worker = None
    try:
        def healthy():
            try:
                return httpx.get(f"{api}/health", timeout=2, trust_env=False).status_code == 200
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
        # seed 1 raises in the first run (an injected failure); the fix is to unset the variable
        d = tiny_dict(study, model={"factory": "tests.plugins.faulty:make_net", "kwargs": {"width": 32}},
                      hooks={"activations": ["layers.2"], "probe_size": 8},
                      hmm={"features": ["l2", "spectral", "var_w", "test_accuracy"]})
        cfg = write_toml(d, tmp_path / "tiny.toml")
        with httpx.Client(base_url=api, timeout=30, trust_env=False) as c:  # loopback: no proxy
            dep = c.get("/deployments/name/vt-study/sparse-parity-nightly")
            assert dep.status_code == 200, dep.text
            dep = dep.json()
            assert dep["work_pool_name"] == "vt-process"
            assert any(s["schedule"].get("cron") == "0 3 * * *" for s in dep.get("schedules", []))
            for _ in range(5):  # a busy SQLite server may answer 5xx (database locked): try again
                made = c.post(f"/deployments/{dep['id']}/create_flow_run",
                              json={"parameters": {"config_path": str(cfg), "output_dir": str(study)}})
                if made.status_code < 500:
                    break
                time.sleep(2)
            assert made.status_code in (200, 201), (made.status_code, made.text)
            run = made.json()

            def start_worker(extra: dict, log: str):
                return subprocess.Popen([PREFECT, "worker", "start", "--pool", "vt-process", "--limit", "1"],
                                        env=env | extra, cwd=ROOT, stdout=open(logs / log, "w"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

            def finished():
                r = c.get(f"/flow_runs/{run['id']}")
                if r.status_code != 200:  # a transient server error: ask again
                    return None
                state = r.json()["state"]
                return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

            worker = start_worker({"VT_TEST_FAIL_SEED": "1"}, "worker-1.log")
            state = _wait(finished, 420, "the flow run", [server, worker])
            assert state["type"] == "FAILED", (state, (logs / "worker-1.log").read_text()[-4000:])
            assert "seed 1 failed (the others were analysed)" in state["message"]
            _stop(worker)
            assert (study / "analysis.json").is_file()  # seeds 0 and 2 were analysed
            mtimes = {s: (study / "runs" / f"seed={s:04d}.zarr" / "zarr.json").stat().st_mtime_ns for s in (0, 2)}

            # `prefect flow-run retry` schedules the same run again; a worker without the fault runs it
            cli("flow-run", "retry", run["id"])
            worker = start_worker({}, "worker-2.log")
            state = _wait(finished, 420, "the retried flow run", [server, worker])
            assert state["type"] == "COMPLETED", (state, (logs / "worker-2.log").read_text()[-4000:])
            assert {s: (study / "runs" / f"seed={s:04d}.zarr" / "zarr.json").stat().st_mtime_ns
                    for s in (0, 2)} == mtimes  # finished seeds came back cached, untouched
            assert "complete" in json.loads((study / "runs" / "seed=0001.zarr" / "zarr.json").read_text())[
                "attributes"]["status"]
            arts = c.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
            by_key = {a["key"]: a for a in arts}
            key = {kind: artifact_key(study, "tiny", kind) for kind in ("dashboard", "summary", "model-selection")}
            assert set(key.values()) <= set(by_key), by_key.keys()
            assert "data:image/png;base64," in by_key[key["summary"]]["data"]
            assert by_key[key["model-selection"]]["type"] == "table"
        assert (study / "dashboard" / "index.html").is_file()
        a = json.loads((study / "analysis.json").read_text())
        assert sorted(a["convergence_step"]) == ["0", "1", "2"]
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
