"""Per-example losses (hooks.per_example_loss) and the function's PCA (vt_core.metrics.function)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch

from tests.helpers import store_arrays, tiny_dict
from vt_core.config.study_config import ConfigError, parse_config
from vt_core.metrics.function import FunctionError, fit_pca, load_function
from vt_core.stages.train import train_group, train_seed
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import prepare_study, run_path, validate_study
from vt_core.training.loop import Trainer, example_indices, per_example_loss

N = 6
OVER = dict(data={"seed": 0}, hooks={"activations": [], "probe_size": 8, "per_example_loss": N})


def edit_prediction(model: torch.nn.Module, x: torch.Tensor, delta: float):
    """Change the model's output on one input by hand (a forward hook; returns its handle)."""
    def hook(module, inputs, out):
        hit = (inputs[0] == x).flatten(1).all(dim=1)
        shift = torch.zeros_like(out)
        shift[:, 0] = delta * hit.to(out.dtype)  # one logit: a softmax is not shift-invariant in it
        return out + shift

    return model.register_forward_hook(hook)


@pytest.mark.parametrize("loss", ["hinge", "cross_entropy", "mse"])
def test_changing_one_prediction_changes_its_column_only(tmp_path, loss):
    config = parse_config(tiny_dict(tmp_path / "s", training={"loss": loss}, **OVER))
    trainer = Trainer(config, 0)
    before = trainer.checkpoint().examples["loss"]
    assert before.shape == (2 * N,) and np.isfinite(before).all()
    j = 3 + N  # a held-out example
    handle = edit_prediction(trainer.model, trainer.examples[0][j], 0.7)
    after = trainer.checkpoint().examples["loss"]
    handle.remove()
    changed = np.flatnonzero(~np.isclose(before, after, rtol=0, atol=1e-7))
    assert changed.tolist() == [j]


def test_per_example_losses_average_to_the_loss():
    out, y = torch.randn(10, 3), torch.randint(0, 3, (10,))
    from vt_core.training.loop import loss_and_correct

    for name in ("cross_entropy", "mse"):
        assert torch.isclose(per_example_loss(name, out, y, 3).mean(), loss_and_correct(name, out, y, 3)[0])
    out1, y1 = torch.randn(10, 1), torch.randint(0, 2, (10,))
    assert torch.isclose(per_example_loss("hinge", out1, y1, 2).mean(), loss_and_correct("hinge", out1, y1, 2)[0])


def test_fixed_examples_are_seeded_and_in_range():
    a, sa = example_indices(100, 20, 5, seed=3)
    b, _ = example_indices(100, 20, 5, seed=3)
    assert (a == b).all() and sa.tolist() == [0] * 5 + [1] * 5
    assert a[:5].max() < 100 and a[5:].max() < 20 and len(set(a[:5])) == 5
    assert not (example_indices(100, 20, 5, seed=4)[0] == a).all()


def test_pca_of_learning_half_then_the_other_half_has_two_components():
    """Losses of 2 x 10 examples: the first half learnt over the first half of training, the
    second half over the second; three seeds with their own timing and noise."""
    rng = np.random.default_rng(0)
    rows = []
    for shift in (0.0, 0.05, -0.05):
        t = np.linspace(0, 1, 60)[:, None]
        first = 1 / (1 + np.exp((t - 0.25 - shift) * 30))
        second = 1 / (1 + np.exp((t - 0.75 - shift) * 30))
        x = np.hstack([np.repeat(first, 10, 1), np.repeat(second, 10, 1)])
        rows.append(x + 0.01 * rng.normal(size=x.shape))
    x = np.vstack(rows)
    pca = fit_pca(da.from_array(x, chunks=(37, 20)), 5)  # reduced lazily, block by block
    ratio = pca["explained_variance_ratio"]
    assert ratio[0] > 0.1 and ratio[1] > 0.1 and ratio[:2].sum() > 0.98 and ratio[2] < 0.01, ratio
    np.testing.assert_allclose(pca["explained_variance_ratio"], fit_pca(x, 5)["explained_variance_ratio"], rtol=1e-9)
    # the two components separate the halves: each loads on one half (up to a rotation within them)
    c = pca["components"][:2]
    assert np.linalg.matrix_rank(np.stack([c[:, :10].mean(1), c[:, 10:].mean(1)]), tol=1e-3) == 2


