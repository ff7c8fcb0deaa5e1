import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.helpers import ROOT, tiny_dict, write_toml

pytestmark = pytest.mark.flow  # runs a Prefect flow or the `vt` command

runner = CliRunner()


def test_validate_example():
    res = runner.invoke(app, ["validate", str(ROOT / "examples" / "sparse_parity.toml")])
    assert res.exit_code == 0, res.output
    assert "ok" in res.output and "layers.1" in res.output


def test_validate_names_the_bad_field(tmp_path):
    cfg = write_toml(tiny_dict(tmp_path / "s", optimizer={"lr": -1.0}), tmp_path / "bad.toml")
    res = runner.invoke(app, ["validate", str(cfg)])
    assert res.exit_code == 2 and "optimizer.lr" in res.output
    assert not (tmp_path / "s").exists()  # nothing written


def test_validate_unknown_hookpoint_suggests_names(tmp_path):
    cfg = write_toml(tiny_dict(tmp_path / "s", hooks={"activations": ["layer.1"]}), tmp_path / "bad.toml")
    res = runner.invoke(app, ["validate", str(cfg)])
    assert res.exit_code == 2 and "'layer.1' matches nothing" in res.output and "layers.1" in res.output


def test_status_and_analyze_need_a_study(tmp_path):
    for cmd in ("status", "analyze"):
        res = runner.invoke(app, [cmd, str(tmp_path)])
        assert res.exit_code == 2 and "not a study directory" in res.output


def test_status_lists_seeds(analysed_study):
    res = runner.invoke(app, ["status", str(analysed_study)])
    assert res.exit_code == 0 and res.output.count("complete") == 4  # 3 seeds + "study: complete"


def test_run_refuses_a_changed_training_config(analysed_study, tmp_path):
    cfg = write_toml(tiny_dict(analysed_study, optimizer={"lr": 0.3}), tmp_path / "changed.toml")
    res = runner.invoke(app, ["run", str(cfg)])
    assert res.exit_code == 2 and "trained with another config" in res.output


def test_bad_runner(tmp_path, analysed_study):
    res = runner.invoke(app, ["analyze", str(analysed_study), "--runner", "mpi"])
    assert res.exit_code == 2 and "runner 'mpi' is unknown" in res.output


def test_hooks_lists_hookpoints_with_shapes():
    res = runner.invoke(app, ["hooks", str(ROOT / "examples" / "modular_addition.toml")])
    assert res.exit_code == 0, res.output
    assert "blocks.0.attn.hook_pattern" in res.output and "(32, 4, 3, 3)" in res.output
    assert "2 of" in res.output  # the two hookpoints the example selects


def test_metrics_command_lists_the_paper_metrics():
    res = runner.invoke(app, ["metrics"])
    assert res.exit_code == 0 and "computational_sparsity *" in res.output


def test_a_second_run_on_the_same_study_is_refused(analysed_study, tmp_path):
    """While one process holds the study, another `vt analyze` refuses; a stale lock is taken over."""
    import subprocess
    import sys
    import time

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom vt_core.storage.study import study_lock\n"
        f"with study_lock({str(analysed_study)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = runner.invoke(app, ["analyze", str(analysed_study)])
        assert res.exit_code == 2 and f"is being run by pid {holder.pid}" in res.output
    finally:
        holder.kill()
        holder.wait()
    assert (analysed_study / ".vt.lock").exists()  # killed: its lock stays behind ...
    time.sleep(0.1)
    from vt_core.storage.study import study_lock

    with study_lock(analysed_study):  # ... and is taken over, since its process is gone
        pass
    assert not (analysed_study / ".vt.lock").exists()


