import numpy as np
import pytest
import torch
import xarray as xr

from vt_core.storage.run_store import RunStore, StoreError
from vt_core.training.loop import Checkpoint


def ckpt(i, w=None):
    w = np.full((3, 2), float(i), np.float32) if w is None else w
    return Checkpoint(index=i, step=10 * i, epoch=float(i), scalars={"train_loss": 1.0 / (i + 1)},
                      weights={"layer.weight": w, "layer.bias": np.zeros(3, np.float32)},
                      activations={"layer": np.ones((4, 3), np.float32) * i})


@pytest.fixture
def store(tmp_path):
    return RunStore.create(tmp_path / "seed=0000.zarr", seed=0, config_hash="abc", config={"x": 1})


def test_commit_and_read_back_labelled(store):
    for i in range(3):
        store.write(ckpt(i))
        store.commit(i + 1, 10 * i)
    assert store.dataset()["step"].values.tolist() == [0, 10, 20]  # vt reads committed rows only
    store.truncate(store.committed)  # what a finished run does
    ds = xr.open_zarr(str(store.path), consolidated=False)  # what a user types
    assert list(ds["step"].values) == [0, 10, 20]
    w = store.dataset("weights")
    assert w["layer.weight"].dims == ("step", "layer.weight.d0", "layer.weight.d1")
    np.testing.assert_array_equal(w["layer.weight"].sel(step=20).values, np.full((3, 2), 2.0))
    a = store.dataset("activations")
    assert a["layer"].dims[:2] == ("step", "probe")


def test_uncommitted_rows_are_invisible_and_truncated(store):
    for i in range(3):
        store.write(ckpt(i))
    store.commit(2, 10)  # the third checkpoint was written but never committed
    assert store.dataset()["step"].size == 2
    store.truncate(store.committed)
    assert store.root["step"].shape == (2,)
    assert store.root["weights"]["layer.weight"].shape == (2, 3, 2)


def test_capacity_sizes_arrays_once(store):
    store.write(ckpt(0), capacity=10)
    assert store.root["weights"]["layer.weight"].shape == (10, 3, 2)
    store.write(ckpt(1), capacity=10)
    store.commit(2, 10)
    assert store.dataset("weights")["step"].size == 2
    store.truncate(2)
    assert store.root["weights"]["layer.weight"].shape == (2, 3, 2)


def test_rewriting_a_row_is_idempotent(store):
    store.write(ckpt(0))
    store.write(ckpt(1))
    store.write(ckpt(1))  # a retried checkpoint rewrites its row; it never appends twice
    store.commit(2, 10)
    store.truncate(2)
    assert store.root["step"].shape == (2,)


def test_shape_change_is_refused(store):
    store.write(ckpt(0))
    with pytest.raises(StoreError, match="layer.weight"):
        store.write(ckpt(1, w=np.zeros((4, 2), np.float32)))


def test_resume_state_roundtrip_weights_only(store):
    state = {"model": {"w": torch.arange(3.0)}, "position": torch.tensor([1, 2, 3, 4])}
    store.save_resume(state)
    back = store.load_resume()
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert not list(store.path.parent.glob(".*tmp"))


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no run store"):
        RunStore(tmp_path / "nothing.zarr")


def test_create_refuses_to_overwrite(store):
    with pytest.raises(Exception):
        RunStore.create(store.path, seed=0, config_hash="abc", config={})
