"""`vt import --scalars`: the run's own logs (CSV, TensorBoard, W&B exports) matched to the imported
checkpoints, so that convergence works on imported series; the convergence step per seed equals the
one worked out by hand from the same logs."""

import numpy as np
import pandas as pd
import pytest
import torch

from vt_core import stages
from vt_core.analysis.records import load_analysis
from vt_core.external.scalar_logs import ScalarLogError, match_steps, read_scalar_logs
from vt_core.stages.explain import convergence_steps
from vt_core.stages.import_checkpoints import import_seed, plan_import
from vt_core.storage.study import load_study

SEEDS = (0, 1, 2)
CKPT = list(range(0, 101, 10))
#: the step at which each seed's held-out accuracy first reaches 0.9 in its log (seed 2: never)
CROSS = {0: 37, 1: 64, 2: None}


def _accuracy(seed, step):
    cross = CROSS[seed]
    return 0.5 + 0.3 * step / 100 if cross is None else (0.95 if step >= cross else 0.5 + 0.3 * step / cross)


def _checkpoints(root):
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        (root / f"seed{seed}").mkdir(parents=True)
        for step in CKPT:
            torch.save(model.state_dict(), root / f"seed{seed}" / f"step_{step}.pt")
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.05 * torch.randn_like(p))


def _by_hand(log_steps):
    """The convergence step from the logs, worked out directly: the first checkpoint whose matched
    row (the last logged at or before it, after the previous checkpoint) has accuracy >= 0.9."""
    out = {}
    for seed in SEEDS:
        out[seed] = None
        prev = -1
        for s in CKPT:
            rows = [t for t in log_steps if prev < t <= s]
            prev = s
            if rows and _accuracy(seed, max(rows)) >= 0.9:
                out[seed] = s
                break
    return out


def _import(tmp_path, spec, **kw):
    plan = plan_import(tmp_path / "ck", tmp_path / "s", "seed{seed}/step_{step}.pt", scalars=spec, **kw)
    for s, cks in plan["seeds"].items():
        import_seed(tmp_path / "s", int(s), cks, plan["probe"])
    stages.analyse(tmp_path / "s")  # metrics, states, convergence and detours, as `vt analyze`
    conv = load_analysis(tmp_path / "s")["convergence_step"]
    assert convergence_steps(tmp_path / "s", list(SEEDS), 0.9) == {int(k): v for k, v in conv.items()}
    return {int(k): v for k, v in conv.items()}


def test_csv_per_seed(tmp_path):
    _checkpoints(tmp_path / "ck")
    steps = list(range(0, 101, 5))
    for seed in SEEDS:
        pd.DataFrame({"step": steps, "train_loss": np.linspace(2, 0.1, len(steps)),
                      "val_acc": [_accuracy(seed, t) for t in steps]}).to_csv(tmp_path / f"log{seed}.csv", index=False)
    conv = _import(tmp_path, str(tmp_path / "log{seed}.csv"))
    assert conv == _by_hand(steps) == {0: 40, 1: 70, 2: None}
    origin = load_study(tmp_path / "s").origin
    assert "test_accuracy (from 'val_acc'): 11 of 11 checkpoints" in origin.scalar_match


