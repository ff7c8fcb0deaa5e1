"""Torch transcription of the paper's models, weight metrics and (tiny) training runs.

Independent reference for tests: written from the paper's public code only, never from vt's code.
Source: github.com/michahu/modeling-training (Hu et al., "Latent State Models of Training Dynamics").
Files transcribed (newest stored commit d46bd18 for src/model.py, src/metrics.py and
scripts/00_training/modular_addition.py; c2b7e4a for src/utils.py, src/data.py and
scripts/00_training/sparse_parities.py):

* ``src/model.py``: ``custom_weight_init``, ``LeNet5``, ``MLP``, ``HookPoint``, ``Embed``, ``Unembed``,
  ``PosEmbed``, ``Attention``, ``FF``, ``TransformerBlock``, ``Transformer``. Module, parameter and buffer
  names, shapes, init and forward maths are the paper's, so ``state_dict()`` keys are the paper's
  (e.g. ``blocks.0.attn.mask`` is a buffer, ``blocks.0.ln1.weight`` a LayerNorm parameter, even when
  ``use_ln=False``). The only change: ``einops.rearrange(z, "b i q h -> b q (i h)")`` is written as a
  permute + reshape (einops is not installed in vt's venv). ``MyResNet`` / ``ToyModel`` are not transcribed.
* ``src/metrics.py``: ``get_matrix_metrics``, ``get_distribution_stats``, ``get_metrics_transformer``
  (with ``unpack_weights_transformer``, ``unpack_biases_transformer``, ``get_layer_metrics_transformer``)
  and ``get_metrics_mlp``, computed in float64 (every tensor ``.double()`` first).
* ``src/utils.py``: the per-file body of ``get_stats_for_run`` (average over matrices; ``np.mean``
  except ``np.nanmean`` for the singular-value variance).
* ``src/data.py``: ``SparseParity``, ``ModularArithmetic`` (with a small modulus).
* ``scripts/00_training/sparse_parities.py`` and ``modular_addition.py``: model construction, init
  scaling, optimiser, loss, per-epoch loss/accuracy bookkeeping, output directory naming.

Choices where the paper's code gives no answer (see also the functions' docstrings):

* ``get_matrix_metrics`` returns None for a matrix with NaN/inf. ``get_stats_for_run`` skips such a
  None for W_O / W_in / W_out / MLP Linear weights but would crash (TypeError) on a None per-head
  W_K/W_Q/W_V entry; here every None is skipped, and a metric with no matrix left is NaN.
* ``l1 / l2`` and ``trace / spectral`` are Python float divisions in the paper (ZeroDivisionError on
  an all-zero matrix); here a zero denominator gives NaN.
* ``torch.var`` of one value (the 1 x hidden output layer of the sparse-parity MLP has one singular
  value) is NaN, as in the paper; it is produced without torch's warning, and ``np.nanmean`` then
  ignores it as ``get_stats_for_run`` does.
* ``torch.svd(X, compute_uv=False).S`` is computed with ``torch.linalg.svdvals`` (same values).
* The paper's scripts save per-epoch stats JSONs and only a final ``model.pt``; the per-epoch
  checkpoint line is commented out in both scripts
  (``accelerator.save(model.state_dict(), os.path.join(run_output_dir, f"model_{epoch}.pt"))``).
  ``save_paper_series`` uses that commented-out naming, ``model_{epoch}.pt``, for every epoch.
"""

from __future__ import annotations

import json
import pathlib
import random
import warnings
from itertools import chain
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FF",
    "LeNet5",
    "MLP",
    "Attention",
    "Embed",
    "HookPoint",
    "PosEmbed",
    "Transformer",
    "TransformerBlock",
    "Unembed",
    "HingeLoss",
    "SparseParity",
    "ModularArithmetic",
    "custom_weight_init",
    "MLP_MODEL_DEFAULTS",
    "MLP_TRAIN_DEFAULTS",
    "TRANSFORMER_MODEL_DEFAULTS",
    "TRANSFORMER_TRAIN_DEFAULTS",
    "METRIC_NAMES",
    "build_paper_model",
    "build_paper_mlp",
    "build_paper_transformer",
    "paper_raw_metrics_transformer",
    "paper_raw_metrics_mlp",
    "stats_from_raw_metrics",
    "paper_transformer_metrics",
    "paper_mlp_metrics",
    "paper_metrics",
    "run_dir_name",
    "save_paper_series",
]

# ---------------------------------------------------------------------------------------------------------------------
# Models (src/model.py)
# ---------------------------------------------------------------------------------------------------------------------


def custom_weight_init(m, init_scaling):
    """src/model.py ``custom_weight_init``: scale ``weight`` (and ``bias`` if not None) in place."""
    if hasattr(m, "weight"):
        m.weight.data *= init_scaling

        if m.bias is not None:
            m.bias.data *= init_scaling


