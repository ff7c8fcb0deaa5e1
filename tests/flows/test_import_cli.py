"""`vt import` end to end (the flow, one task per seed), then `vt analyze` and `vt rerun` on the study."""

import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from vt_core.storage.layout import layout
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import run_path

pytestmark = pytest.mark.flow  # runs a Prefect flow or the `vt` command

runner = CliRunner()


def test_vt_import_analyses_and_is_idempotent(tmp_path):
    for seed in range(3):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 2))
        (tmp_path / "ck" / f"seed{seed}").mkdir(parents=True)
        for step in range(0, 60, 5):
            torch.save(model.state_dict(), tmp_path / "ck" / f"seed{seed}" / f"step_{step}.pt")
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1.05).add_(0.02 * torch.randn_like(p))
    study = tmp_path / "study"
    args = ["import", str(tmp_path / "ck"), str(study), "--pattern", "seed{seed}/step_{step}.pt"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "seed 2: 12 imported, 12 checkpoints" in res.output and "states: k =" in res.output
    assert "checkpoints in: 1 to do" in res.output and "checkpoints in: 11 to do" in res.output  # the progress
    # the metrics were computed as the checkpoints came in: the analysis reads no store again
    assert "metrics: 684 cells computed as the checkpoints came in, 0 reused" in res.output
    assert "metrics: 0 cells computed, 684 reused" in res.output
    # checkpoint files carry no held-out accuracy: vt says so, and does not claim the seeds never converged
    assert "no held-out accuracy was recorded" in res.output and "never reached" not in res.output
    assert "seeds 0, 1, 2 have no held-out accuracy" in res.output
    assert runner.invoke(app, ["report", str(study)]).exit_code == 0
    report = layout(study).report.read_text()
    assert "0 of 3 seeds reach it (no accuracy recorded for 3)" in report
    assert layout(study).dashboard.is_file()
    before = RunStore(run_path(study, 1), mode="r").attrs
    res = runner.invoke(app, args + ["--no-analyze"])
    assert res.exit_code == 0 and "seed 1: already imported, 12 checkpoints" in res.output
    # issue 30, item 5: --no-analyze skips the analysis only (it skipped the metrics too, silently)
    assert "cells computed as the checkpoints came in, 684 reused" in res.output and "not analysed (--no-analyze)" in res.output
    res = runner.invoke(app, args + ["--no-analyze", "--no-metrics"])
    assert res.exit_code == 0 and "metrics: not computed (--no-metrics)" in res.output
    assert RunStore(run_path(study, 1), mode="r").attrs == before
    res = runner.invoke(app, ["rerun", str(study), "--seed", "1"])
    assert res.exit_code == 2 and "imported from checkpoint files" in res.output and "cannot train" in res.output
    assert RunStore(run_path(study, 1), mode="r").attrs == before  # refused before anything was deleted
    res = runner.invoke(app, ["import", str(tmp_path / "ck"), str(tmp_path / "other"), "--pattern", "s{seed}/{step}.pt"])
    assert res.exit_code == 2 and "matches the pattern" in res.output and not (tmp_path / "other").exists()


def test_dry_run_shows_roles_and_writes_nothing_and_a_bad_roles_file_is_one_line(tmp_path):
    from tests.reference.paper_models import save_paper_series

    save_paper_series("transformer", tmp_path / "ck", seeds=(0,), epochs=2)
    args = ["import", str(tmp_path / "ck"), str(tmp_path / "s"), "--pattern",
            "lr0.001_adamw_seed{seed}_scaling1.0/model_{step}.pt"]
    res = runner.invoke(app, [*args, "--dry-run"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "blocks.0.attn.W_K" in res.output and "one matrix per head" in res.output
    assert "a buffer, by its name (mask)" in res.output and "average over 15 matrices" in res.output
    assert "roles guessed from names, shapes and values (no model): 16 tensors" in res.output
    assert "dry run: nothing written" in res.output and not (tmp_path / "s").exists()
    logs = ["--scalars", "lr0.001_adamw_seed{seed}_scaling1.0/log.json"]  # the run's own log, beside its checkpoints
    res = runner.invoke(app, [*args, "--dry-run", *logs], terminal_width=200)
    assert res.exit_code == 2 and "counted in the same unit" in res.output  # its step is not the files' {step}
    res = runner.invoke(app, [*args, "--dry-run", *logs, "--scalar-names", '{"epoch": "step"}'], terminal_width=200)
    assert res.exit_code == 0 and "test_accuracy: 2 of 2 checkpoints" in res.output, res.output
    (tmp_path / "roles.toml").write_text('"blocks.*.attn.W_O" = "diagonal"\n')
    res = runner.invoke(app, [*args, "--roles", str(tmp_path / "roles.toml")])
    assert res.exit_code == 2 and "'diagonal' is not a role; use one of matrix" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "s").exists()
    (tmp_path / "roles.toml").write_text('"blocks.*.attn.W_O" = "exclude"\n')
    res = runner.invoke(app, [*args, "--roles", str(tmp_path / "roles.toml"), "--no-analyze"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "roles guessed from names, shapes and values (no model): 15 tensors" in res.output
    from vt_core.storage.study import load_study

    assert load_study(tmp_path / "s").model.roles["blocks.0.attn.W_O"].certainty == "given"


def test_a_series_imported_a_seed_at_a_time_keeps_every_seeds_metrics(tmp_path):
    """A series larger than the disk comes a seed at a time (PolyPythias: download a seed, import
    it, delete its files, the next). Each `vt import` extends the study by the seeds it finds; the
    seeds imported before keep their metrics (reused into the new metrics.zarr: each import
    planned it for its own seeds alone and dropped the others', and `vt analyze` then recomputed
    every seed's from the stores: hours at PolyPythia scale)."""
    import shutil

    import numpy as np
    import xarray as xr

    from vt_core.storage.study import load_study

    study = tmp_path / "study"
    first = None
    for seed in range(3):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 2))
        (tmp_path / "ck" / f"seed{seed}").mkdir(parents=True)
        for step in range(0, 30, 5):
            torch.save(model.state_dict(), tmp_path / "ck" / f"seed{seed}" / f"step_{step}.pt")
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1.05).add_(0.02 * torch.randn_like(p))
        res = runner.invoke(app, ["import", str(tmp_path / "ck"), str(study), "--pattern", "seed{seed}/step_{step}.pt",
                                  "--no-analyze"])
        assert res.exit_code == 0, res.output
        assert f"cells computed as the checkpoints came in, {114 * seed} reused" in res.output
        shutil.rmtree(tmp_path / "ck" / f"seed{seed}")
        ds = xr.open_zarr(str(layout(study).metrics), consolidated=False).load()
        assert ds["seed"].values.tolist() == list(range(seed + 1)) and bool(ds["computed"].all())
        if first is None:
            first = ds.sel(seed=0)
        np.testing.assert_array_equal(ds.sel(seed=0)["value"].values, first["value"].values)
    assert load_study(study).seeds == [0, 1, 2]
    res = runner.invoke(app, ["analyze", str(study)])
    assert res.exit_code == 0 and "metrics: 0 cells computed, 342 reused" in res.output, res.output
    from vt_core.report.outputs import load_outputs

    assert load_outputs(study).context.startswith("3 seeds · state_dict checkpoints · ")  # was "external on external"