@pytest.fixture(scope="module")
def function_study(tmp_path_factory):
    from vt_core import stages

    config = parse_config(tiny_dict(tmp_path_factory.mktemp("function") / "s",
                                    hmm={"features": ["function_pc1", "function_pc2", "l2"], "bootstrap": 0,
                                         "cv_folds": 0}, **OVER))
    study = prepare_study(config)
    for seed in config.seeds:
        train_seed(study, seed)
    return study, stages.analyse(study)


def test_a_study_records_losses_and_fits_the_function(function_study):
    study, result = function_study
    store = RunStore(run_path(study, 0), mode="r")
    assert store.root["examples"]["loss"].shape[1] == 2 * N
    assert store.root["probe"]["example_split"][:].tolist() == [0] * N + [1] * N
    f = load_function(study)
    assert f["pcs"].shape == (3 * store.committed, min(10, 2 * N)) and sorted(set(f["seed"].tolist())) == [0, 1, 2]
    assert 0 < f["explained_variance_ratio"].sum() <= 1 + 1e-9 and result["chosen_k"] >= 1
    assert validate_study(study) == []  # the new arrays are checksummed and verified like the rest


@pytest.mark.browser
def test_the_dashboard_draws_the_function_without_errors(function_study, tmp_path):
    from tests.browser import render_checked
    from vt_core.report.dashboard import build_dashboard

    info = render_checked(build_dashboard(function_study[0]), "function.png", tmp_path)
    assert "function-trajectory" in info["names"] and "state-graph" in info["names"]


def test_group_records_the_losses_a_seed_records_alone(tmp_path):
    over = dict(OVER, training={"epochs": 4})
    alone = prepare_study(parse_config(tiny_dict(tmp_path / "alone", **over)))
    group = prepare_study(parse_config(tiny_dict(tmp_path / "group", **over)))
    for seed in (0, 1, 2):
        train_seed(alone, seed)
    train_group(group, [0, 1, 2])
    for seed in (0, 1, 2):
        a, b = (RunStore(run_path(s, seed), mode="r") for s in (alone, group))
        assert a.committed == b.committed > 3
        np.testing.assert_allclose(a.root["examples"]["loss"][: a.committed], b.root["examples"]["loss"][: b.committed],
                                   rtol=1e-5, atol=1e-6)
        assert store_arrays(run_path(group, seed)).keys() == store_arrays(run_path(alone, seed)).keys()


def test_checks_refuse_examples_that_differ_by_seed(tmp_path):
    from vt_core.training.preflight import check_config

    with pytest.raises(ConfigError, match="data.seed is unset"):
        check_config(parse_config(tiny_dict(tmp_path / "a", hooks={"per_example_loss": 4})))
    with pytest.raises(ConfigError, match="hooks.per_example_loss = 100 is more than the 64"):
        check_config(parse_config(tiny_dict(tmp_path / "b", data={"seed": 0}, hooks={"per_example_loss": 100})))
    with pytest.raises(ConfigError, match="function_pc1, ... are the PCs"):
        check_config(parse_config(tiny_dict(tmp_path / "c", hmm={"features": ["function_pc1"]})))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_function_missing_is_a_clear_error(tmp_path):
    with pytest.raises(FunctionError, match="not found"):
        load_function(tmp_path)


def test_hash_unchanged_when_off(tmp_path):
    """Studies made before per-example losses keep their training hash."""
    cfg = parse_config(tiny_dict(tmp_path / "s"))
    assert "per_example_loss" not in cfg.training_dict()["hooks"]
    on = parse_config(tiny_dict(tmp_path / "s", hooks={"per_example_loss": 2}))
    assert on.training_hash() != cfg.training_hash()
