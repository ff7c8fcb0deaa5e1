"""Every registered metric against a straightforward numpy reference, and the incremental store."""

import numpy as np
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from tests.helpers import tiny_dict
from vt_core import stages
from vt_core.config.study_config import ConfigError, parse_config
from vt_core.config.usercode import load_user_code
from vt_core.metrics.compute import _matrix_kernel, seed_metrics
from vt_core.metrics.registry import all_metrics, get
from vt_core.metrics.store import load_features
from vt_core.stages.train import train_seed
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import load_study, open_run, prepare_study, run_path
from vt_core.training.loop import Trainer, loss_and_correct

rng = np.random.default_rng(0)
MATS = {
    "5x3": rng.normal(size=(5, 3)),
    "3x7": rng.normal(size=(3, 7)),
    "rank2": rng.normal(size=(8, 2)) @ rng.normal(size=(2, 5)),
    "conv": rng.normal(size=(4, 3, 3, 3)).reshape(4, 27),
    "zeros": np.zeros((3, 3)),
}


def naive_matrix(name, w):
    s = np.linalg.svd(w, compute_uv=False)
    s = np.where(s < 1e-5, 0, s)
    if name == "effective_rank":
        if s.sum() == 0:
            return np.nan
        p = s / s.sum()
        return float(np.exp(-sum(x * np.log(x) for x in p if x > 0)))
    if name == "stable_rank":
        return np.sum(w ** 2) / s[0] ** 2 if s[0] > 0 else np.nan
    if name == "approx_rank":
        if s.sum() == 0:
            return 0.0
        e = np.cumsum(s ** 2) / np.sum(s ** 2)
        return float(next(i + 1 for i, x in enumerate(e) if x >= 0.99))
    if name == "rms":
        return float(np.sqrt(np.mean(w ** 2)))
    raise KeyError(name)


@pytest.mark.parametrize("name", ["effective_rank", "stable_rank", "approx_rank", "rms"])
@pytest.mark.parametrize("mat", list(MATS), ids=str)
def test_further_matrix_metrics(name, mat):
    w = MATS[mat]
    got = _matrix_kernel([get(name)], {})(w[None])[0, 0]
    ref = naive_matrix(name, w)
    if np.isnan(ref):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(ref, rel=1e-10, abs=1e-12)


def test_effective_rank_of_identity_is_its_size():
    assert _matrix_kernel([get("effective_rank")], {})(np.eye(6)[None])[0, 0] == pytest.approx(6.0)


def test_init_distances():
    cur, init = rng.normal(size=(3, 10)), rng.normal(size=10)
    assert get("dist_init_l2").kernel(cur, init[None])[1] == pytest.approx(np.linalg.norm(cur[1] - init))
    assert get("dist_init_l1").kernel(cur, init[None])[2] == pytest.approx(np.abs(cur[2] - init).sum())


def test_activation_metrics_against_loops():
    a = np.maximum(rng.normal(size=(2, 16, 6)), 0)  # (steps, probe, features), ReLU-like
    a[:, :, 0] = 0.0  # a dead unit
    a[:, :, 1] *= 1e-3  # a nearly dormant one
    for t in range(2):
        x = a[t]
        assert get("act_sparsity").kernel(a)[t] == pytest.approx((x == 0).mean())
        scores = np.abs(x).mean(axis=0)
        tau = 0.025
        assert get("dormant_fraction").kernel(a, threshold=tau)[t] == pytest.approx(
            np.mean([sc / scores.mean() <= tau for sc in scores]))
        assert get("act_norm").kernel(a)[t] == pytest.approx(np.mean([np.linalg.norm(r) for r in x]))
        assert get("act_var").kernel(a)[t] == pytest.approx(np.mean([np.var(x[:, j]) for j in range(6)]))


def naive_cka(x, y):
    def hsic(k, l):
        n = len(k)
        h = np.eye(n) - np.ones((n, n)) / n
        return np.trace(k @ h @ l @ h)

    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def feature_space_cka(x, y):
    """Kornblith et al. 2019, eq. (feature space): ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), centred."""
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