def test_validate_study_finds_damage_and_names_seed_and_array(analysed_study, tmp_path):
    import shutil

    study = tmp_path / "copy"
    shutil.copytree(analysed_study, study)
    assert runner.invoke(app, ["validate", str(study)]).exit_code == 0
    array = study / "runs" / "seed=0001.zarr" / "weights" / "layers.0.weight"
    chunk = next(p for p in sorted(array.rglob("c*")) if p.is_file())  # c.0.0.0 (or c/0/0/0)
    chunk.write_bytes(chunk.read_bytes()[:10])  # a truncated chunk
    shutil.rmtree(study / "runs" / "seed=0002.zarr")  # a deleted store
    res = runner.invoke(app, ["validate", str(study)])
    assert res.exit_code == 1
    assert "seed 1: array weights/layers.0.weight: checkpoint " in res.output
    assert "checksum" in res.output or "truncated" in res.output
    assert "seed 2: store" in res.output and "is missing" in res.output
    assert "seed 0" not in res.output  # the other seeds are unaffected


def test_dashboard_command_rebuilds_and_serves_on_loopback(analysed_study, tmp_path):
    import threading
    import time
    import urllib.request

    from flows.serve_dashboard import make_server, serve_directory

    page = analysed_study / "dashboard" / "index.html"
    page.unlink()
    res = runner.invoke(app, ["dashboard", str(analysed_study), "--max-points", "20"])
    assert res.exit_code == 0, res.output
    assert page.is_file() and "dashboard:" in res.output
    server = make_server(page.parent)
    assert server.server_address[0] == "127.0.0.1"  # loopback unless --host says otherwise
    server.server_close()
    stop, said = threading.Event(), []
    t = threading.Thread(target=serve_directory, args=(page.parent, "127.0.0.1", 0, said.append, stop))
    t.start()
    try:
        deadline = time.time() + 10
        while not said and time.time() < deadline:
            time.sleep(0.05)
        url = said[0].split()[1]
        assert url.startswith("http://127.0.0.1:")
        assert b"Bokeh" in urllib.request.urlopen(url, timeout=10).read()
    finally:
        stop.set()
        t.join()


def test_dashboard_needs_an_analysed_study(tmp_path, tiny_config):
    from vt_core.storage.study import prepare_study

    study = prepare_study(tiny_config)
    res = runner.invoke(app, ["dashboard", str(study)])
    assert res.exit_code == 2 and "vt analyze" in res.output


def test_validate_study_json_from_another_config(analysed_study, tmp_path):
    import shutil

    from vt_core.config.study_config import parse_config
    from vt_core.storage.study import prepare_study

    study = tmp_path / "copy"
    shutil.copytree(analysed_study, study)
    other = prepare_study(parse_config(tiny_dict(tmp_path / "other", optimizer={"lr": 0.3})))
    shutil.copy(other / "study.json", study / "study.json")  # the wrong study.json
    res = runner.invoke(app, ["validate", str(study)])
    assert res.exit_code == 1
    for seed in (0, 1, 2):
        assert f"seed {seed}: " in res.output
    assert res.output.count("written by another config") == 3
    # nothing was changed by looking
    assert (study / "runs" / "seed=0000.zarr" / "zarr.json").read_bytes() == \
        (analysed_study / "runs" / "seed=0000.zarr" / "zarr.json").read_bytes()


def test_a_study_too_small_for_its_settings_finishes_with_k_capped_and_says_so(tmp_path):
    """2 seeds x 4 checkpoints cannot support the requested grid: the run exits 0, k is capped at
    what the data allows, and the closing lines say what was given up and why."""
    d = tiny_dict(tmp_path / "small", seeds=[0, 1], training={"epochs": 3},
                  hmm={"max_states": 8, "restarts": 2, "covariance": "full", "bootstrap": 2})
    res = CliRunner().invoke(app, ["run", str(write_toml(d, tmp_path / "small.toml"))])
    assert res.exit_code == 0, res.output
    assert "states: k = " in res.output and "too few observations for the settings asked" in res.output
    assert "not fitted (infeasible)" in res.output
    report = CliRunner().invoke(app, ["report", str(tmp_path / "small")])
    assert report.exit_code == 0 and "too few observations" in report.output


