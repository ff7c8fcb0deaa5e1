"""vt's weight metrics under ``metrics.convention = "paper_code"`` equal an independent numpy
transcription of the paper's code (tests/reference/paper_code_metrics.py, written without looking
at vt's kernels) on each of the paper's architectures, at 1e-10 relative.

Each case builds the model from a study config, writes checkpoints of its weights (the
initialisation and two perturbed copies, as training would move them) into a real run store with
the roles recorded at creation, and compares vt's lazy metrics with the reference's on the same
float32 weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import tiny_dict
from tests.reference.paper_code_metrics import paper_metrics
from vt_core.config.study_config import parse_config
from vt_core.data import build_task
from vt_core.metrics.compute import seed_metrics
from vt_core.metrics.roles import parameter_roles
from vt_core.models import build_model
from vt_core.names import PAPER_METRICS, SCALARS
from vt_core.storage.run_store import Checkpoint, RunStore

CASES = {
    "transformer (paper: p=113, d=128, 4 heads, MLP 512)": ("transformer", {
        "model": {"name": "transformer", "n_layers": 1, "d_model": 128, "n_heads": 4, "d_head": 32, "d_mlp": 512},
        "data": {"name": "modular_addition", "p": 113}, "training": {"epochs": 1, "loss": "cross_entropy"}}),
    "transformer, 2 layers + LayerNorm": ("transformer", {
        "model": {"name": "transformer", "n_layers": 2, "d_model": 32, "n_heads": 4, "d_head": 8, "d_mlp": 64,
                  "layer_norm": True},
        "data": {"name": "modular_addition", "p": 23}, "training": {"epochs": 1, "loss": "cross_entropy"}}),
    "mlp (sparse parity, 1 output)": ("mlp", {"model": {"name": "mlp", "hidden": [64]}}),
    "mlp + batch norm": ("mlp", {"model": {"name": "mlp", "hidden": [32, 16], "norm": "batch"},
                                 "training": {"epochs": 1, "loss": "cross_entropy"}}),
    "mlp + layer norm": ("mlp", {"model": {"name": "mlp", "hidden": [32], "norm": "layer"}}),
    "resnet-18 (paper: width 64, batch norm)": ("resnet", {
        "model": {"name": "resnet"}, "training": {"epochs": 1, "loss": "cross_entropy"},
        "data": {"name": "synthetic_images", "n_classes": 100, "size": 8, "n_train": 16, "n_test": 8}}),
    "lenet5": ("lenet5", {"model": {"name": "lenet5"}, "training": {"epochs": 1, "loss": "cross_entropy"},
                          "data": {"name": "synthetic_images", "channels": 1, "size": 28, "n_train": 16, "n_test": 8}}),
}


def _store(tmp_path, overrides: dict) -> tuple[RunStore, list[dict[str, np.ndarray]]]:
    cfg = parse_config(tiny_dict(tmp_path, **overrides))
    task = build_task(cfg.data, 0)
    torch.manual_seed(0)
    model = build_model(cfg.model, task, 1 if cfg.training.loss == "hinge" else task.n_classes)
    store = RunStore.create(tmp_path / "seed=0000.zarr", seed=0, config_hash="h", config={},
                            roles=parameter_roles(model))
    rng = np.random.default_rng(1)
    init = {k: v.detach().numpy().astype(np.float32) for k, v in model.named_parameters()}
    states = []
    for i, scale in enumerate((0.0, 0.05, 0.3)):
        # as training moves them: every entry perturbed, biases away from 0 (their init)
        state = {k: (v + scale * rng.standard_normal(v.shape)).astype(np.float32) for k, v in init.items()}
        states.append(state)
        store.write(Checkpoint(index=i, step=10 * i, epoch=float(i), scalars={s: 0.5 for s in SCALARS},
                               weights=state))
        store.commit(i + 1, 10 * i)
    return store, states


@pytest.mark.parametrize("case", list(CASES))
def test_paper_metrics_equal_the_paper_code(tmp_path, case):
    family, overrides = CASES[case]
    store, states = _store(tmp_path, overrides)
    cfg = parse_config(tiny_dict(tmp_path, **overrides, metrics={"convention": "paper_code"}))
    got = seed_metrics(store, cfg, names=list(PAPER_METRICS)).compute()["value"]
    for i, state in enumerate(states):
        ref = paper_metrics(state, family)
        for name in PAPER_METRICS:
            g, r = float(got.isel(step=i).sel(metric=name)), ref[name]
            if np.isnan(r):
                assert np.isnan(g), f"{case}, checkpoint {i}: {name} = {g}, the paper's code gives NaN"
            else:
                assert g == pytest.approx(r, rel=1e-10, abs=1e-300), f"{case}, checkpoint {i}: {name}"


def test_w_o_is_one_matrix_and_norms_are_not_weights(tmp_path):
    """The two causes found: the transformer's W_O is one (heads * d_head, d_model) matrix (15
    matrices in the paper's 1-layer model, not 18), and a LayerNorm's parameters are never weights
    or biases."""
    store, _ = _store(tmp_path, CASES["transformer (paper: p=113, d=128, 4 heads, MLP 512)"][1])
    cfg = parse_config(tiny_dict(tmp_path, **CASES["transformer (paper: p=113, d=128, 4 heads, MLP 512)"][1]))
    layers = list(seed_metrics(store, cfg, names=["l2"])["per_layer"]["layer"].values)
    assert len(layers) == 15 and "blocks.0.attn.W_O" in layers and "blocks.0.attn.W_Q.3" in layers
    ln = _store(tmp_path / "ln", CASES["mlp + layer norm"][1])[0]
    ln_cfg = parse_config(tiny_dict(tmp_path / "ln", **CASES["mlp + layer norm"][1]))
    roles = ln.attrs["parameter_roles"]
    assert roles["layers.1.weight"] == roles["layers.1.bias"] == "exclude"
    assert set(seed_metrics(ln, ln_cfg, names=["l2"])["per_layer"]["layer"].values) == {"layers.0.weight",
                                                                                       "layers.3.weight"}


@pytest.mark.parametrize("device", [None, "cpu"], ids=["numpy", "torch-batched"])
@pytest.mark.parametrize("case", list(CASES))
def test_streamed_metrics_equal_the_paper_code(tmp_path, case, device):
    """The checkpoint-at-a-time path of large models (vt_core.metrics.stream), on every architecture,
    with its singular values in numpy or batched through torch (as on a GPU), against the same
    reference at the same tolerance."""
    from vt_core.metrics.stream import weight_metrics

    family, overrides = CASES[case]
    store, states = _store(tmp_path, overrides)
    cfg = parse_config(tiny_dict(tmp_path, **overrides, metrics={"convention": "paper_code"}))
    got = weight_metrics(store, cfg, list(PAPER_METRICS), np.arange(len(states)), device=device)["value"]
    for i, state in enumerate(states):
        ref = paper_metrics(state, family)
        for name in PAPER_METRICS:
            g, r = float(got.isel(step=i).sel(metric=name)), ref[name]
            if np.isnan(r):
                assert np.isnan(g), f"{case}, checkpoint {i}: {name} = {g}, the paper's code gives NaN"
            else:
                assert g == pytest.approx(r, rel=1e-10, abs=1e-300), f"{case}, checkpoint {i}: {name}"
