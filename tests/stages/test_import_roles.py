"""`vt import` of models vt did not build: the paper's own classes (an independent transcription,
tests/reference/paper_models.py) trained and saved the paper's way, and Hugging Face GPT-NeoX /
GPT-2 built from a config, imported as plain state_dicts and with a factory, with no --weights:
every paper metric equals the paper's code (float64) at 1e-10, and the roles say how they were decided."""

import re

import numpy as np
import pytest
import torch
import xarray as xr

from tests.reference import paper_code_metrics as ref
from tests.reference.paper_models import build_paper_model, paper_metrics, save_paper_series
from vt_core.external.checkpoint_files import CheckpointFilesError
from vt_core.metrics.roles import tensor_roles
from vt_core.names import PAPER_METRICS
from vt_core.stages.import_checkpoints import import_seed, inspect_import, plan_import
from vt_core.stages.metrics import compute_metrics, finalize_metrics, plan_metrics
from vt_core.storage.study import load_study

RUN = {"mlp": "lr0.1_sgd_seed{seed}_scaling1.0", "transformer": "lr0.001_adamw_seed{seed}_scaling1.0"}
FACTORY = {"mlp": "tests.reference.paper_models:build_paper_mlp",
           "transformer": "tests.reference.paper_models:build_paper_transformer"}


def _import_and_compute(source, study, pattern, **options):
    plan = plan_import(source, study, pattern, **options)
    for s, cks in plan["seeds"].items():
        import_seed(study, int(s), cks, plan["probe"])
    seeds = sorted(int(s) for s in plan["seeds"])
    mplan = plan_metrics(study, seeds)
    finalize_metrics(study, mplan, [compute_metrics(study, s, mplan) for s in seeds])
    return xr.open_zarr(str(study / "metrics.zarr"), consolidated=False).load()


@pytest.fixture(scope="module", params=["mlp", "transformer"])
def paper_series(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    return request.param, out, save_paper_series(request.param, out, seeds=(0, 1), epochs=4)


def _expected(arch, files):
    model = build_paper_model(arch)
    model.load_state_dict(torch.load(files, weights_only=True))
    return paper_metrics(model, arch)


@pytest.mark.parametrize("how", ["plain", "factory"])
def test_the_papers_models_imported_as_saved_give_the_papers_metrics(paper_series, how, tmp_path):
    arch, source, saved = paper_series
    study = tmp_path / "s"
    ds = _import_and_compute(source, study, RUN[arch] + "/model_{step}.pt",
                             factory=FACTORY[arch] if how == "factory" else None)
    worst = 0.0
    for seed, files in saved.items():
        for step, f in enumerate(files):
            want = _expected(arch, f)
            for m in PAPER_METRICS:
                got = float(ds["value"].sel(seed=seed, step=step, metric=m))
                assert np.isclose(got, want[m], rtol=1e-10, atol=1e-12, equal_nan=True), (how, seed, step, m, got,
                                                                                         want[m])
                if np.isfinite(want[m]) and want[m] != 0:
                    worst = max(worst, abs(got - want[m]) / abs(want[m]))
    assert worst < 1e-10
    roles = load_study(study).model.roles
    certainty = {r.certainty for r in roles.values()}
    assert certainty == ({"guessed"} if how == "plain" else {"known"})
    if arch == "transformer":
        assert roles["blocks.0.attn.W_K"].role == "heads" and roles["blocks.0.attn.W_O"].role == "matrix"
        for name in ("embed.W_E", "pos_embed.W_pos", "unembed.W_U", "blocks.0.ln1.weight"):
            assert roles[name].role == "exclude", name
        if how == "plain":  # the float causal mask is in the file; its values say it is a mask
            assert roles["blocks.0.attn.mask"].role == "exclude" and "mask" in roles["blocks.0.attn.mask"].why
        else:  # a buffer of the factory's model: never stored
            assert "blocks.0.attn.mask" not in roles


def test_dry_run_writes_nothing_and_shows_every_tensor(paper_series, tmp_path):
    arch, source, _ = paper_series
    found = inspect_import(source, tmp_path / "s", RUN[arch] + "/model_{step}.pt",
                           factory=FACTORY[arch])
    assert not (tmp_path / "s").exists()
    rows = {r["name"]: r for r in found["roles"]}
    if arch == "transformer":
        assert rows["blocks.0.attn.mask"]["buffer"] and rows["blocks.0.attn.mask"]["role"] == "exclude"
        assert rows["blocks.0.attn.W_Q"]["matrices"] == 4
        # the paper's code reads 4 heads x 3 + W_O + W_in + W_out per block
        assert sum(r["matrices"] for r in rows.values() if not r["buffer"]) == 15


def test_roles_file_overrides_and_a_glob_that_matches_nothing_is_refused(paper_series, tmp_path):
    arch, source, _ = paper_series
    pattern = RUN[arch] + "/model_{step}.pt"
    name = "blocks.0.attn.W_O" if arch == "transformer" else "layers.0.weight"
    found = inspect_import(source, tmp_path / "s", pattern, roles={name: "exclude"})
    row = next(r for r in found["roles"] if r["name"] == name)
    assert row["role"] == "exclude" and row["certainty"] == "given"
    with pytest.raises(CheckpointFilesError, match="matches no stored tensor"):
        inspect_import(source, tmp_path / "s", pattern, roles={"blocks.*.atn.W_O": "matrix"})


def test_guessing_rules_on_names_a_user_writes():
    t = {"encoder.layers.0.self_attn.in_proj_weight": torch.randn(48, 16),
         "encoder.layers.0.norm1.weight": torch.ones(16), "encoder.layers.0.norm1.bias": torch.zeros(16),
         "bn.running_mean": torch.zeros(4), "seq.1.weight": torch.ones(8), "seq.1.bias": torch.zeros(8),
         "seq.0.weight": torch.randn(8, 4), "seq.0.bias": torch.randn(8),
         "conv1d.weight": torch.randn(8, 4, 3), "attn.W_Q": torch.randn(4, 8, 16),
         "causal": torch.tril(torch.ones(5, 5)), "tok_embeddings.weight": torch.randn(10, 4),
         "rotary.inv_freq": torch.randn(8), "cnn.weight": torch.randn(8, 3, 3, 3)}
    roles = {r["name"]: r["role"] for r in tensor_roles(t)}
    assert roles == {"encoder.layers.0.self_attn.in_proj_weight": "matrix", "encoder.layers.0.norm1.weight": "exclude",
                     "encoder.layers.0.norm1.bias": "exclude", "bn.running_mean": "exclude",
                     "seq.1.weight": "exclude", "seq.1.bias": "exclude", "seq.0.weight": "matrix",
                     "seq.0.bias": "bias", "conv1d.weight": "kernel", "attn.W_Q": "heads", "causal": "exclude",
                     "tok_embeddings.weight": "exclude", "rotary.inv_freq": "exclude", "cnn.weight": "kernel"}


# ------------------------------------------------------------------------------------------------
# Hugging Face models built from a config: the Linear (GPT-NeoX) / Conv1D (GPT-2) weights of the
# blocks are the matrices, their biases the biases; embeddings, the head and the norms are not read


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=16, bos_token_id=0,
                                      eos_token_id=0))


