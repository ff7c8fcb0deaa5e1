"""open_study: a whole study as one labelled DataTree, read from the stores as they are (committed
rows only), on local paths and memory:// URLs, for stores of format 1 and 2; netCDF round trips."""

import json
import re
import shutil
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
import xarray as xr

from tests.helpers import ROOT, store_arrays, tiny_dict
from vt_core import open_study, stages
from vt_core.config.study_config import parse_config
from vt_core.metrics.store import open_metrics
from vt_core.stages.train import train_seed
from vt_core.storage.layout import layout
from vt_core.storage.location import location, read_json, url
from vt_core.storage.schema import FORMAT_VERSION
from vt_core.storage.study import prepare_study, reset_seed, run_path

FORMAT1 = ROOT / "tests" / "fixtures" / "format1_study"  # written by vt at 98667b4 (store format 1)
HMM = {"features": ["l2", "spectral", "var_w", "test_accuracy"]}


def _nodes(tree):
    return {node.path: node.to_dataset() for node in tree.subtree if node.to_dataset().variables}


def _check_described(tree):
    """Every variable has a long_name; steps, epochs and accuracies have units."""
    for path, ds in _nodes(tree).items():
        for name, var in ds.variables.items():
            assert var.attrs.get("long_name"), (path, name)
        for name in ("step", "epoch", "test_accuracy"):
            if name in ds.variables:
                assert ds[name].attrs.get("units") in ("steps", "epochs", "fraction"), (path, name)


def _check_netcdf_roundtrip(tree, tmp_path):
    for path, ds in _nodes(tree).items():
        f = tmp_path / (path.strip("/").replace("/", "_").replace("=", "") + ".nc")
        ds.to_netcdf(f)
        with xr.open_dataset(f) as back:
            xr.testing.assert_equal(back.load(), ds.load())


def _check_runs_equal_stores(tree, study):
    runs = tree["runs"].to_dataset()
    for seed in runs["seed"].values:
        want = store_arrays(run_path(study, int(seed)))
        n = len(want["step"])
        got = runs.sel(seed=seed).isel(step=slice(0, n))
        np.testing.assert_array_equal(got["step"].values, want["step"])
        np.testing.assert_array_equal(got["epoch"].values, want["epoch"])
        np.testing.assert_array_equal(got["train_loss"].values, want["train_loss"])
        weights = tree[f"weights/seed={int(seed):04d}"].to_dataset()
        for name, var in weights.data_vars.items():
            assert var.chunks is not None  # lazy (dask) until used
            np.testing.assert_array_equal(var.values, want[f"weights/{name}"])


def test_fresh_study_is_one_labelled_tree(analysed_study, tmp_path):
    tree = open_study(analysed_study)
    assert {"runs", "metrics", "states", "weights", "activations", "analysis"} <= set(tree.children)
    assert tree.attrs["missing"] == "" and json.loads(tree.attrs["config"])["name"] == "tiny"
    runs = tree["runs"].to_dataset()
    assert runs["train_loss"].dims == ("seed", "step") and runs["epoch"].dims == ("seed", "step")
    assert "epoch" in runs.coords and list(runs["format_version"].values) == [FORMAT_VERSION] * 3
    w = tree["weights/seed=0000"].to_dataset()
    assert w["layers.0.weight"].dims == ("step", "layers.0.weight.out_features", "layers.0.weight.in_features")
    assert w["layers.0.bias"].dims == ("step", "layers.0.bias.out_features")
    assert int(w["seed"]) == 0 and "epoch" in w.coords
    assert tree["activations/seed=0001"].to_dataset()["layers.1"].dims == ("step", "probe", "layers.1.features")
    _check_described(tree)
    _check_runs_equal_stores(tree, analysed_study)
    _check_netcdf_roundtrip(tree, tmp_path)


def test_states_match_paths_json_and_posteriors_are_probabilities(analysed_study):
    tree = open_study(analysed_study)
    states = tree["states"].to_dataset()
    paths = read_json(layout(analysed_study).paths)  # verified; without its checksum key
    for seed, p in paths.items():
        got = states["state"].sel(seed=int(seed), step=p["steps"]).values
        np.testing.assert_array_equal(got, p["states"])
    post = states["posterior"].sel(seed=list(map(int, paths))).dropna("step", how="all")
    np.testing.assert_allclose(post.sum("hmm_state").values, 1.0, atol=1e-9)
    agree = (post.argmax("hmm_state") == states["state"].sel(step=post["step"])).mean()
    assert float(agree) > 0.9  # the posterior's mode and the Viterbi path agree almost everywhere
    # issue 34, item 11: the state as a category too (an int is drawn on a continuous scale)
    st, lab = states["state"].values, states["state_label"].values
    assert all(lb == (f"state {s}" if s >= 0 else "") for s, lb in zip(st.ravel(), lab.ravel()))
    sel = json.loads(layout(analysed_study).selection.read_text())
    assert states.attrs["chosen_k"] == sel["chosen_k"] == states.sizes["hmm_state"]
    assert json.loads(states.attrs["selection_table"]) == json.loads(json.dumps(sel["table"]))
    analysis = json.loads(layout(analysed_study).analysis.read_text())
    summ = tree["analysis/states"].to_dataset()
    np.testing.assert_allclose(summ["occupancy"].values, [s["occupancy"] for s in analysis["states"]])
    assert tree["analysis/transitions"].to_dataset().sizes.get("transition", 0) == len(analysis["transitions"])
    # issue 34, item 11: numbers, not JSON strings: each seed's first step of each transition, the table along k
    first = tree["analysis/transitions"]["first_step"]
    assert first.dims == ("transition", "seed") and first.dtype == float
    for i, tr in enumerate(analysis["transitions"]):
        for s in first["seed"].values:
            want = tr["first_step"].get(str(int(s)))
            got = first.isel(transition=i).sel(seed=s).item()
            assert (np.isnan(got) and want is None) or got == want
    table = tree["analysis/selection"].to_dataset()
    assert list(table["k"].values) == [r["k"] for r in sel["table"]] and table["bic"].dtype == float
    np.testing.assert_allclose(table["bic"].values, [r.get("bic", np.nan) for r in sel["table"]])
    assert table.attrs["chosen_k"] == sel["chosen_k"]


