"""`vt compare` on two real (tiny) studies: the flow, its files and artifacts, the refusal of studies
whose metrics differ, and the comparison dashboard in Chromium with no console error. The
statistics themselves are tested on planted data in tests/analysis/test_compare.py."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.browser import render_checked
from tests.helpers import tiny_dict
from vt_core.config.study_config import parse_config
from vt_core.storage.layout import layout
from vt_core.storage.location import read_json

pytestmark = pytest.mark.flow  # runs a Prefect flow or the `vt` command

runner = CliRunner()
FEATURES = ["l2", "spectral", "code_sparsity", "mean_singular_value", "var_w", "train_loss", "test_accuracy"]


def _study(root, name: str, **over):
    from vt_core import stages
    from vt_core.stages.train import train_seed
    from vt_core.storage.study import prepare_study

    config = parse_config(tiny_dict(root / name, name=name, checkpoints={"every_epochs": None, "every_steps": 4},
                                    hmm={"features": FEATURES, "bootstrap": 0, "cv_folds": 0}, **over))
    study = prepare_study(config)
    for seed in config.seeds:
        train_seed(study, seed)
    stages.analyse(study)
    return study


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    a = _study(root, "slow_lr", optimizer={"lr": 0.05})
    b = _study(root, "fast_lr", optimizer={"lr": 0.3})
    res = runner.invoke(app, ["compare", str(a), str(b)])
    assert res.exit_code == 0, res.output
    return a, b, root / "compare-slow_lr-vs-fast_lr", res.output


def test_compare_writes_the_comparison(compared):
    a, b, out, output = compared
    assert "fast_lr converges" in output or "converged seeds" in output or "an interval needs" in output
    files = layout(out)
    for path in (files.comparison, files.analysis, files.dashboard, files.report, files.selection):
        assert path.is_file(), path
    result = read_json(files.analysis)
    c = result["comparison"]
    assert c["studies"] == ["slow_lr", "fast_lr"] and c["reference"] == "slow_lr"
    assert {m["study"] for m in c["members"]} == {"slow_lr", "fast_lr"} and len(c["members"]) == 6
    for n in c["studies"]:
        per = c["per_study"][n]
        assert per["n_seeds"] == 3 and len(per["occupancy"]) == result["chosen_k"]
        assert abs(sum(per["occupancy"]) - 1) < 1e-9
    assert "fast_lr" in c["convergence_difference"]
    text = files.report.read_text()
    assert text.startswith("# vt comparison: slow_lr vs fast_lr") and "## Convergence" in text


def test_studies_with_different_metrics_are_refused(compared, tmp_path):
    from vt_core.storage.study import prepare_study

    a = compared[0]
    other = prepare_study(parse_config(tiny_dict(tmp_path / "other", name="other",
                                                 metrics={"names": ["l2", "effective_rank"]})))
    res = runner.invoke(app, ["compare", str(a), str(other), "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 2 and res.output.startswith("error: studies slow_lr and other compute different metrics")
    assert "compute different metrics" in res.output and "only other has ['effective_rank']" in res.output
    assert not (tmp_path / "cmp").exists()
    res = runner.invoke(app, ["compare", str(a)])
    assert res.exit_code == 2 and "at least two studies" in res.output


@pytest.mark.browser
def test_comparison_dashboard_renders_without_errors(compared, tmp_path):
    info = render_checked(layout(compared[2]).dashboard, "compare.png", tmp_path)
    names = set(info["names"])
    assert {"header", "compare-graph", "compare-occupancy", "compare-convergence", "state-timeline",
            "compare-scale", "explain-panel"} <= names, names
    assert "compare-survival" in names  # issue 34, item 13: each study's Kaplan-Meier curve, drawn
