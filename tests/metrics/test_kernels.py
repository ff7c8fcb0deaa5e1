import dask
import numpy as np
import pytest
import torch
import xarray as xr

from vt_core.metrics.compute import _matrix_kernel, seed_metrics
from vt_core.metrics.registry import get
from vt_core.metrics.store import load_features
from vt_core.names import PAPER_METRICS, SCALARS
from vt_core.storage.study import load_study, open_run

MATRIX_METRICS = [n for n in PAPER_METRICS if get(n).reads == "matrix"]


def matrix_metrics(stack, convention: str = "paper_text"):
    return _matrix_kernel([get(n) for n in MATRIX_METRICS], {"convention": convention})(stack)


def global_stats(*arrays, convention: str = "paper_text"):
    flat = np.concatenate([np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1) for a in arrays], axis=1)
    return np.stack([get(n)(flat, convention=convention) for n in ("mean_w", "median_w", "var_w")], axis=-1)


def naive(w: np.ndarray) -> dict:
    """One matrix at a time, with torch calls, as REFERENCE.md's text defines the metrics (the
    paper_text convention; tests/reference/ holds the paper code's)."""
    t = torch.tensor(w, dtype=torch.float64)
    s = torch.linalg.svdvals(t)
    s = torch.where(s < 1e-5, torch.zeros_like(s), s)
    l1, l2 = t.abs().sum().item(), torch.linalg.norm(t).item()
    tr, spec = torch.trace(t).item(), s.max().item()
    return {"l1": l1, "l2": l2, "trace": tr, "spectral": spec, "code_sparsity": l1 / l2,
            "computational_sparsity": tr / spec, "mean_singular_value": s.mean().item(),
            "var_singular_value": s.var(unbiased=False).item()}


def shapes_and_matrices():
    rng = np.random.default_rng(0)
    yield rng.normal(size=(5, 3))
    yield rng.normal(size=(3, 7))
    yield rng.normal(size=(6, 6))
    low = rng.normal(size=(8, 2)) @ rng.normal(size=(2, 5))  # rank 2: zeroed singular values count
    yield low
    yield rng.normal(size=(4, 3 * 3 * 3)).reshape(4, 27)  # a conv kernel reshaped to (out, in*kh*kw)


@pytest.mark.parametrize("w", list(shapes_and_matrices()), ids=lambda w: "x".join(map(str, w.shape)))
def test_matrix_metrics_match_naive(w):
    got = matrix_metrics(w[None])[0]
    ref = naive(w)
    np.testing.assert_allclose(got, [ref[k] for k in MATRIX_METRICS], rtol=1e-10, atol=1e-12)


def test_conventions_differ_where_documented():
    """paper_text: population variances, midpoint median; paper_code: Bessel-corrected variances,
    the lower middle value (torch.median), NaN variance for a single singular value."""
    w = np.random.default_rng(1).normal(size=(4, 4))
    s = np.linalg.svd(w, compute_uv=False)
    col = list(MATRIX_METRICS).index("var_singular_value")
    assert matrix_metrics(w[None], "paper_text")[0][col] == pytest.approx(np.var(s, ddof=0))
    assert matrix_metrics(w[None], "paper_code")[0][col] == pytest.approx(np.var(s, ddof=1))
    row = np.random.default_rng(4).normal(size=(1, 1, 6))  # a 1 x n layer: one singular value
    assert matrix_metrics(row, "paper_text")[0][col] == 0.0
    assert np.isnan(matrix_metrics(row, "paper_code")[0][col])
    flat = np.random.default_rng(2).normal(size=(3, 12))  # an even count: the two medians differ
    a2, b2 = flat[:, :8].reshape(3, 4, 2), flat[:, 8:]
    np.testing.assert_allclose(global_stats(a2, b2, convention="paper_text"), np.stack(
        [flat.mean(1), np.median(flat, 1), flat.var(1, ddof=0)], axis=-1))
    lower = np.sort(flat, axis=1)[:, 5]
    np.testing.assert_allclose(global_stats(a2, b2, convention="paper_code"), np.stack(
        [flat.mean(1), lower, flat.var(1, ddof=1)], axis=-1))
    assert not np.allclose(lower, np.median(flat, 1))


def test_nan_matrix_gives_nan_row_not_a_crash():
    w = np.ones((2, 3, 3))
    w[1, 0, 0] = np.nan
    out = matrix_metrics(w)
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()


