"""Dimension names, long names and units of stored arrays; netCDF-safe attributes."""

import json

from vt_core.storage.schema import dimension_names, netcdf_attrs, scalar_attrs


def test_transformer_dimensions_are_named_for_what_they_are():
    from vt_core.models.hooks import array_kinds
    from vt_core.models.transformer import Transformer
    from vt_core.storage.schema import dimension_names

    model = Transformer(d_vocab=7, d_vocab_out=7, n_ctx=3, d_model=8, n_heads=2, d_head=4, d_mlp=16)
    kinds = array_kinds(model, ["blocks.0.attn.W_Q", "blocks.0.mlp.W_in", "embed.W_E"],
                        ["blocks.0.attn.hook_pattern", "blocks.0.hook_resid_post"])
    assert dimension_names("weights", "blocks.0.attn.W_Q", 3, kinds["weights/blocks.0.attn.W_Q"]) == (
        "blocks.0.attn.W_Q.heads", "blocks.0.attn.W_Q.d_model", "blocks.0.attn.W_Q.d_head")
    assert dimension_names("weights", "blocks.0.mlp.W_in", 2, kinds["weights/blocks.0.mlp.W_in"])[1] == "blocks.0.mlp.W_in.d_mlp"
    assert dimension_names("activations", "blocks.0.attn.hook_pattern", 3,
                           kinds["activations/blocks.0.attn.hook_pattern"])[0] == "blocks.0.attn.hook_pattern.heads"
    assert dimension_names("weights", "conv1.weight", 4, "conv") == tuple(
        f"conv1.weight.{d}" for d in ("out_channels", "in_channels", "kernel_rows", "kernel_cols"))


def test_fallbacks_and_scalars():
    assert dimension_names("weights", "layers.0.weight", 2, "linear") == (
        "layers.0.weight.out_features", "layers.0.weight.in_features")
    assert dimension_names("weights", "odd.p", 3, "other") == ("odd.p.d0", "odd.p.d1", "odd.p.d2")
    assert dimension_names("activations", "conv1", 3, "conv") == ("conv1.channels", "conv1.rows", "conv1.cols")
    assert scalar_attrs("train_loss", "cross_entropy")["units"] == "nats" and "units" not in scalar_attrs("train_loss", "hinge")
    assert scalar_attrs("test_accuracy")["units"] == "fraction"


def test_netcdf_attrs():
    got = netcdf_attrs({"a": None, "b": True, "c": 2**40, "d": {"x": [1]}, "e": "s", "f": 1.5})
    assert got == {"b": 1, "c": str(2**40), "d": json.dumps({"x": [1]}), "e": "s", "f": 1.5}