def test_tensorboard_directories_logged_between_checkpoints(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    _checkpoints(tmp_path / "ck")
    steps = [0, *range(9, 101, 10)]  # evaluated one step before each checkpoint (and at 0)
    for seed in SEEDS:
        w = SummaryWriter(str(tmp_path / "tb" / f"seed{seed}"))
        for t in steps:
            w.add_scalar("accuracy/val", _accuracy(seed, t), t)
            w.add_scalar("loss/train", 1.0 / (1 + t), t)
        w.close()
    conv = _import(tmp_path, str(tmp_path / "tb" / "seed{seed}"))
    assert conv == _by_hand(steps) == {0: 40, 1: 70, 2: None}
    how = load_study(tmp_path / "s").origin.scalar_match
    assert "1 at their step, the rest from the last row before (at most 1 steps)" in how


def test_wandb_chart_export_with_string_run_names(tmp_path):
    _checkpoints(tmp_path / "ck")
    steps = list(range(0, 101, 10))
    names = {0: "brisk-sun-3", 1: "misty-rain-7", 2: "dark-moon-12"}
    table = {"Step": steps}
    for seed, run in names.items():
        table[f"{run} - val/acc"] = [_accuracy(seed, t) for t in steps]
        table[f"{run} - val/acc__MIN"] = table[f"{run} - val/acc"]
        table[f"{run} - val/acc__MAX"] = table[f"{run} - val/acc"]
    pd.DataFrame(table).to_csv(tmp_path / "wandb.csv", index=False)
    with pytest.raises(ScalarLogError, match="run 'brisk-sun-3' names no seed; say which seed each run is"):
        _import(tmp_path, str(tmp_path / "wandb.csv"))
    assert not (tmp_path / "s").exists()  # refused before anything was written
    conv = _import(tmp_path, str(tmp_path / "wandb.csv"), scalar_runs={v: k for k, v in names.items()})
    assert conv == _by_hand(steps)


def test_wandb_history_with_sparse_rows_and_seed_in_run_names(tmp_path):
    rows = []
    for seed in SEEDS:
        for t in range(0, 101, 10):
            rows.append({"run": f"parity-seed{seed}", "_step": t, "_runtime": t * 0.1, "train/loss": 1.0 / (1 + t)})
            rows.append({"run": f"parity-seed{seed}", "_step": t, "_runtime": t * 0.1, "val/acc": _accuracy(seed, t)})
    pd.DataFrame(rows).to_csv(tmp_path / "history.csv", index=False)
    logs, used = read_scalar_logs(str(tmp_path / "history.csv"), SEEDS)
    assert used == {"step": "_step", "train_loss": "train/loss", "test_accuracy": "val/acc"}
    assert len(logs[1]) == 11 and logs[1]["test_accuracy"].notna().all() and logs[1]["train_loss"].notna().all()


def test_a_log_that_stops_leaves_nan_not_a_stale_value_and_units_are_checked():
    log = pd.DataFrame({"step": [0, 10, 20], "test_accuracy": [0.1, 0.5, 0.7]})
    out, summary = match_steps(log, [0, 10, 20, 30, 40])
    assert [out[s]["test_accuracy"] for s in (0, 10, 20)] == [0.1, 0.5, 0.7]
    assert np.isnan(out[30]["test_accuracy"]) and np.isnan(out[40]["test_accuracy"])
    assert summary[0]["matched"] == 3
    by_epoch = pd.DataFrame({"step": [300, 600, 900], "test_accuracy": [0.1, 0.5, 0.7]})
    with pytest.raises(ScalarLogError, match="counted in the same unit"):
        match_steps(by_epoch, [0, 1, 2, 3])


def test_ambiguous_or_missing_columns_are_named(tmp_path):
    pd.DataFrame({"step": [0], "val_acc": [0.1], "test_acc": [0.2]}).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(ScalarLogError, match=r"could each be test_accuracy; say which with --scalar-names"):
        read_scalar_logs(str(tmp_path / "a.csv"), [0])
    pd.DataFrame({"iteration": [0], "val_acc": [0.1]}).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ScalarLogError, match="no step column"):
        read_scalar_logs(str(tmp_path / "b.csv"), [0])
    logs, _ = read_scalar_logs(str(tmp_path / "b.csv"), [0], names={"iteration": "step"})
    assert list(logs[0].columns) == ["step", "test_accuracy"]


def test_scalars_for_a_study_imported_without_them_are_refused(tmp_path):
    _checkpoints(tmp_path / "ck")
    plan = plan_import(tmp_path / "ck", tmp_path / "s", "seed{seed}/step_{step}.pt")
    for s, cks in plan["seeds"].items():
        import_seed(tmp_path / "s", int(s), cks, plan["probe"])
    pd.DataFrame({"step": CKPT, "test_accuracy": 0.5, "seed": 0}).to_csv(tmp_path / "log.csv", index=False)
    from vt_core.external.checkpoint_files import CheckpointFilesError

    with pytest.raises(CheckpointFilesError, match="import into a new study directory"):
        plan_import(tmp_path / "ck", tmp_path / "s", "seed{seed}/step_{step}.pt", scalars=str(tmp_path / "log.csv"))
