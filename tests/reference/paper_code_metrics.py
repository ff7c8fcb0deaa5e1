"""Independent numpy (float64) transcription of the weight metrics of the paper's public code.

Source: github.com/michahu/modeling-training (Hu et al., "Latent State Models of Training
Dynamics", TMLR 2024). Files transcribed:

* ``src/metrics.py``: ``get_matrix_metrics`` (per 2-D matrix), ``get_tensor_metrics`` (per 4-D conv
  kernel), ``get_distribution_stats`` (mean/var/median of all weights or all biases), and the
  per-architecture collectors ``get_metrics_transformer`` (+ ``unpack_weights_transformer``,
  ``unpack_biases_transformer``, ``get_layer_metrics_transformer``), ``get_metrics_mlp``,
  ``get_metrics_lenet5``, ``get_metrics_resnet18``.
* ``src/utils.py``: ``get_stats_for_run`` (averages per-matrix metrics for the transformer and
  MLP runs: ``np.mean``, but ``np.nanmean`` for the singular-value variance) and
  ``get_stats_for_cnn`` (LeNet-5 / ResNet-18 runs: ``np.mean`` of every key over all layers that
  report it; conv layers only report l1, l2, code_sparsity).
* ``scripts/00_training/*.py`` show which collector each run uses (modular_addition.py ->
  get_metrics_transformer; sparse_parities.py and computer_vision.py --model_name mlp ->
  get_metrics_mlp; computer_vision.py lenet -> get_metrics_lenet5, resnet18 ->
  get_metrics_resnet18); ``src/model.py`` gives the paper's parameter layouts.

The functions take a vt state dict (``model.state_dict()`` names of vt_core/models/*.py, arrays or
CPU tensors) and map vt's layouts onto the paper's (see ``_transformer_layer``).

Where the paper's code crashes, this module returns a value instead and says so:

* a matrix with NaN/inf: ``get_matrix_metrics`` returns None. ``get_stats_for_run`` skips a None
  for W_O / W_in / W_out / MLP Linear weights, but crashes (TypeError) on a None per-head W_Q/K/V
  entry and ``get_stats_for_cnn`` crashes (AttributeError) on a None fc entry. Here all of those
  matrices are skipped; a metric with no remaining matrices is NaN (``np.mean([])``).
* ``l1 / l2`` and ``trace / spectral`` are Python float divisions (ZeroDivisionError on an
  all-zero matrix); here they give NaN.
* vt MLPs built with ``bias=False``: the paper's ``layer.bias.flatten()`` would fail; here the
  bias vector is empty and mean_b/median_b/var_b are NaN.

Assumptions for vt models that differ from the paper's:

* LeNet-5: vt's ``conv1``/``conv2`` play the paper's ``layer1[0]``/``layer2[0]`` (paper: Conv2d
  followed by BatchNorm2d, which the code never reads; vt has no norm). Conv biases ARE biases.
* ResNet: the rule of ``get_metrics_resnet18`` for any number of stages: stem ``conv1`` and every
  block's ``conv1``/``conv2`` are conv tensors and weights; the 1x1 shortcut conv (paper:
  ``block.downsample[0]``) is NOT used anywhere; BatchNorm never; ``fc.weight`` is the only
  matrix; biases = ``fc.bias`` only. vt's no-batch-norm ResNet has conv biases (``bias=not
  batch_norm``); the paper's convs never have biases and its code only appends ``model.fc.bias``,
  so those conv biases are excluded here (literal reading; flagged as ambiguous).
* Conv kernels are never turned into matrices by the paper code: no trace / spectral /
  singular values for conv layers (``get_tensor_metrics``).
"""

from __future__ import annotations

import re
import warnings

import numpy as np

FAMILIES = ("transformer", "mlp", "resnet", "lenet5")
MATRIX_KEYS = ("l1", "l2", "trace", "spectral", "code_sparsity", "computational_sparsity",
               "mean_singular_value", "var_singular_value")
METRIC_NAMES = MATRIX_KEYS + ("mean_w", "median_w", "var_w", "mean_b", "median_b", "var_b")


