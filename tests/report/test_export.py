"""vt export: tidy tables whose numbers, joined back, are metrics.zarr's and hmm/paths.json's."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from vt_core import open_study
from vt_core.metrics.store import open_metrics
from vt_core.report.export import checkpoint_table, export_study, read_table
from vt_core.storage.layout import layout
from vt_core.storage.location import read_json

runner = CliRunner()


@pytest.mark.parametrize("fmt", ["parquet", "csv", "netcdf"])
def test_export_joins_back_to_metrics_and_paths(analysed_study, tmp_path, fmt):
    files = export_study(analysed_study, fmt, out=tmp_path / fmt)
    assert [f.rsplit("/", 1)[1].split(".")[0] for f in files] == ["checkpoints", "states"]
    table = read_table(files[0]).set_index(["seed", "step"]).sort_index()
    metrics = open_metrics(analysed_study).load()
    value = metrics["value"].where(metrics["computed"]).to_series().unstack("metric")
    per = metrics["per_layer"].to_series().unstack(["layer_metric", "layer"])
    for name in value.columns:  # every metric, at every (seed, step), the same number
        got = table[str(name)].reindex(value.index)
        np.testing.assert_allclose(got.to_numpy(float), value[name].to_numpy(float), rtol=1e-12, equal_nan=True)
    for (m, layer), col in per.loc[:, per.notna().any()].items():
        got = table[f"{m}@{layer}"].reindex(col.index)
        np.testing.assert_allclose(got.to_numpy(float), col.to_numpy(float), rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(table["epoch"].reindex(value.index), metrics["epoch"].to_series(), rtol=1e-12)
    paths = read_json(layout(analysed_study).paths)  # verified; without its checksum key
    k = json.loads(layout(analysed_study).selection.read_text())["chosen_k"]
    for seed, p in paths.items():
        rows = table.loc[int(seed)].loc[p["steps"]]
        np.testing.assert_array_equal(rows["state"].to_numpy(int), p["states"])
        post = rows[[f"posterior_{i}" for i in range(k)]].to_numpy(float)
        np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-9)
    states = read_table(files[1])
    analysis = json.loads(layout(analysed_study).analysis.read_text())
    assert list(states["hmm_state"]) == [s["state"] for s in analysis["states"]]
    feature = analysis["raw_features"][0]
    np.testing.assert_allclose(states[f"mean_{feature}"], [s["means"][feature] for s in analysis["states"]])


def test_parquet_equals_the_tree(analysed_study, tmp_path):
    """Parquet round trip: every value and dtype of the in-memory table comes back."""
    want = checkpoint_table(open_study(analysed_study))
    export_study(analysed_study, "parquet", out=tmp_path)
    got = pd.read_parquet(tmp_path / "checkpoints.parquet")
    pd.testing.assert_frame_equal(got, want)
    assert len(want) == want[["seed", "step"]].drop_duplicates().shape[0]  # one row per seed x step


def test_vt_export_command(analysed_study, tmp_path):
    out = tmp_path / "csv"
    res = runner.invoke(app, ["export", str(analysed_study), "--format", "csv", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "checkpoints.csv").is_file() and (out / "states.csv").is_file()
    bad = runner.invoke(app, ["export", str(analysed_study), "--format", "xlsx"])
    assert bad.exit_code == 2 and "error: format 'xlsx'" in bad.output
    missing = runner.invoke(app, ["export", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "error:" in missing.output
