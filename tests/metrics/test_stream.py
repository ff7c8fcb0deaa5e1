"""The checkpoint-at-a-time weight metrics (vt_core.metrics.stream) against the lazy path they
replace for large models: every value, per-layer value and flag, under both conventions, with a
checkpoint holding NaN, and a row whose bytes were replaced by another valid row's."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import tiny_dict
from tests.metrics.test_paper_code import CASES, _store
from vt_core.config.study_config import parse_config
from vt_core.metrics import stream
from vt_core.metrics.compute import seed_metrics
from vt_core.names import PAPER_METRICS, SCALARS
from vt_core.storage.run_store import Checkpoint

NAMES = [*PAPER_METRICS, "rms", "dist_init_l1", "dist_init_l2"]


def _both(store, cfg, names=NAMES, device=None):
    lazy = seed_metrics(store, cfg, names=names).compute()
    return lazy, stream.weight_metrics(store, cfg, names, np.arange(store.committed), device=device)


def _same(a: np.ndarray, b: np.ndarray, rel: float = 1e-12) -> None:
    assert np.array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(a)
    assert np.allclose(a[ok], b[ok], rtol=rel, atol=0), np.max(np.abs(a[ok] - b[ok]) / np.abs(a[ok]))


@pytest.mark.parametrize("convention", ["paper_code", "paper_text"])
@pytest.mark.parametrize("case", ["transformer, 2 layers + LayerNorm", "lenet5", "mlp + batch norm"])
def test_every_value_equals_the_lazy_path(tmp_path, case, convention):
    _, overrides = CASES[case]
    store, _ = _store(tmp_path, overrides)
    cfg = parse_config(tiny_dict(tmp_path, **overrides, metrics={"convention": convention}))
    lazy, streamed = _both(store, cfg)
    _same(lazy["value"].values, streamed["value"].values)
    per = streamed["per_layer"].reindex(layer=lazy["layer"], layer_metric=lazy["layer_metric"])
    _same(lazy["per_layer"].values, per.values)
    assert list(streamed["step"].values) == list(lazy["step"].values)
    assert np.array_equal(streamed["epoch"].values, lazy["epoch"].values)


def test_median_is_exact_in_both_conventions():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 10, 1001):
        x = rng.standard_normal(n).astype(np.float32)
        srt = np.sort(x)
        assert stream.median(x.copy()[None], "paper_code")[0] == float(srt[(n - 1) // 2])
        assert stream.median(x.copy()[None], "paper_text")[0] == (float(srt[(n - 1) // 2]) + float(srt[n // 2])) / 2
        both = np.stack([x, x[::-1]])  # row by row
        assert stream.median(both.copy(), "paper_code").tolist() == [float(srt[(n - 1) // 2])] * 2


def test_a_checkpoint_holding_nan_has_no_weight_metrics(tmp_path):
    _, overrides = CASES["mlp (sparse parity, 1 output)"]
    store, states = _store(tmp_path, overrides)
    bad = {k: v.copy() for k, v in states[-1].items()}
    name = sorted(k for k in bad if k.endswith("weight"))[0]
    bad[name][0, 0] = np.nan
    store.write(Checkpoint(index=3, step=30, epoch=3.0, scalars={s: 0.5 for s in SCALARS}, weights=bad))
    store.commit(4, 30)
    cfg = parse_config(tiny_dict(tmp_path, **overrides))
    lazy, streamed = _both(store, cfg)
    assert streamed["nonfinite"].values.tolist() == lazy["nonfinite"].values.tolist() == [False, False, False, True]
    assert np.isnan(streamed["value"].values[3]).all()
    _same(lazy["value"].values, streamed["value"].values)
    _same(lazy["per_layer"].values, streamed["per_layer"].reindex(layer=lazy["layer"]).values)


def test_a_row_replaced_by_another_valid_row_is_refused(tmp_path):
    """Row 1 rewritten with row 2's values behind vt's back (through zarr: a valid chunk, its own
    CRC32C intact): zarr reads it without complaint; the row checksum recorded at the commit does not."""
    import zarr

    _, overrides = CASES["mlp (sparse parity, 1 output)"]
    store, _ = _store(tmp_path, overrides)
    name = sorted(n for n, _ in store.root["weights"].arrays() if n != "step")[0]
    arr = zarr.open_group(str(tmp_path / "seed=0000.zarr"), mode="r+")["weights"][name]
    arr[1] = arr[2]
    cfg = parse_config(tiny_dict(tmp_path, **overrides))
    with pytest.raises(stream.RowChecksumError, match="row 1"):
        stream.weight_metrics(store, cfg, NAMES, np.arange(3))


def test_the_metric_stage_streams_large_checkpoints(tmp_path, monkeypatch):
    """Above STREAM_MIN_BYTES the stage computes the weight metrics here and the activation metrics
    lazily, merged into the cells the lazy path gave."""
    from vt_core.metrics.store import _compute_in_blocks, metric_names

    _, overrides = CASES["transformer, 2 layers + LayerNorm"]
    store, _ = _store(tmp_path, overrides)
    cfg = parse_config(tiny_dict(tmp_path, **overrides))
    names = metric_names(cfg)
    lazy = _compute_in_blocks(store, cfg, names, np.arange(3))
    calls = []
    monkeypatch.setattr(stream, "STREAM_MIN_BYTES", 0)
    real = stream.weight_metrics
    monkeypatch.setattr(stream, "weight_metrics", lambda *a, **k: calls.append(1) or real(*a, **k))
    streamed = _compute_in_blocks(store, cfg, names, np.arange(3))
    assert calls
    _same(lazy["value"].values, streamed["value"].values)
    _same(lazy["per_layer"].values, streamed["per_layer"].reindex(layer=lazy["layer"], layer_metric=lazy["layer_metric"]).values)


def test_values_do_not_depend_on_the_block(tmp_path, monkeypatch):
    """Bit for bit the same whether checkpoints are computed one at a time (a large model, an
    import as it commits) or many together: a study's metrics never depend on how they were batched."""
    _, overrides = CASES["transformer, 2 layers + LayerNorm"]
    store, _ = _store(tmp_path, overrides)
    cfg = parse_config(tiny_dict(tmp_path, **overrides))
    whole = stream.weight_metrics(store, cfg, NAMES, np.arange(3))
    monkeypatch.setattr(stream, "BLOCK_BYTES", 1)
    one = stream.weight_metrics(store, cfg, NAMES, np.arange(3))
    for var in ("value", "per_layer", "nonfinite"):
        np.testing.assert_array_equal(one[var].values, whole[var].values)
