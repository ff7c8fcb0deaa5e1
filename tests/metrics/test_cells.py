"""The live watcher's cells (vt_core.metrics.cells, vt_core.metrics.stream.WeightMetrics: numpy,
no xarray, a store read a few new rows at a time) against the metric stage's
(:func:`vt_core.metrics.store.compute_cells` and :func:`feature_column`, xarray): every feature
kind — a model-averaged metric, a recorded scalar, one layer's value (attention heads split, conv
kernels), each aggregation over layers (trace: none on a conv kernel) — on three architectures."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import tiny_dict
from tests.metrics.test_paper_code import CASES, _store
from vt_core.config.study_config import parse_config
from vt_core.metrics import stream
from vt_core.metrics.cells import AGGREGATIONS, Cells
from vt_core.metrics.params import MetricsComputeError
from vt_core.metrics.store import compute_cells, feature_column
from vt_core.names import PAPER_METRICS, SCALARS
from vt_core.storage.run_store import RunStore


@pytest.mark.parametrize("case", ["transformer, 2 layers + LayerNorm", "lenet5", "mlp + batch norm"])
def test_read_a_few_rows_at_a_time_the_features_are_the_metric_stages(tmp_path, case):
    _, overrides = CASES[case]
    store, _ = _store(tmp_path, overrides)
    cfg = parse_config(tiny_dict(tmp_path, **overrides))
    names = [*PAPER_METRICS, "dist_init_l2", *SCALARS]
    ds = compute_cells(store, cfg, names, [0, 1, 2], device=None)
    weights = stream.WeightMetrics(store, cfg, names)
    looks = [weights(store, np.array([0])), weights(RunStore(store.path, mode="r"), np.array([1, 2]))]
    layers = [str(x) for x in ds["layer"].values]
    features = names + [f"{m}@{x}" for m in ("l2", "trace") for x in layers]
    features += [f"{m}@{how}" for m in ("l2", "trace", "spectral") for how in AGGREGATIONS]
    for f in features:
        want = feature_column(ds, f).values
        for got in (np.concatenate([c.feature(f) for c in looks]), Cells.of(ds).feature(f)):
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=0, equal_nan=True, err_msg=f)
    assert np.isfinite(np.concatenate([c.feature("trace@mean") for c in looks])).all()
    np.testing.assert_array_equal(np.concatenate([c.step for c in looks]), ds["step"].values)
    np.testing.assert_array_equal(np.concatenate([c.nonfinite for c in looks]), ds["nonfinite"].values)
    with pytest.raises(MetricsComputeError, match="no per-layer values for 'l2' at 'nowhere'"):
        looks[0].feature("l2@nowhere")
