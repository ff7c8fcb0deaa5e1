import pytest
import torch

from tests.helpers import tiny_dict
from vt_core.config.study_config import ConfigError, parse_config
from vt_core.data import build_task
from vt_core.models import build_model
from vt_core.models.hooks import describe_hookpoints, select_hookpoints
from vt_core.models.registry import ModelFactoryError

IMG = {"name": "synthetic_images", "size": 16, "n_train": 64, "n_test": 32}


def build(model, data=None, **over):
    cfg = parse_config(tiny_dict("/tmp/unused", model=model, data=data or IMG,
                                 training={"epochs": 1, "loss": "cross_entropy"}, **over))
    task = build_task(cfg.data, 0)
    return cfg, task, build_model(cfg.model, task, task.n_classes)


def test_resnet18_shape_and_switches():
    _, task, m = build({"name": "resnet"})
    assert m(task.x_train[:2]).shape == (2, 10)
    convs = [n for n, p in m.named_parameters() if p.ndim == 4]
    assert len(convs) == 1 + 16 + 3  # stem, 8 blocks x 2, 3 projection shortcuts: ResNet-18
    _, _, plain = build({"name": "resnet", "batch_norm": False, "residual": False})
    names = [n for n, _ in plain.named_modules()]
    assert not any("shortcut.0" in n for n in names)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in plain.modules())


def test_resnet_width_and_depth():
    _, task, m = build({"name": "resnet", "width": 8, "blocks": [1, 1, 1]})
    assert m.fc.in_features == 32 and m(task.x_train[:2]).shape == (2, 10)
    assert "layer3.0.conv2" in dict(m.named_modules()) and "layer4" not in dict(m.named_modules())


def test_lenet5_on_28x28_and_refuses_tiny_images():
    _, task, m = build({"name": "lenet5"}, {**IMG, "size": 28, "channels": 1})
    assert m(task.x_train[:2]).shape == (2, 10)
    assert m.fc1.in_features == 400  # 16 x 5 x 5, as in the paper
    with pytest.raises(ValueError, match="at least 10x10"):
        build({"name": "lenet5"}, {"name": "digits"})


def test_mlp_flattens_images_and_norms():
    _, task, m = build({"name": "mlp", "hidden": [32, 16], "norm": "layer", "activation": "gelu"}, {"name": "digits"})
    assert m(task.x_train[:3]).shape == (3, 10)
    assert isinstance(m.layers[1], torch.nn.LayerNorm)


def test_transformer_layers_and_layer_norm():
    data = {"name": "modular_addition", "p": 7, "train_fraction": 0.5}
    _, task, m = build({"name": "transformer", "n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8,
                        "d_mlp": 32, "layer_norm": True}, data)
    assert m(task.x_train[:5]).shape == (5, 7)
    names = [n for n, _ in m.named_modules()]
    for hp in ("blocks.1.attn.hook_pattern", "blocks.0.mlp.hook_pre", "blocks.1.hook_resid_post", "blocks.0.ln1"):
        assert hp in names


def test_hookpoint_globs_and_suggestions():
    _, task, m = build({"name": "transformer", "n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32},
                       {"name": "modular_addition", "p": 7, "train_fraction": 0.5})
    assert select_hookpoints(m, ["blocks.*.mlp"]) == ["blocks.0.mlp", "blocks.1.mlp"]
    assert select_hookpoints(m, ["blocks.1.attn.hook_pattern"]) == ["blocks.1.attn.hook_pattern"]
    with pytest.raises(ValueError, match="closest existing names") as err:
        select_hookpoints(m, ["blocks.0.attn.hook_patern"])
    assert "blocks.0.attn.hook_pattern" in str(err.value)


def test_describe_hookpoints_shapes():
    _, task, m = build({"name": "transformer", "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32},
                       {"name": "modular_addition", "p": 7, "train_fraction": 0.5})
    rows = {r["name"]: r for r in describe_hookpoints(m, task.x_test[:4])}
    assert rows["blocks.0.attn.hook_pattern"]["output"] == (4, 2, 3, 3)
    assert rows["blocks.0.mlp.hook_pre"]["output"] == (4, 3, 32)
    assert not any(mod._forward_hooks for mod in m.modules())  # hooks removed


def test_hooks_removed_when_forward_raises():
    from vt_core.models.hooks import capture

    _, task, m = build({"name": "mlp", "hidden": [8]}, {"name": "digits"})
    with pytest.raises(RuntimeError):
        with capture(m, ["layers.0"]):
            m(torch.zeros(2, 3))  # wrong shape
    assert not any(mod._forward_hooks for mod in m.modules())


def test_custom_factory_and_its_errors(tmp_path):
    _, task, m = build({"factory": "examples.custom_model.nets:make_net", "kwargs": {"width": 12}}, {"name": "digits"})
    assert m(task.x_train[:2]).shape == (2, 10) and m.value.out_features == 12
    with pytest.raises(ModelFactoryError, match="cannot import 'nowhere.nets'"):
        build({"factory": "nowhere.nets:make"})
    with pytest.raises(ModelFactoryError, match="has no callable 'nope'"):
        build({"factory": "examples.custom_model.nets:nope"})
    with pytest.raises(ModelFactoryError, match="rejected kwargs"):
        build({"factory": "examples.custom_model.nets:make_net", "kwargs": {"depth": 3}}, {"name": "digits"})


def test_image_models_need_images():
    with pytest.raises(ConfigError, match="needs images"):
        build({"name": "resnet"}, {"name": "sparse_parity", "n_bits": 8, "k": 2, "n_train": 64, "n_test": 16})