def test_metrics_node_equals_metrics_zarr(analysed_study):
    got = open_study(analysed_study)["metrics"].to_dataset()
    want = open_metrics(analysed_study).load()
    np.testing.assert_array_equal(got["value"].values, want["value"].where(want["computed"]).values)
    assert list(got["metric"].values) == [str(m) for m in want["metric"].values]
    assert got["metric_units"].sel(metric="test_accuracy").item() == "fraction"
    assert all(got["metric_units"].values), dict(zip(got["metric"].values, got["metric_units"].values))  # issue 34
    assert got["metric_units"].sel(metric="l2").item() == "weight units"


def test_mid_training_only_committed_rows_and_no_stale_metrics(tmp_path):
    study = prepare_study(parse_config(tiny_dict(tmp_path / "study", hmm=HMM)))
    for s in (0, 1, 2):
        train_seed(study, s)
    stages.analyse(study)
    reset_seed(study, 0)  # seed 0 is retrained and killed after 4 checkpoints

    def die(p, seen=[]):  # noqa: B006 - counts calls
        seen.append(p)
        if len(seen) == 4:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        train_seed(study, 0, progress=die)
    tree = open_study(study)
    runs = tree["runs"].to_dataset()
    committed = int(runs["committed_steps"].sel(seed=0))
    assert 0 < committed <= 4 and str(runs["status"].sel(seed=0).item()) == "failed"
    assert int(runs["epoch"].sel(seed=0).notnull().sum()) == committed
    assert tree["weights/seed=0000"].to_dataset().sizes["step"] == committed
    metrics = tree["metrics"].to_dataset()
    assert metrics["value"].sel(seed=0).isnull().all()  # computed from the run that was deleted
    assert not metrics["visible"].sel(seed=0).any() and metrics["visible"].sel(seed=1).all()
    assert metrics["value"].sel(seed=1).notnull().any()


@pytest.fixture
def mem_url():
    u = f"memory://vt-tests/{uuid.uuid4().hex}/study"
    yield u
    fs = fsspec.filesystem("memory")
    if fs.exists(u.removeprefix("memory://")):
        fs.rm(u.removeprefix("memory://"), recursive=True)


def test_memory_study(mem_url, tmp_path):
    study = prepare_study(parse_config(tiny_dict(mem_url, hmm=HMM)))
    for s in (0, 1, 2):
        train_seed(study, s)
    stages.analyse(study)
    tree = open_study(mem_url)
    assert tree.attrs["location"] == mem_url and tree.attrs["missing"] == ""
    for seed in (0, 1, 2):
        want = store_arrays(url(run_path(mem_url, seed)))
        got = tree[f"weights/seed={seed:04d}"].to_dataset()["layers.0.weight"].values
        np.testing.assert_array_equal(got, want["weights/layers.0.weight"])
    _check_described(tree)
    _check_netcdf_roundtrip(tree, tmp_path)


def test_study_written_in_format_1_still_opens(tmp_path):
    study = tmp_path / "format1"
    shutil.copytree(FORMAT1, study)
    assert "format_version" not in json.loads((study / "runs" / "seed=0000.zarr" / "zarr.json").read_text())["attributes"]
    early = open_study(study)  # trained, not analysed: the parts not made yet are named
    assert early.attrs["missing"] == "metrics, states, analysis/states"
    stages.analyse(study)
    tree = open_study(study)
    runs = tree["runs"].to_dataset()
    assert list(runs["format_version"].values) == [1, 1, 1] and "epoch" in runs.coords
    w = tree["weights/seed=0002"].to_dataset()
    assert w["layers.0.weight"].dims == ("step", "layers.0.weight.d0", "layers.0.weight.d1")  # as stored
    assert json.loads(w.attrs["config"])["model"]["hidden"] == [8]
    _check_described(tree)
    _check_runs_equal_stores(tree, study)
    _check_netcdf_roundtrip(tree, tmp_path)


def _readme_code() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Analyse it yourself", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


def test_readme_analyse_it_yourself_runs(analysed_study, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    code = _readme_code()
    assert "open_study" in code and "groupby" in code
    monkeypatch.chdir(tmp_path)
    Path("studies").symlink_to(location(analysed_study).parent)
    namespace: dict = {}
    exec(compile(code.replace("studies/sparse_parity", f"studies/{location(analysed_study).name}"), "README", "exec"),
         namespace)
    assert namespace["by_state"].index.name == "state" and len(namespace["by_state"]) >= 1