HF = {"neox": ("examples.neox:tiny_gpt_neox", r"gpt_neox\.layers\.\d+\.(attention|mlp)\.\w+\.(weight|bias)"),
      "gpt2": ("tests.stages.test_import_roles:_gpt2", r"transformer\.h\.\d+\.(attn|mlp)\.c_\w+\.(weight|bias)")}


def _hf_reference(state, pattern):
    names = sorted(n for n in state if re.fullmatch(pattern, n))
    mats = [state[n].double().numpy() for n in names if n.endswith("weight")]
    biases = [state[n].double().numpy().ravel() for n in names if n.endswith("bias")]
    per = [ref.matrix_metrics(m) for m in mats]
    out = {k: ref._mean([p[k] for p in per], nan_aware=(k == "var_singular_value")) for k in ref.MATRIX_KEYS}
    w, b = ref.distribution_stats(np.concatenate([m.ravel() for m in mats])), ref.distribution_stats(np.concatenate(biases))
    out.update(mean_w=w["mean"], median_w=w["median"], var_w=w["var"], mean_b=b["mean"], median_b=b["median"],
               var_b=b["var"])
    return out


@pytest.mark.parametrize("kind", ["neox", "gpt2"])
def test_hugging_face_saves_plain_and_with_factory(kind, tmp_path):
    pytest.importorskip("transformers")
    from vt_core.config.usercode import resolve_factory

    factory, pattern = HF[kind]
    states = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = resolve_factory(factory)()
        for step in (0, 5):
            model.save_pretrained(tmp_path / "hf" / f"seed{seed}" / f"checkpoint-{step}")
            states[(seed, step)] = {k: v.clone() for k, v in model.state_dict().items()}
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.02 * torch.randn_like(p))
    files = "seed{seed}/checkpoint-{step}/model*.safetensors"
    plain = _import_and_compute(tmp_path / "hf", tmp_path / "plain", files)
    rename = {"embed_out.": "lm_head."} if kind == "neox" else {}
    made = _import_and_compute(tmp_path / "hf", tmp_path / "made", files, factory=factory, rename=rename)
    for (seed, step), state in states.items():
        want = _hf_reference(state, pattern)
        for m in PAPER_METRICS:
            for ds in (plain, made):
                got = float(ds["value"].sel(seed=seed, step=step, metric=m))
                assert np.isclose(got, want[m], rtol=1e-10, atol=1e-12), (kind, seed, step, m, got, want[m])