class LeNet5(nn.Module):
    """src/model.py ``LeNet5`` (conv -> BatchNorm2d -> ReLU -> MaxPool twice, then fc1/fc2/fc3)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.layer1 = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, stride=1, padding=0),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.layer2 = nn.Sequential(
            nn.Conv2d(6, 16, kernel_size=5, stride=1, padding=0),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.fc1 = nn.Linear(400, 120)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu1 = nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        out = self.layer1(x)
        out = self.layer2(out)
        out = out.reshape(out.size(0), -1)
        out = self.fc1(out)
        out = self.relu(out)
        out = self.fc2(out)
        out = self.relu1(out)
        out = self.fc3(out)
        return out


class MLP(nn.Module):
    """src/model.py ``MLP``: ``self.layers`` = Sequential of Linear [BatchNorm1d | LayerNorm] ReLU ... Linear."""

    def __init__(
        self,
        input_dim,
        hidden_dims,
        output_dim,
        init_scaling: float = 2.0,
        kaiming_uniform: bool = True,
        use_batch_norm: bool = False,
        use_layer_norm: bool = False,
    ):
        super().__init__()
        self.init_scaling = init_scaling
        self.use_batch_norm = use_batch_norm
        self.use_layer_norm = use_layer_norm

        if self.use_batch_norm and self.use_layer_norm:
            raise ValueError("Only one of use_batch_norm and use_layer_norm can be True")

        layers = []
        layers.append(nn.Linear(input_dim, hidden_dims[0]))
        if self.use_batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dims[0]))
        if self.use_layer_norm:
            layers.append(nn.LayerNorm(hidden_dims[0]))
        layers.append(nn.ReLU())

        for i in range(len(hidden_dims) - 1):
            layers.append(nn.Linear(hidden_dims[i], hidden_dims[i + 1]))
            if self.use_batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dims[i + 1]))
            if self.use_layer_norm:
                layers.append(nn.LayerNorm(hidden_dims[i + 1]))
            layers.append(nn.ReLU())

        layers.append(nn.Linear(hidden_dims[-1], output_dim))
        self.layers = nn.Sequential(*layers)

        if kaiming_uniform:
            self.layers.apply(self._init_weights_kaiming)
        else:
            for layer in self.layers:
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)

    @torch.no_grad()
    def _init_weights_kaiming(self, module):
        if isinstance(module, nn.Linear):
            nn.init.kaiming_uniform_(module.weight)
            module.weight *= self.init_scaling

    def forward(self, x):
        x = self.layers(x)
        return x


class HookPoint(nn.Module):
    """src/model.py ``HookPoint``: identity module to which forward/backward hooks can be attached."""

    def __init__(self):
        super().__init__()
        self.fwd_hooks = []
        self.bwd_hooks = []

    def give_name(self, name):
        # Called by the model at initialisation
        self.name = name

    def add_hook(self, hook, dir="fwd"):
        # Hook format is fn(activation, hook_name)
        def full_hook(module, module_input, module_output):
            return hook(module_output, name=self.name)

        if dir == "fwd":
            handle = self.register_forward_hook(full_hook)
            self.fwd_hooks.append(handle)
        elif dir == "bwd":
            handle = self.register_backward_hook(full_hook)
            self.bwd_hooks.append(handle)
        else:
            raise ValueError(f"Invalid direction {dir}")

    def remove_hooks(self, dir="fwd"):
        if (dir == "fwd") or (dir == "both"):
            for hook in self.fwd_hooks:
                hook.remove()
            self.fwd_hooks = []
        if (dir == "bwd") or (dir == "both"):
            for hook in self.bwd_hooks:
                hook.remove()
            self.bwd_hooks = []
        if dir not in ["fwd", "bwd", "both"]:
            raise ValueError(f"Invalid direction {dir}")

    def forward(self, x):
        return x


class Embed(nn.Module):
    """src/model.py ``Embed``: ``W_E`` of shape (d_model, d_vocab)."""

    def __init__(self, d_vocab, d_model):
        super().__init__()
        self.W_E = nn.Parameter(torch.randn(d_model, d_vocab) / np.sqrt(d_model))

    def forward(self, x):
        return torch.einsum("dbp -> bpd", self.W_E[:, x])


class Unembed(nn.Module):
    """src/model.py ``Unembed``: ``W_U`` of shape (d_model, d_vocab), scaled by 1/sqrt(d_vocab)."""

    def __init__(self, d_vocab, d_model):
        super().__init__()
        self.W_U = nn.Parameter(torch.randn(d_model, d_vocab) / np.sqrt(d_vocab))

    def forward(self, x):
        return x @ self.W_U


class PosEmbed(nn.Module):
    """src/model.py ``PosEmbed``: ``W_pos`` of shape (max_ctx, d_model)."""

    def __init__(self, max_ctx, d_model):
        super().__init__()
        self.W_pos = nn.Parameter(torch.randn(max_ctx, d_model) / np.sqrt(d_model))

    def forward(self, x):
        return x + self.W_pos[: x.shape[-2]]


class Attention(nn.Module):
    """src/model.py ``Attention``.

    ``W_K/W_Q/W_V``: (num_heads, d_head, d_model); ``W_O``: (d_model, d_head * num_heads) with columns
    ordered (head, d_head); ``mask``: registered buffer ``tril(ones(n_ctx, n_ctx))``.
    """

    def __init__(self, d_model, num_heads, d_head, n_ctx, model):
        super().__init__()
        self.model = model
        self.W_K = nn.Parameter(torch.randn(num_heads, d_head, d_model) / np.sqrt(d_model))
        self.W_Q = nn.Parameter(torch.randn(num_heads, d_head, d_model) / np.sqrt(d_model))
        self.W_V = nn.Parameter(torch.randn(num_heads, d_head, d_model) / np.sqrt(d_model))
        self.W_O = nn.Parameter(torch.randn(d_model, d_head * num_heads) / np.sqrt(d_model))
        self.register_buffer("mask", torch.tril(torch.ones((n_ctx, n_ctx))))
        self.d_head = d_head
        self.hook_k = HookPoint()
        self.hook_q = HookPoint()
        self.hook_v = HookPoint()
        self.hook_z = HookPoint()
        self.hook_attn = HookPoint()
        self.hook_attn_pre = HookPoint()

    def forward(self, x):
        k = self.hook_k(torch.einsum("ihd,bpd->biph", self.W_K, x))
        q = self.hook_q(torch.einsum("ihd,bpd->biph", self.W_Q, x))
        v = self.hook_v(torch.einsum("ihd,bpd->biph", self.W_V, x))
        attn_scores_pre = torch.einsum("biph,biqh->biqp", k, q)
        attn_scores_masked = torch.tril(attn_scores_pre) - 1e10 * (1 - self.mask[: x.shape[-2], : x.shape[-2]])
        attn_matrix = self.hook_attn(
            F.softmax(self.hook_attn_pre(attn_scores_masked / np.sqrt(self.d_head)), dim=-1)
        )
        z = self.hook_z(torch.einsum("biph,biqp->biqh", v, attn_matrix))
        # einops.rearrange(z, "b i q h -> b q (i h)")
        b, i, q_len, h = z.shape
        z_flat = z.permute(0, 2, 1, 3).reshape(b, q_len, i * h)
        out = torch.einsum("df,bqf->bqd", self.W_O, z_flat)
        return out


class FF(nn.Module):
    """src/model.py ``FF``: ``W_in`` (d_mlp, d_model), ``b_in`` (d_mlp), ``W_out`` (d_model, d_mlp), ``b_out``."""

    def __init__(self, d_model, d_mlp, act_type, model):
        super().__init__()
        self.model = model
        self.W_in = nn.Parameter(torch.randn(d_mlp, d_model) / np.sqrt(d_model))
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.randn(d_model, d_mlp) / np.sqrt(d_model))
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.act_type = act_type
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()
        assert act_type in ["ReLU", "GeLU"]

    def forward(self, x):
        x = self.hook_pre(torch.einsum("md,bpd->bpm", self.W_in, x) + self.b_in)
        if self.act_type == "ReLU":
            x = F.relu(x)
        elif self.act_type == "GeLU":
            x = F.gelu(x)
        x = self.hook_post(x)
        x = torch.einsum("dm,bpm->bpd", self.W_out, x) + self.b_out
        return x


class TransformerBlock(nn.Module):
    """src/model.py ``TransformerBlock``: ln1, attn, ln2, mlp; LayerNorms (post-residual) only used if use_ln."""

    def __init__(self, d_model, d_mlp, d_head, num_heads, n_ctx, act_type, model, use_ln=False):
        super().__init__()
        self.model = model
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, num_heads, d_head, n_ctx, model=self.model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = FF(d_model, d_mlp, act_type, model=self.model)
        self.hook_attn_out = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_pre = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_resid_post = HookPoint()
        self.use_ln = use_ln

    def forward(self, x):
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.hook_resid_pre(x))))
        if self.use_ln:
            x = self.ln1(x)
        x = self.hook_resid_post(x + self.hook_mlp_out(self.mlp(x)))
        if self.use_ln:
            x = self.ln2(x)
        return x


class Transformer(nn.Module):
    """src/model.py ``Transformer``: embed, pos_embed, blocks (d_mlp = 4 * d_model), unembed."""

    def __init__(self, d_model, d_head, d_vocab, num_heads, num_layers, n_ctx, act_type="ReLU", use_ln=False):
        super().__init__()
        self.embed = Embed(d_vocab=d_vocab, d_model=d_model)
        self.pos_embed = PosEmbed(max_ctx=n_ctx, d_model=d_model)
        self.blocks = nn.ModuleList(
            [
                TransformerBlock(
                    d_model=d_model,
                    d_mlp=d_model * 4,
                    d_head=d_head,
                    num_heads=num_heads,
                    n_ctx=n_ctx,
                    act_type=act_type,
                    model=[self],  # a plain list, so not registered as a submodule (as in the paper)
                    use_ln=use_ln,
                )
                for i in range(num_layers)
            ]
        )
        self.unembed = Unembed(d_vocab=d_vocab, d_model=d_model)

        for name, module in self.named_modules():
            if type(module) is HookPoint:
                module.give_name(name)

    def forward(self, x):
        x = self.embed(x)
        x = self.pos_embed(x)
        for block in self.blocks:
            x = block(x)
        x = self.unembed(x)
        return x

    def hook_points(self):
        return [module for name, module in self.named_modules() if "hook" in name]

    def remove_all_hooks(self):
        for hp in self.hook_points():
            hp.remove_hooks("fwd")
            hp.remove_hooks("bwd")

    def cache_all(self, cache, incl_bwd=False):
        # Caches all activations wrapped in a HookPoint
        def save_hook(tensor, name):
            cache[name] = tensor.detach()

        def save_hook_back(tensor, name):
            cache[name + "_grad"] = tensor[0].detach()

        for hp in self.hook_points():
            hp.add_hook(save_hook, "fwd")
            if incl_bwd:
                hp.add_hook(save_hook_back, "bwd")


# ---------------------------------------------------------------------------------------------------------------------
# Data and loss (src/data.py, scripts/00_training/sparse_parities.py)
# ---------------------------------------------------------------------------------------------------------------------


class SparseParity(torch.utils.data.Dataset):
    """src/data.py ``SparseParity``: x in {-1, +1}^total_bits (float), y = product of the first parity_bits bits."""

    def __init__(self, num_samples, total_bits, parity_bits):
        self.x = torch.randint(0, 2, (num_samples, total_bits)) * 2 - 1.0
        self.y = torch.prod(self.x[:, :parity_bits], dim=1)

    def __getitem__(self, index):
        return self.x[index], self.y[index]

    def __len__(self):
        return self.x.shape[0]


class ModularArithmetic(torch.utils.data.Dataset):
    """src/data.py ``ModularArithmetic``: x = [i, j, p] (p is the "=" token), y = (i op j) % p."""

    @property
    def fns_dict(self):
        return {
            "add": lambda x, y, z: (x + y) % z,
            "sub": lambda x, y, z: (x - y) % z,
            "mul": lambda x, y, z: (x * y) % z,
            "div": lambda x, y, z: (x / y) % z,
        }

    def __init__(self, operation, num_to_generate: int = 113):
        result_fn = self.fns_dict[operation]
        self.x = [[i, j, num_to_generate] for i in range(num_to_generate) for j in range(num_to_generate)]
        self.y = [result_fn(i, j, k) for (i, j, k) in self.x]

    def __getitem__(self, index):
        return torch.tensor(self.x[index]), self.y[index]

    def __len__(self):
        return len(self.x)


class HingeLoss(torch.nn.Module):
    """scripts/00_training/sparse_parities.py ``HingeLoss``: per-sample max(0, 1 - output * target)."""

    def forward(self, output, target):
        hinge_loss = 1 - torch.mul(torch.squeeze(output), torch.squeeze(target))
        hinge_loss[hinge_loss < 0] = 0
        return hinge_loss


# ---------------------------------------------------------------------------------------------------------------------
# Model factories (sizes: small versions of the scripts' models)
# ---------------------------------------------------------------------------------------------------------------------

# sparse_parities.py builds MLP(input_dim=40, hidden_dims=[hidden_dim], output_dim=1, kaiming_uniform=False,
# use_batch_norm=..., use_layer_norm=use_ln) then model.apply(custom_weight_init(init_scaling)). Tiny version:
MLP_MODEL_DEFAULTS: dict[str, Any] = {
    "n_bits": 10,  # the script's total_bits / input_dim (40 there)
    "hidden_dim": 32,  # 1000 in the script
    "use_batch_norm": False,
    "use_ln": False,
    "init_scaling": 1.0,
}
MLP_TRAIN_DEFAULTS: dict[str, Any] = {
    "parity_bits": 3,
    "train_size": 192,  # 1000 in the script
    "test_size": 64,  # 100 in the script
    "train_bsz": 64,  # 32 in the script; 3 optimisation steps per epoch here
    "test_bsz": 64,
    "lr": 0.1,
    "weight_decay": 0.01,
    "optim_name": "sgd",
    "clip_grad": False,
}
# modular_addition.py builds Transformer(d_model=128, d_head=32, d_vocab=114, num_heads=4, num_layers=1, n_ctx=3,
# use_ln=use_ln) on ModularArithmetic("add") with p = 113 (d_vocab = p + 1), then p.data *= init_scaling. Tiny version:
TRANSFORMER_MODEL_DEFAULTS: dict[str, Any] = {
    "p": 11,  # modulus; d_vocab = p + 1
    "d_model": 16,
    "d_head": 4,
    "num_heads": 4,
    "num_layers": 1,
    "n_ctx": 3,
    "act_type": "ReLU",
    "use_ln": False,
    "init_scaling": 1.0,
}
TRANSFORMER_TRAIN_DEFAULTS: dict[str, Any] = {
    "data_split": 0.3,  # fraction of the p*p pairs used for training (36 of 121 here)
    "train_bsz": 12,  # 256 in the script; 3 optimisation steps per epoch here
    "test_bsz": 2048,
    "lr": 1e-3,
    "weight_decay": 1.0,
    "optim_name": "adamw",
    "clip_grad": False,
}

_MODEL_DEFAULTS = {"mlp": MLP_MODEL_DEFAULTS, "transformer": TRANSFORMER_MODEL_DEFAULTS}
_TRAIN_DEFAULTS = {"mlp": MLP_TRAIN_DEFAULTS, "transformer": TRANSFORMER_TRAIN_DEFAULTS}


def _split_sizes(arch: str, sizes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    if arch not in _MODEL_DEFAULTS:
        raise ValueError(f"arch must be 'mlp' or 'transformer', got {arch!r}")
    model_kw = dict(_MODEL_DEFAULTS[arch])
    train_kw = dict(_TRAIN_DEFAULTS[arch])
    for key, val in sizes.items():
        if key in model_kw:
            model_kw[key] = val
        elif key in train_kw:
            train_kw[key] = val
        else:
            raise TypeError(f"unknown size {key!r} for arch {arch!r}")
    return model_kw, train_kw


def build_paper_model(arch: str = "mlp", **sizes) -> nn.Module:
    """A freshly initialised paper model, built as the paper's training script builds it.

    ``arch="mlp"`` (scripts/00_training/sparse_parities.py): ``MLP(input_dim=n_bits, hidden_dims=[hidden_dim],
    output_dim=1, kaiming_uniform=False, use_batch_norm=use_batch_norm, use_layer_norm=use_ln)``, then
    ``model.apply(lambda m: custom_weight_init(m, init_scaling=init_scaling))``.

    ``arch="transformer"`` (scripts/00_training/modular_addition.py): ``Transformer(d_model, d_head, d_vocab=p + 1,
    num_heads, num_layers, n_ctx, act_type, use_ln)``, then ``p.data *= init_scaling`` for every parameter.

    Keyword-only friendly: every argument has a default (``MLP_MODEL_DEFAULTS`` / ``TRANSFORMER_MODEL_DEFAULTS``,
    the sizes ``save_paper_series`` uses by default). Training-only keys of ``save_paper_series`` (``lr``,
    ``train_size``, ...) are accepted and ignored, so the same ``**sizes`` can be passed to both; unknown keys
    raise TypeError. The initialisation uses torch's global RNG.
    """
    model_kw, _ = _split_sizes(arch, sizes)
    if arch == "mlp":
        model = MLP(
            input_dim=model_kw["n_bits"],
            hidden_dims=[model_kw["hidden_dim"]],
            output_dim=1,
            kaiming_uniform=False,
            use_batch_norm=model_kw["use_batch_norm"],
            use_layer_norm=model_kw["use_ln"],
        )
        init_scaling = model_kw["init_scaling"]
        model.apply(lambda m: custom_weight_init(m, init_scaling=init_scaling))
        return model
    model = Transformer(
        d_model=model_kw["d_model"],
        d_head=model_kw["d_head"],
        d_vocab=model_kw["p"] + 1,
        num_heads=model_kw["num_heads"],
        num_layers=model_kw["num_layers"],
        n_ctx=model_kw["n_ctx"],
        act_type=model_kw["act_type"],
        use_ln=model_kw["use_ln"],
    )
    for prm in model.parameters():
        prm.data *= model_kw["init_scaling"]
    return model


def build_paper_mlp(**sizes) -> nn.Module:
    """``build_paper_model("mlp", **sizes)``; callable with no argument at all."""
    return build_paper_model("mlp", **sizes)


def build_paper_transformer(**sizes) -> nn.Module:
    """``build_paper_model("transformer", **sizes)``; callable with no argument at all."""
    return build_paper_model("transformer", **sizes)


# ---------------------------------------------------------------------------------------------------------------------
# Metrics (src/metrics.py), float64
# ---------------------------------------------------------------------------------------------------------------------

# Output names. The paper's CSV (src/utils.py get_stats_for_run) calls mean_singular_value "mean_lambda" and
# var_singular_value "variance_lambda"; here they keep the names of get_matrix_metrics / the brief.
METRIC_NAMES = (
    "l1",
    "l2",
    "trace",
    "spectral",
    "code_sparsity",
    "computational_sparsity",
    "mean_singular_value",
    "var_singular_value",
    "mean_w",
    "median_w",
    "var_w",
    "mean_b",
    "median_b",
    "var_b",
)


def _div(a: float, b: float) -> float:
    # The paper divides Python floats (ZeroDivisionError when b == 0); NaN here instead.
    return a / b if b != 0 else float("nan")


def _var(x: torch.Tensor) -> float:
    # torch.var with Bessel's correction (n - 1); NaN for fewer than 2 values, as torch.var gives (without its warning).
    if x.numel() < 2:
        return float("nan")
    return torch.var(x).item()


def _get_matrix_metrics(X: torch.Tensor) -> dict[str, Any] | None:
    """src/metrics.py ``get_matrix_metrics``, in float64."""
    X = X.detach().double()
    if torch.isnan(X).any():
        return None
    if torch.isinf(X).any():
        return None
    if torch.isneginf(X).any():
        return None

    l1 = torch.linalg.vector_norm(X, ord=1).item()  # flattened l1
    l2 = torch.linalg.vector_norm(X, ord=2).item()  # flattened l2 (Frobenius)
    trace = torch.trace(X).item()  # sum of the main diagonal (rectangular allowed)
    spectral = torch.linalg.matrix_norm(X, ord=2).item()  # largest singular value, not thresholded
    singular_vals = torch.linalg.svdvals(X)  # == torch.svd(X, compute_uv=False).S
    singular_vals[singular_vals < 1e-5] = 0.0
    mean = torch.mean(singular_vals).item()
    var = _var(singular_vals)

    return {
        "l1": l1,
        "l2": l2,
        "trace": trace,
        "spectral": spectral,
        "code_sparsity": _div(l1, l2),
        "computational_sparsity": _div(trace, spectral),
        "mean_singular_value": mean,
        "var_singular_value": var,
        "singular_values": singular_vals.tolist(),
    }


def _get_distribution_stats(X: torch.Tensor) -> dict[str, float]:
    """src/metrics.py ``get_distribution_stats``: torch.mean, torch.var (Bessel), torch.median (lower middle)."""
    X = X.detach().double()
    if X.numel() == 0:
        return {"mean": float("nan"), "var": float("nan"), "median": float("nan")}
    mean = torch.mean(X).item()
    var = _var(X)
    median = torch.median(X).item()
    return {"mean": mean, "var": var, "median": median}


def _concatenate_matrices(matrices) -> torch.Tensor:
    """src/metrics.py ``concatenate_matrices``."""
    return torch.cat([m.detach().double().flatten() for m in matrices])


def _unpack_weights_transformer(layer):
    """src/metrics.py ``unpack_weights_transformer``: W_K, W_Q, W_V (per-head 3-D), W_O, W_in, W_out."""
    k = layer.attn.W_K.data.double()
    q = layer.attn.W_Q.data.double()
    v = layer.attn.W_V.data.double()
    in_proj = layer.attn.W_O.data.double()
    ffn_in = layer.mlp.W_in.data.double()
    ffn_out = layer.mlp.W_out.data.double()
    return k, q, v, in_proj, ffn_in, ffn_out


def _unpack_biases_transformer(layer):
    """src/metrics.py ``unpack_biases_transformer``: only the FF biases b_in, b_out."""
    return layer.mlp.b_in.data.double(), layer.mlp.b_out.data.double()


def _get_layer_metrics_transformer(layer, nheads):
    """src/metrics.py ``get_layer_metrics_transformer``: per-head K/Q/V slices (d_head, d_model); W_O whole."""
    k, q, v, in_proj, ffn_in, ffn_out = _unpack_weights_transformer(layer)
    return (
        [_get_matrix_metrics(k[i, :, :]) for i in range(nheads)],
        [_get_matrix_metrics(q[i, :, :]) for i in range(nheads)],
        [_get_matrix_metrics(v[i, :, :]) for i in range(nheads)],
        _get_matrix_metrics(in_proj),
        _get_matrix_metrics(ffn_in),
        _get_matrix_metrics(ffn_out),
    )


@torch.no_grad()
def paper_raw_metrics_transformer(model: Transformer, nheads: int | None = None) -> dict[str, Any]:
    """src/metrics.py ``get_metrics_transformer(model, nheads)`` in float64: the paper's per-epoch stats dict.

    ``nheads`` defaults to ``W_K.shape[0]`` (modular_addition.py hard-codes 4, which is also its model's head count).
    """
    if nheads is None:
        nheads = model.blocks[0].attn.W_K.shape[0]
    data_dict: dict[str, Any] = {"k": [], "q": [], "v": [], "in_proj": [], "ffn_in": [], "ffn_out": []}
    for i, layer in enumerate(model.blocks):
        k, q, v, in_proj, ffn_in, ffn_out = _get_layer_metrics_transformer(layer, nheads)
        data_dict["k"].append({i: k})
        data_dict["q"].append({i: q})
        data_dict["v"].append({i: v})
        data_dict["in_proj"].append({i: in_proj})
        data_dict["ffn_in"].append({i: ffn_in})
        data_dict["ffn_out"].append({i: ffn_out})

    weights = torch.cat([_concatenate_matrices(_unpack_weights_transformer(layer)) for layer in model.blocks])
    biases = torch.cat([_concatenate_matrices(_unpack_biases_transformer(layer)) for layer in model.blocks])
    data_dict["w_all"] = _get_distribution_stats(weights)
    data_dict["b_all"] = _get_distribution_stats(biases)
    return data_dict


@torch.no_grad()
def paper_raw_metrics_mlp(model: MLP) -> dict[str, Any]:
    """src/metrics.py ``get_metrics_mlp(model)`` in float64: every ``nn.Linear`` in ``model.layers``.

    BatchNorm1d / LayerNorm layers are not Linear, so they are never read.
    """
    data_dict: dict[str, Any] = {"w": []}
    weights = []
    biases = []
    for i, layer in enumerate(model.layers):
        if isinstance(layer, nn.Linear):
            w = _get_matrix_metrics(layer.weight)  # get_layer_metrics_mlp
            data_dict["w"].append({i: w})
            weights.append(layer.weight.detach().double().flatten())
            # The paper's layer.bias.flatten() fails for a Linear without bias; skipped here.
            if layer.bias is not None:
                biases.append(layer.bias.detach().double().flatten())
    data_dict["w_all"] = _get_distribution_stats(torch.cat(weights))
    data_dict["b_all"] = _get_distribution_stats(torch.cat(biases) if biases else torch.zeros(0, dtype=torch.float64))
    return data_dict


def _mean(values: list[float]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.mean(values)) if values else float("nan")


def _nanmean(values: list[float]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values)) if values else float("nan")


def stats_from_raw_metrics(data: dict[str, Any], is_transformer: bool) -> dict[str, float]:
    """The per-file body of src/utils.py ``get_stats_for_run`` for one stats dict, with this module's key names.

    Matrices are visited in the paper's order: ``chain(k, v, q, in_proj, ffn_in, ffn_out)`` for the
    transformer, ``data["w"]`` for the MLP. Per-matrix values are averaged with ``np.mean``, except the
    singular-value variance, averaged with ``np.nanmean``. A None (non-finite) matrix is skipped (the paper
    skips it for dict entries and crashes on per-head list entries). ``mean_lambda`` -> ``mean_singular_value``,
    ``variance_lambda`` -> ``var_singular_value``.
    """
    keys = ("l1", "l2", "trace", "spectral", "code_sparsity", "computational_sparsity",
            "mean_singular_value", "var_singular_value")
    bufs: dict[str, list[float]] = {key: [] for key in keys}

    def unpack_vals(subsample):  # src/utils.py unpack_vals
        for key in keys:
            bufs[key].append(subsample[key])

    if is_transformer:
        samples = chain(data["k"], data["v"], data["q"], data["in_proj"], data["ffn_in"], data["ffn_out"])
    else:
        samples = data["w"]
    for sample in samples:
        for subsample in sample.values():
            if isinstance(subsample, dict):
                unpack_vals(subsample)
            elif isinstance(subsample, list):
                for subsubsample in subsample:
                    if subsubsample is not None:  # the paper would raise TypeError here
                        unpack_vals(subsubsample)

    out = {key: _mean(bufs[key]) for key in keys[:-1]}
    out["var_singular_value"] = _nanmean(bufs["var_singular_value"])
    out["mean_w"] = data["w_all"]["mean"]
    out["median_w"] = data["w_all"]["median"]
    out["var_w"] = data["w_all"]["var"]
    out["mean_b"] = data["b_all"]["mean"]
    out["median_b"] = data["b_all"]["median"]
    out["var_b"] = data["b_all"]["var"]
    return {key: float(out[key]) for key in METRIC_NAMES}


def paper_transformer_metrics(model: Transformer, nheads: int | None = None) -> dict[str, float]:
    """The paper's 14 weight metrics of a ``Transformer`` (get_metrics_transformer + get_stats_for_run), float64."""
    return stats_from_raw_metrics(paper_raw_metrics_transformer(model, nheads), is_transformer=True)


def paper_mlp_metrics(model: MLP) -> dict[str, float]:
    """The paper's 14 weight metrics of an ``MLP`` (get_metrics_mlp + get_stats_for_run), float64."""
    return stats_from_raw_metrics(paper_raw_metrics_mlp(model), is_transformer=False)


def paper_metrics(model: nn.Module, arch: str) -> dict[str, float]:
    """Dispatch: ``arch`` "transformer" -> ``paper_transformer_metrics``, "mlp" -> ``paper_mlp_metrics``."""
    if arch == "transformer":
        return paper_transformer_metrics(model)
    if arch == "mlp":
        return paper_mlp_metrics(model)
    raise ValueError(f"arch must be 'mlp' or 'transformer', got {arch!r}")


# ---------------------------------------------------------------------------------------------------------------------
# Training (scripts/00_training/sparse_parities.py, modular_addition.py), tiny and CPU only
# ---------------------------------------------------------------------------------------------------------------------


def run_dir_name(lr: float, optim_name: str, seed: int, init_scaling: float) -> str:
    """The scripts' ``run_output_dir`` basename: ``f"lr{lr}_{optim_name}_seed{seed}_scaling{init_scaling}"``."""
    return f"lr{lr}_{optim_name}_seed{seed}_scaling{init_scaling}"


def _set_seed(seed: int) -> None:
    # accelerate.utils.set_seed: random, numpy and torch seeds.
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _train_one_seed(arch: str, run_dir: pathlib.Path, seed: int, epochs: int, model_kw: dict, train_kw: dict,
                    paper_stats_json: bool) -> list[pathlib.Path]:
    _set_seed(seed)
    # get_dataloaders of each script (dataset, random_split, DataLoader shuffle all use torch's global RNG).
    if arch == "mlp":
        data = SparseParity(train_kw["train_size"] + train_kw["test_size"], total_bits=model_kw["n_bits"],
                            parity_bits=train_kw["parity_bits"])
        train, test = torch.utils.data.random_split(data, [train_kw["train_size"], train_kw["test_size"]])
    else:
        data = ModularArithmetic("add", num_to_generate=model_kw["p"])
        n_train = int(len(data) * train_kw["data_split"])
        train, test = torch.utils.data.random_split(data, [n_train, len(data) - n_train])
    train_dataloader = torch.utils.data.DataLoader(train, shuffle=True, batch_size=train_kw["train_bsz"])
    test_dataloader = torch.utils.data.DataLoader(test, shuffle=False, batch_size=train_kw["test_bsz"])

    model = build_paper_model(arch, **model_kw)
    lr = train_kw["lr"]
    if train_kw["optim_name"] == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=train_kw["weight_decay"])
    elif train_kw["optim_name"] == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=train_kw["weight_decay"])
    else:
        raise ValueError(f"Unknown optimizer {train_kw['optim_name']}")

    if arch == "mlp":
        hinge = HingeLoss()

        def forward(x):
            return model(x)

        def batch_loss(output, y):
            return hinge(output, y).mean()

        def predict(output):
            return torch.flatten(torch.sign(output))
    else:
        ce = nn.CrossEntropyLoss()

        def forward(x):
            return model(x)[:, -1, :]

        def batch_loss(output, y):
            return ce(output, y)

        def predict(output):
            return torch.argmax(output, dim=1)

    run_dir.mkdir(parents=True, exist_ok=True)
    ckpts: list[pathlib.Path] = []
    log: list[dict[str, Any]] = []
    step = 0
    model.train()
    for epoch in range(epochs):  # eval_every = 1: every epoch is evaluated, logged and checkpointed
        train_loss = 0.0
        eval_loss = 0.0
        train_correct = train_count = 0
        for x, y in train_dataloader:
            output = forward(x)
            loss = batch_loss(output, y)
            loss.backward()
            if train_kw["clip_grad"]:
                nn.utils.clip_grad_norm_(model.parameters(), lr * 10)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            train_loss += loss.detach().cpu().item()
            with torch.no_grad():  # evaluate's "accuracy" on the pre-step outputs of the epoch's batches
                pred = predict(output)
                train_correct += int((pred == y.flatten()).sum().item())
                train_count += int(y.numel())

        model.eval()
        test_correct = test_count = 0
        with torch.no_grad():
            for x, y in test_dataloader:
                output = forward(x)
                eval_loss += batch_loss(output, y).item()
                pred = predict(output)
                test_correct += int((pred == y.flatten()).sum().item())
                test_count += int(y.numel())
        train_loss = train_loss / len(train_dataloader)
        eval_loss = eval_loss / len(test_dataloader)
        train_acc = train_correct / train_count
        test_acc = test_correct / test_count

        # The commented-out per-epoch save of both scripts: model_{epoch}.pt in run_output_dir.
        ckpt = run_dir / f"model_{epoch}.pt"
        torch.save(model.state_dict(), ckpt)
        ckpts.append(ckpt)
        log.append({"epoch": epoch, "step": step, "train_loss": train_loss, "test_loss": eval_loss,
                    "train_accuracy": train_acc, "test_accuracy": test_acc})
        if paper_stats_json:
            data = paper_raw_metrics_mlp(model) if arch == "mlp" else paper_raw_metrics_transformer(model)
            data["train_loss"] = train_loss
            data["eval_loss"] = eval_loss
            data["train_accuracy"] = {"accuracy": train_acc}
            data["eval_accuracy"] = {"accuracy": test_acc}
            (run_dir / f"epoch{epoch}.json").write_text(json.dumps(data))
        model.train()

    (run_dir / "log.json").write_text(json.dumps(log, indent=1))
    return ckpts