def test_seed_metrics_equal_a_per_checkpoint_loop(analysed_study):
    config = load_study(analysed_study)
    store = open_run(analysed_study, 0, config)
    ds = seed_metrics(store, config).compute()
    weights = store.dataset("weights").compute()
    for i in (0, 5, int(ds.sizes["step"]) - 1):
        mats = [weights[n].values[i] for n in ("layers.0.weight", "layers.2.weight")]
        biases = [weights[n].values[i] for n in ("layers.0.bias", "layers.2.bias")]
        per = [naive(m) for m in mats]
        expect = {k: np.mean([p[k] for p in per]) for k in MATRIX_METRICS}
        w_all = np.concatenate([m.ravel() for m in mats]).astype(np.float64)
        b_all = np.concatenate([b.ravel() for b in biases]).astype(np.float64)
        expect |= {"mean_w": w_all.mean(), "median_w": np.sort(w_all)[(len(w_all) - 1) // 2],
                   "var_w": w_all.var(ddof=1), "mean_b": b_all.mean(),
                   "median_b": np.sort(b_all)[(len(b_all) - 1) // 2], "var_b": b_all.var(ddof=1)}
        # paper_code (the default): Bessel-corrected singular-value variance, NaN for one value, dropped
        svv = [np.var(np.where((sv := np.linalg.svd(m.astype(np.float64), compute_uv=False)) < 1e-5, 0, sv), ddof=1) if min(m.shape) > 1
               else np.nan for m in mats]
        expect["var_singular_value"] = np.nanmean(svv)
        row = ds["value"].isel(step=i)
        for k in PAPER_METRICS:
            assert float(row.sel(metric=k)) == pytest.approx(expect[k], rel=1e-9, abs=1e-12), k
    assert list(ds["metric"].values) == list(PAPER_METRICS) + list(SCALARS)
    assert set(ds["layer"].values) == {"layers.0.weight", "layers.2.weight"}
    assert not ds["nonfinite"].values.any()


def test_nothing_is_computed_before_compute(analysed_study):
    def refuse(*args, **kwargs):
        raise AssertionError("dask computed something while building the metrics graph")

    config = load_study(analysed_study)
    store = open_run(analysed_study, 1, config)
    with dask.config.set(scheduler=refuse):
        ds = seed_metrics(store, config)
        assert isinstance(ds["value"].data, dask.array.Array)
    v = ds["value"].compute()
    assert np.isfinite(v.sel(metric=list(PAPER_METRICS)).values).all()


def test_metrics_zarr_holds_every_seed(analysed_study):
    value = load_features(analysed_study, ["l2", "test_accuracy"])
    assert list(value["seed"].values) == [0, 1, 2]
    assert value.dims == ("seed", "step", "metric")
    assert np.isfinite(value.values).all()
    ds = xr.open_zarr(str(analysed_study / "metrics.zarr"), consolidated=False)
    assert ds["per_layer"].dims == ("seed", "step", "layer_metric", "layer")
    assert ds["computed"].sel(metric=list(PAPER_METRICS)).all()


@pytest.mark.parametrize("ddof", [0, 1])
def test_variance_by_blocks_equals_numpy(ddof, monkeypatch):
    """var_w of a large model goes by blocks (no float64 copy of every weight): equal to np.var."""
    from vt_core.metrics import weights

    rng = np.random.default_rng(0)
    big = (rng.standard_normal((2, 3 * weights.VAR_BLOCK + 17)) * 0.02 + 0.5).astype(np.float32)
    np.testing.assert_allclose(weights._variance(big, ddof), big.var(axis=-1, dtype=np.float64, ddof=ddof),
                               rtol=1e-13)
    monkeypatch.setattr(weights, "VAR_BLOCK", 7)  # uneven blocks, leading axes
    x = rng.standard_normal((3, 4, 50)).astype(np.float32)
    np.testing.assert_allclose(weights._variance(x, ddof), x.var(axis=-1, dtype=np.float64, ddof=ddof), rtol=1e-13)


def test_sums_shared_within_a_kernel_equal_each_metric_alone():
    """l1, l2, code_sparsity and rms read sums computed once per kernel call: bit for bit what each
    metric gives alone, in dask's threads at once as in one, and nothing kept after the call."""
    from concurrent.futures import ThreadPoolExecutor

    from vt_core.metrics import weights

    names = ["l1", "l2", "code_sparsity", "rms", "trace", "spectral"]
    ms = [get(n) for n in names]
    rng = np.random.default_rng(3)
    stacks = [rng.normal(size=(3, 2, 7, 5)) * 10.0 ** rng.integers(-3, 3, size=(3, 2, 1, 1)) for _ in range(8)]
    stacks[0][1, 0, 2, 2] = np.nan  # a nonfinite matrix: NaN row, the others as ever

    def alone(w):
        w = np.where(np.isfinite(w.sum(axis=(-2, -1)))[..., None, None], w, 0.0)
        s = weights.singular_values(w)
        out = np.stack([np.broadcast_to(m(w, s), w.shape[:-2]) for m in ms], axis=-1)
        return out

    kernel = _matrix_kernel(ms, {})
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(kernel, stacks * 4))
    for w, got in zip(stacks * 4, threaded):
        want = alone(w)
        if w is stacks[0]:
            want[1, 0] = np.nan
        np.testing.assert_array_equal(got, want)
    assert getattr(weights._SHARED, "slot", None) is None
    with pytest.raises(ZeroDivisionError), weights.shared_sums(stacks[1]):
        raise ZeroDivisionError
    assert weights._SHARED.slot is None
    # outside a kernel, or for another array than the kernel's, each metric computes its own sums
    with weights.shared_sums(stacks[1]):
        np.testing.assert_array_equal(get("l1")(stacks[2], None), np.abs(stacks[2]).sum(axis=(-2, -1)))
