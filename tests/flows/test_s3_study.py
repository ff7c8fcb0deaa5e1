"""A study on S3 (s3fs against a moto S3 server on loopback): the CLI trains it with the writer
processes, analyses it, and its stores equal a local run; the lock is an S3 conditional put."""

import json
import socket
import uuid

import numpy as np
import pytest
import s3fs
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from flows.cli import app
from tests.helpers import store_arrays, tiny_dict, write_toml
from vt_core.config.study_config import parse_config
from vt_core.stages.train import train_seed
from vt_core.storage.layout import layout
from vt_core.storage.location import location, url
from vt_core.storage.study import StudyLockedError, prepare_study, run_path, study_lock

pytestmark = [pytest.mark.flow, pytest.mark.integration]
runner = CliRunner()
SEEDS = [0, 1, 2]
HMM = {"features": ["l2", "spectral", "var_w", "test_accuracy"]}


@pytest.fixture
def s3_bucket(monkeypatch):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")  # the writer processes inherit it
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                 "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}.items():
        monkeypatch.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"vt-{uuid.uuid4().hex[:12]}"  # moto keeps its buckets per process, across servers
    s3fs.S3FileSystem(use_listings_cache=False).mkdir(bucket)
    yield f"s3://{bucket}"
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def test_study_on_s3_through_the_cli(s3_bucket, tmp_path):
    study_url = f"{s3_bucket}/studies/tiny"
    cfg = write_toml(tiny_dict(study_url, name="tiny_s3", seeds=SEEDS, hmm=HMM, training={"epochs": 6}),
                     tmp_path / "tiny.toml")
    res = runner.invoke(app, ["run", str(cfg)])
    assert res.exit_code == 0, res.output
    assert f"{study_url}/dashboard/index.html" in res.output
    study = location(study_url)
    assert "<html" in (study / "dashboard" / "index.html").read_text()[:500].lower()
    assert json.loads((study / "analysis.json").read_text())["chosen_k"] >= 1
    assert not layout(study).lock.exists() and not (study / "metrics.zarr.new").exists()

    ref = prepare_study(parse_config(tiny_dict(tmp_path / "local", seeds=SEEDS, hmm=HMM, training={"epochs": 6})))
    for s in SEEDS:
        train_seed(ref, s)
        got, want = store_arrays(url(run_path(study, s))), store_arrays(run_path(ref, s))
        assert got.keys() == want.keys() and len(want["step"]) == 7
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)

    res = runner.invoke(app, ["status", study_url])
    assert res.exit_code == 0 and "study: complete" in res.output, res.output
    res = runner.invoke(app, ["validate", study_url])
    assert res.exit_code == 0 and "every store" in res.output, res.output

    layout(study).lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "then"}))
    with pytest.raises(StudyLockedError, match="pid 1 on elsewhere"):
        with study_lock(study_url):
            pass
    res = runner.invoke(app, ["analyze", study_url])
    assert res.exit_code == 2 and "is being run by pid 1 on elsewhere" in res.output, res.output
    layout(study).lock.write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname(), "since": "then"}))
    res = runner.invoke(app, ["analyze", study_url])  # a stale lock is taken over
    assert res.exit_code == 0, res.output


@pytest.mark.slow  # 69 s: an S3 study is tested through the CLI above, Dask workers in test_dask_cluster.py
def test_study_on_s3_with_dask_worker_processes(s3_bucket, tmp_path):
    """`vt run --runner dask` in its own process: training, metric and HMM tasks in Dask worker
    processes and checkpoints in writer processes, all meeting in the bucket (no shared disk)."""
    import os
    import subprocess

    from tests.helpers import ROOT

    study_url = f"{s3_bucket}/studies/dask"
    cfg = write_toml(tiny_dict(study_url, name="tiny_s3_dask", seeds=SEEDS, hmm=HMM, training={"epochs": 6}),
                     tmp_path / "tiny.toml")
    vt = [os.path.join(os.path.dirname(os.sys.executable), "vt")]
    run = subprocess.run([*vt, "run", str(cfg), "--runner", "dask", "--workers", "2"], cwd=ROOT, capture_output=True,
                         text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"dashboard: {study_url}/dashboard/index.html" in run.stdout
    check = subprocess.run([*vt, "validate", study_url], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "every store" in check.stdout, check.stdout + check.stderr
    study = location(study_url)
    for s in SEEDS:
        assert json.loads((run_path(study, s) / "zarr.json").read_text())["attributes"]["committed_steps"] == 7
    assert json.loads((study / "analysis.json").read_text())["chosen_k"] >= 1


def test_vt_import_from_an_s3_url_equals_the_local_import(s3_bucket, tmp_path):
    """Checkpoints under an s3:// URL (listed and read through fsspec, nothing downloaded first)
    import to the same stores as the same files on the local disk."""
    import torch

    fs = s3fs.S3FileSystem(use_listings_cache=False)
    for seed in range(2):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 2))
        for step in range(0, 40, 10):
            f = tmp_path / "ck" / f"seed{seed}" / f"step_{step}.pt"
            f.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), f)
            fs.put(str(f), f"{s3_bucket}/ck/seed{seed}/step_{step}.pt")
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.1 * torch.randn_like(p))
    pattern = ["--pattern", "seed{seed}/step_{step}.pt", "--no-analyze"]
    remote = runner.invoke(app, ["import", f"{s3_bucket}/ck", str(tmp_path / "from-s3"), *pattern])
    assert remote.exit_code == 0, remote.output
    assert "seed 1: 4 imported, 4 checkpoints" in remote.output
    local = runner.invoke(app, ["import", str(tmp_path / "ck"), str(tmp_path / "from-disk"), *pattern])
    assert local.exit_code == 0, local.output
    for seed in range(2):
        a, b = store_arrays(run_path(tmp_path / "from-s3", seed)), store_arrays(run_path(tmp_path / "from-disk", seed))
        assert a.keys() == b.keys() and "weights/0.weight" in a
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    from vt_core.storage.study import load_study

    origin = load_study(tmp_path / "from-s3").origin
    assert origin is not None and origin.kind == "import" and origin.source == f"{s3_bucket}/ck"