@pytest.mark.parametrize("n, fx, fy", [(20, 5, 7), (8, 300, 300), (32, 3, 64)])
def test_cka_matches_the_hsic_and_feature_space_definitions(n, fx, fy):
    """vt computes CKA in the probe batch's Gram form; it equals the HSIC definition and the
    feature-space formula, including hookpoints far wider than the probe batch."""
    x = rng.normal(size=(2, n, fx))
    y = np.stack([x[i] @ rng.normal(size=(fx, fy)) + 0.3 * rng.normal(size=(n, fy)) for i in range(2)])
    got = get("cka_prev").kernel(x, y)
    for i in range(2):
        assert got[i] == pytest.approx(naive_cka(x[i], y[i]), rel=1e-10)
        assert got[i] == pytest.approx(feature_space_cka(x[i], y[i]), rel=1e-10)
    assert get("cka_prev").kernel(x, x) == pytest.approx([1.0, 1.0])


def test_nonfinite_weights_give_nan_and_a_flag(tmp_path):
    cfg = parse_config(tiny_dict(tmp_path / "s", seeds=[0], training={"epochs": 3}))
    study = prepare_study(cfg)
    train_seed(study, 0)
    store = open_run(study, 0, cfg)
    w = store.root["weights"]["layers.0.weight"]
    row = w[2]
    row[0, 0] = np.inf
    w[2] = row
    ds = seed_metrics(store, cfg).compute()
    assert ds["nonfinite"].values.tolist() == [False, False, True, False]
    for m in ("l2", "var_w", "median_w"):
        assert np.isnan(ds["value"].sel(metric=m).values[2]) and np.isfinite(ds["value"].sel(metric=m).values[3])
    assert np.isnan(ds["per_layer"].sel(layer_metric="l2", layer="layers.0.weight").values[2])


def _analyse_metrics(study, seeds, why: bool = False):
    plan = stages.plan_metrics(study, seeds)
    cells = stages.finalize_metrics(study, plan, [stages.compute_metrics(study, s, plan) for s in seeds])
    return cells if why else {k: v for k, v in cells.items() if k not in ("why", "damaged")}


def test_incremental_seeds_metrics_and_checkpoints(tmp_path):
    d = tiny_dict(tmp_path / "s", training={"epochs": 4})
    study = prepare_study(parse_config(d))
    for s in (0, 1, 2):
        train_seed(study, s)
    n_steps, n_cols = 5, 14 + 5
    first = _analyse_metrics(study, [0, 1])
    assert first == {"computed": 2 * n_steps * n_cols, "reused": 0}
    v1 = load_features(study, ["l2"]).copy()
    again = _analyse_metrics(study, [0, 1])
    assert again == {"computed": 0, "reused": 2 * n_steps * n_cols}
    # a new seed: only its cells are computed
    assert _analyse_metrics(study, [0, 1, 2]) == {"computed": n_steps * n_cols, "reused": 2 * n_steps * n_cols}
    xr.testing.assert_equal(load_features(study, ["l2"]).sel(seed=[0, 1]), v1)
    # a new metric in the config: only its column is computed
    d2 = dict(d, metrics={"names": list(load_study(study).metrics.names) + ["effective_rank", "act_sparsity"]})
    prepare_study(parse_config(d2))
    assert _analyse_metrics(study, [0, 1, 2]) == {"computed": 3 * n_steps * 2, "reused": 3 * n_steps * n_cols}
    er = load_features(study, ["effective_rank", "act_sparsity@layers.1", "l2@max", "l2@mean", "l2"])
    assert np.isfinite(er.values).all()
    np.testing.assert_allclose(er.sel(metric="l2@mean").values, er.sel(metric="l2").values)
    assert (er.sel(metric="l2@max") >= er.sel(metric="l2@mean")).all()


def test_incremental_new_checkpoints(tmp_path):
    """Metrics taken while a seed is half-trained; after it finishes only the new steps are computed."""
    cfg = parse_config(tiny_dict(tmp_path / "s", seeds=[0], training={"epochs": 6}))
    study = prepare_study(cfg)
    t = Trainer(cfg, 0)
    store = RunStore.create(run_path(study, 0), seed=0, config_hash=cfg.training_hash(), config=cfg.training_dict())
    it = t.run()
    for _ in range(4):
        c = next(it)
        store.write(c)
        store.save_resume(t.state_dict())
        store.commit(c.index + 1, c.step)
    store.set_status("complete")  # pretend, to analyse the half-trained seed
    first = _analyse_metrics(study, [0])
    assert first["computed"] == 4 * 19
    store.set_status("running")
    train_seed(study, 0)
    second = _analyse_metrics(study, [0])
    assert second == {"computed": 3 * 19, "reused": 4 * 19}
    full = seed_metrics(open_run(study, 0, cfg), cfg).compute()
    got = load_features(study, ["l2", "var_w", "test_accuracy"]).sel(seed=0)
    np.testing.assert_allclose(got.values, full["value"].sel(metric=["l2", "var_w", "test_accuracy"]).values)