def _a(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


# ----------------------------------------------------------------------------------------------
# statistics (src/metrics.py)


def _bessel_var(x: np.ndarray) -> float:
    # torch.var(x): unbiased (correction=1); NaN for a single element.
    x = np.ravel(x)
    if x.size < 2:
        return float("nan")
    return float(np.sum((x - x.mean()) ** 2) / (x.size - 1))


def _lower_median(x: np.ndarray) -> float:
    # torch.median(x): the lower of the two middle values for an even count; NaN if any NaN.
    x = np.ravel(x)
    if x.size == 0 or np.isnan(x).any():
        return float("nan")
    return float(np.sort(x)[(x.size - 1) // 2])


def _div(a: float, b: float) -> float:
    # The paper divides Python floats (ZeroDivisionError when b == 0); NaN here.
    return a / b if b != 0 else float("nan")


def distribution_stats(x: np.ndarray) -> dict[str, float]:
    """src/metrics.py ``get_distribution_stats``: torch.mean, torch.var, torch.median."""
    x = np.ravel(x)
    if x.size == 0:
        return {"mean": float("nan"), "var": float("nan"), "median": float("nan")}
    return {"mean": float(np.mean(x)), "var": _bessel_var(x), "median": _lower_median(x)}


def matrix_metrics(X: np.ndarray) -> dict[str, float] | None:
    """src/metrics.py ``get_matrix_metrics(X)`` for one 2-D matrix; None if X has NaN/inf."""
    X = _a(X)
    assert X.ndim == 2
    # "if torch.isnan(X).any(): return" (same for isinf / isneginf)
    if not np.isfinite(X).all():
        return None
    l1 = float(np.sum(np.abs(X)))                # torch.linalg.vector_norm(x, ord=1)
    l2 = float(np.sqrt(np.sum(X * X)))           # torch.linalg.vector_norm(x, ord=2)
    trace = float(np.trace(X))                   # torch.trace(X): main diagonal, rectangular ok
    s = np.linalg.svd(X, compute_uv=False)       # torch.svd(X, compute_uv=False).S, min(m, n) values
    spectral = float(s[0])                       # torch.linalg.matrix_norm(X, ord=2), unthresholded
    s = np.where(s < 1e-5, 0.0, s)               # singular_vals[singular_vals < 1e-5] = 0.0
    return {
        "l1": l1,
        "l2": l2,
        "trace": trace,
        "spectral": spectral,
        "code_sparsity": _div(l1, l2),                   # l1 / l2
        "computational_sparsity": _div(trace, spectral),  # trace / spectral
        "mean_singular_value": float(np.mean(s)),     # torch.mean(singular_vals)
        "var_singular_value": _bessel_var(s),         # torch.var(singular_vals)
    }


def tensor_metrics(K: np.ndarray) -> dict[str, float]:
    """src/metrics.py ``get_tensor_metrics(X)`` for a 4-D conv kernel (out, in, kh, kw).

    Norms of each (out, in) kernel slice over dims (2, 3), flattened, then averaged; no NaN check.
    """
    K = _a(K)
    assert K.ndim == 4
    l1s = np.abs(K).sum(axis=(2, 3)).ravel()         # vector_norm(x, ord=1, dim=(2,3))
    l2s = np.sqrt((K * K).sum(axis=(2, 3))).ravel()  # vector_norm(x, ord=2, dim=(2,3))
    with np.errstate(invalid="ignore", divide="ignore"):
        cs = l1s / l2s                                # tensor division: 0/0 -> NaN
    return {"l1": float(l1s.mean()), "l2": float(l2s.mean()), "code_sparsity": float(cs.mean())}


# ----------------------------------------------------------------------------------------------
# which parameters (src/metrics.py collectors), mapped from vt's names and layouts


def _transformer_blocks(state) -> list[int]:
    return sorted({int(m.group(1)) for k in state if (m := re.fullmatch(r"blocks\.(\d+)\.attn\.W_Q", k))})


def _transformer_layer(state, i: int):
    """``unpack_weights_transformer(layer)`` in the paper's layouts (src/model.py Attention, FF).

    paper W_K/W_Q/W_V: (num_heads, d_head, d_model); vt: (n_heads, d_model, d_head)   -> swap last 2
    paper W_O: ONE (d_model, d_head * num_heads), columns ordered (head, d_head)
          ("b i q h -> b q (i h)" then einsum "df,bqf->bqd"); vt: (n_heads, d_head, d_model)
          -> reshape(n_heads * d_head, d_model).T
    paper W_in: (d_mlp, d_model) ("md,bpd->bpm"); vt (d_model, d_mlp) -> .T
    paper W_out: (d_model, d_mlp) ("dm,bpm->bpd"); vt (d_mlp, d_model) -> .T
    Returns k, q, v, in_proj, ffn_in, ffn_out (the paper's order).
    """
    p = f"blocks.{i}."
    k = _a(state[p + "attn.W_K"]).transpose(0, 2, 1)
    q = _a(state[p + "attn.W_Q"]).transpose(0, 2, 1)
    v = _a(state[p + "attn.W_V"]).transpose(0, 2, 1)
    W_O = _a(state[p + "attn.W_O"])
    h, d_head, d_model = W_O.shape
    in_proj = W_O.reshape(h * d_head, d_model).T
    ffn_in = _a(state[p + "mlp.W_in"]).T
    ffn_out = _a(state[p + "mlp.W_out"]).T
    return k, q, v, in_proj, ffn_in, ffn_out


def _mlp_linears(state) -> list[int]:
    # get_metrics_mlp: "for i, layer in enumerate(model.layers): if isinstance(layer, nn.Linear)".
    # In a state dict the Linear layers are the layers.{i}.weight that are 2-D (norm weights are 1-D).
    idx = {int(m.group(1)) for k in state if (m := re.fullmatch(r"layers\.(\d+)\.weight", k))}
    return sorted(i for i in idx if np.ndim(state[f"layers.{i}.weight"]) == 2)


def _resnet_convs(state) -> list[str]:
    # get_metrics_resnet18: model.conv1, then for layer in [layer1..layer4]: for block in layer:
    # block.conv1, block.conv2. (block.downsample is never read.)
    names = ["conv1.weight"]
    blocks = sorted({(int(m.group(1)), int(m.group(2))) for k in state
                     if (m := re.fullmatch(r"layer(\d+)\.(\d+)\.conv1\.weight", k))})
    for s, j in blocks:
        names += [f"layer{s}.{j}.conv1.weight", f"layer{s}.{j}.conv2.weight"]
    return names


def paper_conv_kernels(state, family: str) -> list[np.ndarray]:
    """The 4-D conv kernels ``get_tensor_metrics`` is applied to (empty for transformer / mlp)."""
    _check_family(family)
    if family == "lenet5":  # get_metrics_lenet5: model.layer1[0].weight, model.layer2[0].weight
        return [_a(state["conv1.weight"]), _a(state["conv2.weight"])]
    if family == "resnet":
        return [_a(state[n]) for n in _resnet_convs(state)]
    return []


def paper_matrices(state, family: str) -> list[np.ndarray]:
    """The 2-D matrices ``get_matrix_metrics`` is applied to, in the paper's layout and order."""
    _check_family(family)
    if family == "transformer":
        # get_layer_metrics_transformer: k[i], q[i], v[i] for each head i; in_proj (= W_O, whole);
        # ffn_in; ffn_out. Embed, PosEmbed, Unembed and LayerNorms are never read.
        out = []
        for b in _transformer_blocks(state):
            k, q, v, in_proj, ffn_in, ffn_out = _transformer_layer(state, b)
            out += [k[i] for i in range(k.shape[0])]
            out += [q[i] for i in range(q.shape[0])]
            out += [v[i] for i in range(v.shape[0])]
            out += [in_proj, ffn_in, ffn_out]
        return out
    if family == "mlp":  # get_layer_metrics_mlp(layer): layer.weight (out, in)
        return [_a(state[f"layers.{i}.weight"]) for i in _mlp_linears(state)]
    if family == "lenet5":  # get_metrics_lenet5: fc1, fc2, fc3 weights
        return [_a(state[f"fc{j}.weight"]) for j in (1, 2, 3)]
    return [_a(state["fc.weight"])]  # get_metrics_resnet18: model.fc.weight


def paper_weights(state, family: str) -> np.ndarray:
    """The flat vector ``get_distribution_stats`` gets as ``w_all``."""
    _check_family(family)
    if family == "transformer":
        # torch.cat([concatenate_matrices(unpack_weights_transformer(layer)) for layer in blocks])
        parts = [m.ravel() for b in _transformer_blocks(state) for m in _transformer_layer(state, b)]
    elif family == "mlp":  # weights.append(layer.weight.flatten()) for each nn.Linear
        parts = [m.ravel() for m in paper_matrices(state, "mlp")]
    else:  # conv kernels then fc weights (get_metrics_lenet5 / get_metrics_resnet18)
        parts = [m.ravel() for m in paper_conv_kernels(state, family) + paper_matrices(state, family)]
    return np.concatenate(parts) if parts else np.zeros(0)


def paper_biases(state, family: str) -> np.ndarray:
    """The flat vector ``get_distribution_stats`` gets as ``b_all``."""
    _check_family(family)
    if family == "transformer":  # unpack_biases_transformer: layer.mlp.b_in, layer.mlp.b_out
        names = [f"blocks.{b}.mlp.{n}" for b in _transformer_blocks(state) for n in ("b_in", "b_out")]
    elif family == "mlp":  # biases.append(layer.bias.flatten()) for each nn.Linear
        names = [f"layers.{i}.bias" for i in _mlp_linears(state)]
        names = [n for n in names if n in state]  # vt bias=False: paper code would crash
    elif family == "lenet5":  # layer1[0].bias, layer2[0].bias, fc1.bias, fc2.bias, fc3.bias
        names = ["conv1.bias", "conv2.bias", "fc1.bias", "fc2.bias", "fc3.bias"]
    else:  # get_metrics_resnet18: biases.append(model.fc.bias.flatten()) only
        names = ["fc.bias"]
    parts = [_a(state[n]).ravel() for n in names]
    return np.concatenate(parts) if parts else np.zeros(0)


# ----------------------------------------------------------------------------------------------
# aggregation (src/utils.py)


def _mean(vals, nan_aware: bool = False) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if not vals:
            return float("nan")
        return float(np.nanmean(vals) if nan_aware else np.mean(vals))


def paper_metrics(state, family: str) -> dict[str, float]:
    """The 14 per-checkpoint numbers of the paper's CSV (src/utils.py).

    transformer / mlp: ``get_stats_for_run``: every metric is ``np.mean`` over the matrices'
    values, except ``variance_lambda`` (= var_singular_value) which is ``np.nanmean`` (a 1-row
    matrix, e.g. the sparse-parity output layer, has one singular value and torch.var -> NaN).
    lenet5 / resnet: ``get_stats_for_cnn``: ``np.mean`` of each key over every layer reporting it:
    l1, l2, code_sparsity over conv tensors AND fc matrices (one value per layer); trace, spectral,
    computational_sparsity, mean/var singular value over the fc matrices only (np.mean, no nanmean).
    """
    _check_family(family)
    per = [m for m in (matrix_metrics(X) for X in paper_matrices(state, family)) if m is not None]
    out: dict[str, float] = {}
    if family in ("transformer", "mlp"):
        for key in MATRIX_KEYS:
            out[key] = _mean([m[key] for m in per], nan_aware=(key == "var_singular_value"))
    else:
        per = [tensor_metrics(K) for K in paper_conv_kernels(state, family)] + per
        for key in MATRIX_KEYS:
            out[key] = _mean([m[key] for m in per if key in m])
    w = distribution_stats(paper_weights(state, family))
    b = distribution_stats(paper_biases(state, family))
    out.update(mean_w=w["mean"], median_w=w["median"], var_w=w["var"],
               mean_b=b["mean"], median_b=b["median"], var_b=b["var"])
    return out