def save_paper_series(arch: str, out_dir, seeds=(0, 1), epochs: int = 4, paper_stats_json: bool = False,
                      **sizes) -> dict[int, list[pathlib.Path]]:
    """Train the paper's model on a tiny local task for each seed and save one checkpoint per epoch.

    ``arch="mlp"``: the paper's MLP (``build_paper_model("mlp")``) on sparse parity (src/data.py SparseParity,
    ``n_bits`` total bits, y = product of the first ``parity_bits``), HingeLoss, SGD(lr=0.1, weight_decay=0.01),
    as scripts/00_training/sparse_parities.py. ``arch="transformer"``: the paper's Transformer on modular addition
    mod ``p`` (inputs [i, j, p], 30 % of the pairs for training), CrossEntropyLoss on the last position,
    AdamW(lr=1e-3, weight_decay=1.0), as scripts/00_training/modular_addition.py. Defaults: ``MLP_MODEL_DEFAULTS``,
    ``MLP_TRAIN_DEFAULTS``, ``TRANSFORMER_MODEL_DEFAULTS``, ``TRANSFORMER_TRAIN_DEFAULTS`` (3 optimisation steps per
    epoch); override any of them through ``**sizes``. Each seed calls ``random/np/torch`` seeding (accelerate's
    ``set_seed``) then builds the data and the model, as the scripts do; the caller's RNG state is restored
    afterwards, and so is torch's thread count (training runs with ``torch.set_num_threads(1)``). CPU only.

    On-disk layout (the scripts' ``run_output_dir``, which already holds the seed, so one directory per seed)::

        out_dir/lr{lr}_{optim_name}_seed{seed}_scaling{init_scaling}/   e.g. lr0.1_sgd_seed0_scaling1.0 (mlp),
                                                                             lr0.001_adamw_seed0_scaling1.0 (tr.)
            model_0.pt ... model_{epochs-1}.pt   torch.save(model.state_dict()) at the end of each epoch
                                                 (name of the scripts' commented-out per-epoch save; epochs from 0)
            log.json                             JSON list, one object per epoch, in epoch order:
                                                 {"epoch", "step", "train_loss", "test_loss",
                                                  "train_accuracy", "test_accuracy"}
            epoch{epoch}.json                    only if paper_stats_json: the scripts' per-epoch stats file
                                                 (get_metrics_* dict, float64 here, plus "train_loss", "eval_loss",
                                                 "train_accuracy": {"accuracy": a}, "eval_accuracy": {"accuracy": a})

    ``step`` is the cumulative number of optimiser steps at the end of the epoch. ``train_loss`` is the mean of the
    epoch's batch losses (computed before each step), ``train_accuracy`` the fraction of the epoch's training
    samples predicted right by those pre-step outputs, ``test_loss`` the mean over test batches of the batch-mean
    loss after the epoch, ``test_accuracy`` the test fraction right (mlp: ``sign(output) == y``, so an output of
    exactly 0 is wrong; transformer: argmax). The scripts' final ``model.pt`` is not written.

    Returns ``{seed: [model_0.pt path, ..., model_{epochs-1}.pt path]}``.
    """
    model_kw, train_kw = _split_sizes(arch, sizes)
    out_dir = pathlib.Path(out_dir)
    result: dict[int, list[pathlib.Path]] = {}
    n_threads = torch.get_num_threads()
    py_state = random.getstate()
    np_state = np.random.get_state()
    try:
        torch.set_num_threads(1)
        with torch.random.fork_rng(devices=[]):
            for seed in seeds:
                run_dir = out_dir / run_dir_name(train_kw["lr"], train_kw["optim_name"], seed,
                                                 model_kw["init_scaling"])
                result[int(seed)] = _train_one_seed(arch, run_dir, int(seed), int(epochs), model_kw, train_kw,
                                                    paper_stats_json)
    finally:
        torch.set_num_threads(n_threads)
        random.setstate(py_state)
        np.random.set_state(np_state)
    return result


if __name__ == "__main__":  # pragma: no cover - manual smoke run
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for _arch in ("mlp", "transformer"):
            for _seed, _paths in save_paper_series(_arch, tmp, seeds=(0,), epochs=2).items():
                _m = build_paper_model(_arch)
                _m.load_state_dict(torch.load(_paths[-1]))
                print(_arch, _seed, {k: round(v, 4) for k, v in paper_metrics(_m, _arch).items()})