def test_user_metric_plugin(tmp_path):
    d = tiny_dict(tmp_path / "s", seeds=[0], training={"epochs": 2},
                  metrics={"plugins": ["tests.plugins.frobenius"], "names": ["l2", "frobenius_squared"]})
    cfg = load_user_code(parse_config(d))  # parsing imports nothing; this does
    study = prepare_study(cfg)
    train_seed(study, 0)
    ds = seed_metrics(open_run(study, 0, cfg), cfg).compute()
    np.testing.assert_allclose(ds["per_layer"].sel(layer_metric="frobenius_squared").values,
                               ds["per_layer"].sel(layer_metric="l2").values ** 2)
    with pytest.raises(ConfigError, match="cannot import 'nope.metrics'"):
        load_user_code(parse_config(tiny_dict(tmp_path, metrics={"plugins": ["nope.metrics"]})))


def test_every_metric_has_a_formula_and_vt_metrics_lists_it():
    from flows.cli import app

    res = CliRunner().invoke(app, ["metrics"])
    assert res.exit_code == 0
    for name, m in all_metrics().items():
        assert m.formula, name
        assert name in res.output


def test_gradient_norm_is_recorded(tmp_path):
    cfg = parse_config(tiny_dict(tmp_path / "s", seeds=[0], training={"epochs": 1},
                                 checkpoints={"every_epochs": None, "every_steps": 1}))
    t = Trainer(cfg, 0)
    it = t.run()
    next(it)
    c = next(it)  # one step: grad_norm is that step's full-gradient norm
    t2 = Trainer(cfg, 0)
    t2.perm = torch.randperm(len(t2.task.x_train), generator=t2.generator)
    idx = t2.perm[:32]
    loss, _ = loss_and_correct("hinge", t2.model(t2.task.x_train[idx]), t2.task.y_train[idx], 2)
    loss.backward()
    ref = torch.sqrt(sum((p.grad ** 2).sum() for p in t2.model.parameters()))
    assert c.scalars["grad_norm"] == pytest.approx(float(ref), rel=1e-6)


def _columns(study) -> list[str]:
    from vt_core.metrics.compute import metric_names

    return metric_names(load_study(study))


def test_reuse_is_keyed_by_the_training_run(tmp_path):
    """A retrained seed (a new run store: a new run_id) is recomputed even when its steps and
    metrics are unchanged, and says why; a weight changed by one ulp in the retrained run shows in
    the metrics. Without a retrain everything is reused."""
    study = prepare_study(parse_config(tiny_dict(tmp_path, seeds=[0, 1], training={"epochs": 4})))
    for s in (0, 1):
        train_seed(study, s)
    _analyse_metrics(study, [0, 1])
    before = load_features(study, ["l2", "var_w"]).copy()
    again = _analyse_metrics(study, [0, 1], why=True)
    assert again["computed"] == 0 and again["why"] == {}
    from vt_core.storage.study import reset_seed

    reset_seed(study, 1)
    train_seed(study, 1)  # bit-identical on a CPU, as a GPU or grouped retrain would not be
    store = RunStore(run_path(study, 1))
    w = store.root["weights"]["layers.0.weight"]
    row = w[2]
    row[0, 0] = np.nextafter(row[0, 0], np.float32(np.inf), dtype=np.float32)
    w[2] = row
    from vt_core.storage.run_integrity import row_crc, row_key  # as that retrain would have recorded it
    crcs = store.root["integrity"]["row_crc"]
    col = list(crcs.attrs["columns"]).index(w.path)
    table = crcs[:]
    table[2, col] = row_crc(row, row_key(store.attrs["run_id"], w.path, 2))
    crcs[:] = table
    cells = _analyse_metrics(study, [0, 1], why=True)
    n_cells = before.sizes["step"] * len(stages.plan_metrics(study, [0, 1]) and _columns(study))
    assert cells == {"computed": n_cells, "reused": n_cells, "why": {"1": "seed retrained (its run store is new)"},
                     "damaged": {}}
    after = load_features(study, ["l2", "var_w"])
    xr.testing.assert_equal(after.sel(seed=0), before.sel(seed=0))
    changed = (after.sel(seed=1) != before.sel(seed=1)).any(dim="metric")
    assert changed.values.tolist() == [s == 2 for s in range(before.sizes["step"])]