def test_when_every_seed_diverges_the_run_says_so_and_the_study_is_failed(tmp_path):
    study = tmp_path / "study"
    cfg = write_toml(tiny_dict(study, seeds=[0, 1], optimizer={"lr": 1e8}, training={"epochs": 3}), tmp_path / "d.toml")
    res = runner.invoke(app, ["run", str(cfg)])
    out = " ".join(res.output.split())
    assert res.exit_code == 1, res.output
    assert "seeds 0, 1 failed (no seed completed, so nothing was analysed)" in out and "lower optimizer.lr" in out
    assert "Traceback" not in res.output and "no seed has finished" not in out
    assert not (study / "analysis.json").exists()
    res = runner.invoke(app, ["status", str(study)])
    assert "study: failed" in res.output and "diverged" in res.output, res.output


def test_one_vt_run_reads_and_checks_its_config_once(tmp_path, monkeypatch):
    """`vt run` reads the TOML once and runs the checks of `vt validate` (which build the task and
    the model) once: the flow and its run name take the config the command read and checked
    (issue 29: three reads and two checks before). A deployment's run, given only the path, still
    reads and checks it itself."""
    import tomllib

    from flows.study import study_flow
    from vt_core.training import preflight

    cfg = write_toml(tiny_dict(tmp_path / "s", seeds=[0], training={"epochs": 2},
                               hmm={"max_states": 2, "bootstrap": 0, "cv_folds": 0}), tmp_path / "c.toml")
    text = cfg.read_text()
    reads, checks = [], []
    loads, check_size = tomllib.loads, preflight._check_size
    monkeypatch.setattr(tomllib, "loads", lambda s, **kw: (reads.append(1) if s == text else None) or loads(s, **kw))
    monkeypatch.setattr(preflight, "_check_size", lambda c: checks.append(1) or check_size(c))
    res = runner.invoke(app, ["run", str(cfg)])
    assert res.exit_code == 0, res.output
    assert (len(reads), len(checks)) == (1, 1)

    reads.clear(), checks.clear()
    study_flow(config_path=str(cfg))  # as a deployment starts it: nothing was read or checked before
    assert (len(reads), len(checks)) == (2, 1)  # the run's name reads it too; the flow checks it


@pytest.mark.integration  # starts a `vt dashboard --serve` process and stops it with SIGTERM
def test_a_server_stopped_by_sigterm_leaves_no_record(analysed_study):
    """Issue 34, item 17: `vt dashboard --serve` stopped by SIGTERM (a service manager, `kill`)
    removes what it recorded, as Ctrl-C does; the artifact's link then points at the file."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from vt_core.report.serving import served_url
    from vt_core.storage.layout import layout

    record = layout(analysed_study).dashboard_served
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "dashboard", str(analysed_study), "--serve",
                             "--port", "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert record.exists() and served_url(analysed_study) is not None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stdout.read().decode() if proc.stdout else ""
    finally:
        proc.kill()
    assert not record.exists() and served_url(analysed_study) is None


def test_read_only_commands_import_neither_torch_nor_prefect(analysed_study):
    """Issue 34, item 2: `vt status` and `vt report` took 12-22 s each on a loaded machine, most of
    it importing what they never use (torch through the stage modules, Prefect); measured by
    benchmarks/readonly_commands.py."""
    import subprocess
    import sys

    code = ("import sys, flows.cli\n"
            "for argv in (['status', sys.argv[1]], ['report', sys.argv[1], '--out', '-']):\n"
            "    try:\n        flows.cli.app(argv)\n    except SystemExit as e:\n        assert not e.code, e\n"
            "print(sorted(m for m in ('torch', 'prefect', 'bokeh') if m in sys.modules), file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code, str(analysed_study)], cwd=ROOT, capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1] == "[]", res.stderr[-2000:]
