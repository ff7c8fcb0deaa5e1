"""The metric stage of a large model's series spread over tasks of a few checkpoints (issue 31,
item 4): through the analyze flow, the same cells as one task per seed, and a damaged store still
named by seed. The stores here are small; the thresholds are lowered to make them "large"."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import xarray as xr
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterFlowRunId
from prefect.task_runners import ThreadPoolTaskRunner

from flows.study import analyze_flow
from vt_core.metrics import stream
from vt_core.stages import metrics as metric_stage
from vt_core.stages.metrics import DamagedRunError

pytestmark = pytest.mark.flow


@pytest.fixture
def large(monkeypatch):
    monkeypatch.setattr(stream, "STREAM_MIN_BYTES", 0)  # every checkpoint "large": computed a checkpoint at a time
    monkeypatch.setattr(metric_stage, "TASK_BYTES", 1)  # one checkpoint per task


def _task_names(state) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[state.state_details.flow_run_id])))
        assert client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    return [r.name for r in runs]


def test_cells_spread_over_tasks_equal_one_task_per_seed(analysed_study, tmp_path, large):
    study = tmp_path / "study"
    shutil.copytree(analysed_study, study)
    before = xr.open_zarr(study / "metrics.zarr", consolidated=False).load()
    shutil.rmtree(study / "metrics.zarr")
    state = analyze_flow.with_options(task_runner=ThreadPoolTaskRunner(2))(study=str(study), return_state=True)
    assert state.is_completed(), state
    names = _task_names(state)
    cells = [n for n in names if n.startswith("compute-cells")]
    steps = before.sizes["step"]
    assert len(cells) == 3 * steps  # a task per seed and checkpoint
    assert not [n for n in names if n.startswith("compute-metrics")]
    after = xr.open_zarr(study / "metrics.zarr", consolidated=False).load()
    for var in ("value", "per_layer"):
        a, b = before[var].values, after[var].reindex_like(before[var]).values
        assert np.array_equal(np.isnan(a), np.isnan(b))
        ok = ~np.isnan(a)
        np.testing.assert_allclose(b[ok], a[ok], rtol=1e-12, atol=0)
    assert after["computed"].values.all() and np.array_equal(after["nonfinite"].values, before["nonfinite"].values)


def test_a_damaged_store_is_named_through_the_spread_tasks(analysed_study, tmp_path, large):
    study = tmp_path / "study"
    shutil.copytree(analysed_study, study)
    shutil.rmtree(study / "metrics.zarr")
    store = study / "runs" / "seed=0001.zarr"
    chunk = max((p for p in (store / "weights").rglob("*") if p.is_file() and p.name != "zarr.json"),
                key=lambda p: p.stat().st_size)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    with pytest.raises(DamagedRunError, match="seed 1: array weights/"):
        analyze_flow.with_options(task_runner=ThreadPoolTaskRunner(2))(study=str(study))
