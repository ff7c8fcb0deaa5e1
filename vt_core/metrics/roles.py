"""Which tensors the weight metrics read, and as what: one rule set for every source of weights.

The rules are chosen so that the paper's code (michahu/modeling-training, ``src/metrics.py``:
``get_metrics_transformer``, ``get_metrics_mlp``, ``get_metrics_lenet5``, ``get_metrics_resnet18``)
is reproduced on the paper's architectures (``tests/reference/PAPER_RULES.md`` quotes it), and so
that a user's model — built by vt, by a factory, watched by the Recorder or a callback, or known only
as a ``state_dict`` — gets the same answer:

=====================  =========================================================================
role                   what the metrics do with the tensor
=====================  =========================================================================
``matrix``             one matrix (the per-matrix metrics); its entries are weights
``heads``              (heads, a, b): one matrix per head (attention W_Q, W_K, W_V); weights
``merged_heads``       (heads, d_head, d_model) read as ONE (heads * d_head, d_model) matrix
                       (attention W_O, as the paper's code keeps it); weights
``kernel``             a conv kernel (out, in, *k): never a matrix; l1, l2 and code_sparsity of
                       each (out, in) slice, averaged (``get_tensor_metrics``); no trace,
                       spectral norm or singular values; weights
``bias``               a bias: mean_b, median_b, var_b
``exclude``            read by no weight metric (embeddings, unembeddings, norms, buffers)
=====================  =========================================================================

**With the model** (:func:`model_roles`; vt's models, a ``--factory``, the Recorder, the callbacks)
roles are *known*, first rule that applies:

1. a buffer (``register_buffer``: masks, running statistics, rotary tables, position ids) is never
   a weight and is never stored;
2. ``vt_metric_roles = {"W_O": "merged_heads"}``, a class attribute of a module, names its own
   parameters' (or its children's, by dotted name) roles; vt's transformer declares its attention,
   embeddings and LayerNorm, its ResNet leaves out the shortcut and the conv biases as the paper's
   ResNet-18 code does;
3. embeddings and unembeddings: ``nn.Embedding``/``EmbeddingBag``, the modules a Hugging Face model
   returns from ``get_input_embeddings()``/``get_output_embeddings()``, and any module whose class
   name contains ``Embed`` (the paper's ``Embed``, ``PosEmbed`` and ``Unembed``) are ``exclude``;
4. normalisation layers (``nn.LayerNorm``, batch / group / instance / RMS norms, and any class whose
   name contains ``Norm``) are ``exclude``;
5. ``nn.Linear`` weight ``matrix``, bias ``bias``; ``nn.Conv1d/2d/3d`` weight ``kernel``, bias ``bias``;
6. any other parameter is a ``matrix`` when 2-D, a ``bias`` when 0- or 1-D, and ``heads`` (one
   matrix per index of its first axis, as the paper's per-head W_Q/W_K/W_V) when it has more.

**Without the model** (:func:`tensor_roles`: a plain ``state_dict``), roles are *guessed* from each
tensor's name, shape and values and said to be guessed (`vt import --dry-run`, the closing lines,
``study.json``):

1. a buffer by its name (``mask``, ``*_mask``, ``masked_bias``, ``running_mean``, ``running_var``,
   ``num_batches_tracked``, ``inv_freq``, ``position_ids``, ``*_cached``) or by its values (a 2-D or
   larger tensor holding only 0 and 1, both: a mask) is ``exclude``;
2. a module whose ``weight`` is 1-D, or that holds running statistics, or whose name says norm
   (``*norm*``, ``ln``, ``ln_1``, ``ln_f``, ``bn1``) is a normalisation layer: ``exclude``;
3. a name part saying embedding (``*embed*``, ``wte``, ``wpe``, ``lm_head``, ``W_E``, ``W_pos``,
   ``W_U``): ``exclude``;
4. by the number of dimensions: 0-1 ``bias``, 2 ``matrix``, 3 ``heads`` (``kernel`` when a name part
   says conv), 4 or more ``kernel``.

``--roles FILE`` (:func:`read_roles_file`: glob -> role, TOML or JSON) sets any tensor's role over
every rule; those are *given*.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from vt_core.errors import VtError

if TYPE_CHECKING:  # torch is imported where a model is looked at, not by what only reads a study
    from torch import nn

ROLES = ("matrix", "heads", "merged_heads", "kernel", "bias", "exclude")
WEIGHT_ROLES = ("matrix", "heads", "merged_heads", "kernel")
#: bump when a rule changes: stored metrics computed under other rules are recomputed
RULES_VERSION = 2

Certainty = Literal["known", "guessed", "given"]


class RoleRow(TypedDict):
    """One tensor: its name, owner (module class, or ``state_dict``), shape, role, why, and how
    sure vt is; ``matrices``: how many matrices (or conv kernels) the per-matrix metrics read."""

    name: str
    module: str
    shape: tuple[int, ...]
    role: str
    why: str
    certainty: Certainty
    matrices: int
    buffer: bool


class RolesFileError(VtError, ValueError):
    """A ``--roles`` file that cannot be used."""


@functools.cache
def _types() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...], type]:
    """(embedding types, normalisation types, convolution types, Linear)."""
    from torch import nn

    embeddings = (nn.Embedding, nn.EmbeddingBag)
    norms = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.modules.instancenorm._InstanceNorm,
             *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))
    return embeddings, norms, (nn.modules.conv._ConvNd,), nn.Linear


def _hf_embeddings(model: nn.Module) -> set[int]:
    """ids of the modules a Hugging Face model names as its input and output embeddings."""
    out = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        fn = getattr(model, getter, None)
        try:
            module = fn() if callable(fn) else None
        except (NotImplementedError, AttributeError, TypeError):
            module = None
        if module is not None:
            out.add(id(module))
    return out


def _by_module(module: nn.Module, name: str, ndim: int, hf: set[int]) -> tuple[str, str]:
    embeddings, norms, conv, linear = _types()
    cls = type(module).__name__
    if isinstance(module, embeddings) or id(module) in hf:
        return "exclude", f"an embedding ({cls})"
    if "embed" in cls.lower():
        return "exclude", f"an embedding (class {cls})"
    if isinstance(module, norms) or "norm" in cls.lower():
        return "exclude", f"a normalisation layer ({cls})"
    if isinstance(module, conv):
        return ("kernel", f"{cls} kernel") if name == "weight" else ("bias", f"{cls} bias")
    if isinstance(module, linear):
        return ("matrix", "Linear weight") if name == "weight" else ("bias", "Linear bias")
    return _by_ndim(ndim, f"parameter of {cls}")


def _by_ndim(ndim: int, what: str, conv: bool = False) -> tuple[str, str]:
    if ndim <= 1:
        return "bias", f"{ndim}-D {what}: a bias"
    if ndim == 2:
        return "matrix", f"2-D {what}: a matrix"
    if ndim == 3 and not conv:
        return "heads", f"3-D {what}: one matrix per head (first axis)"
    return "kernel", f"{ndim}-D {what}: a conv kernel"


def matrix_count(role: str, shape: tuple[int, ...]) -> int:
    """How many matrices a parameter of this role and (unstacked) shape contributes."""
    if role == "heads":
        return int(shape[0]) if len(shape) >= 3 else 1
    return 1 if role in ("matrix", "merged_heads", "kernel") else 0


def _row(name: str, module: str, shape, role: str, why: str, certainty: Certainty, buffer: bool = False) -> RoleRow:
    shape = tuple(int(d) for d in shape)
    return {"name": name, "module": module, "shape": shape, "role": role, "why": why, "certainty": certainty,
            "matrices": matrix_count(role, shape), "buffer": buffer}


def _given(name: str, overrides: dict[str, str] | None) -> tuple[str, str] | None:
    for pattern, role in (overrides or {}).items():
        if fnmatch.fnmatchcase(name, pattern):
            return role, f"--roles {pattern!r}"
    return None


def model_roles(model: nn.Module, overrides: dict[str, str] | None = None, buffers: bool = True) -> list[RoleRow]:
    """Every parameter of ``model`` (``named_parameters`` names) and, with ``buffers``, every
    persistent buffer: its role, known from the module that owns it (module docstring)."""
    hf = _hf_embeddings(model)
    rows: dict[str, RoleRow] = {}
    for prefix, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            full = f"{prefix}.{name}" if prefix else name
            if full in rows or p is None:
                continue
            rows[full] = _row(full, type(module).__name__, p.shape, *_by_module(module, name, p.ndim, hf), "known")
    for prefix, module in model.named_modules():  # declarations override the type rules
        for rel, role in (getattr(type(module), "vt_metric_roles", None) or {}).items():
            if role not in ROLES:
                raise ValueError(f"{type(module).__name__}.vt_metric_roles[{rel!r}] = {role!r}: use one of {ROLES}")
            full = f"{prefix}.{rel}" if prefix else rel
            if full in rows:
                r = rows[full]
                rows[full] = _row(full, r["module"], r["shape"], role,
                                  f"declared by {type(module).__name__}.vt_metric_roles", "known")
    params = set(dict(model.named_parameters()))
    rows = {n: r for n, r in rows.items() if n in params}  # a tied parameter under its first name only
    if buffers:
        state = model.state_dict(keep_vars=True)
        for full, b in model.named_buffers():
            if full in state and full not in rows:
                owner = model.get_submodule(full.rpartition(".")[0]) if "." in full else model
                rows[full] = _row(full, type(owner).__name__, b.shape, "exclude", "a buffer: never a weight",
                                  "known", buffer=True)
    for name, r in rows.items():
        if (g := _given(name, overrides)) is not None and not r["buffer"]:
            rows[name] = _row(name, r["module"], r["shape"], *g, "given")
    return list(rows.values())


def parameter_roles(model: nn.Module, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Every parameter of ``model`` (its ``named_parameters`` name) and its role."""
    return {r["name"]: r["role"] for r in model_roles(model, overrides, buffers=False)}


def role_table(model: nn.Module, overrides: dict[str, str] | None = None) -> list[RoleRow]:
    """One row per parameter and buffer of ``model``: for `vt hooks` and `vt import --dry-run`."""
    return model_roles(model, overrides)


# ------------------------------------------------------------------------------------------------
# a plain state_dict: roles guessed from names, shapes and values

_BUFFER_NAMES = re.compile(r"(mask|\w+_mask|masked_bias|running_mean|running_var|num_batches_tracked|inv_freq|"
                           r"position_ids|\w*_cached|\w*cached_\w+)")
_NORM_PART = re.compile(r"(?i)(.*norm.*|ln(_?\w{1,2}|\d+)?|bn\d*|gn\d*)")
_EMBED_PART = re.compile(r"(?i:.*embed.*)|wte|wpe|lm_head|W_E|W_pos|W_U")
_CONV_PART = re.compile(r"(?i).*conv.*")


def _mask_values(t: Any) -> bool:
    """Whether a tensor holds only 0 and 1 (both): read a block at a time, stopping at the first
    other value, so that a large weight costs neither a sorted copy nor more than a block."""
    import numpy as np

    a = np.asarray(t.detach().cpu().float().numpy() if hasattr(t, "detach") else t)
    if a.ndim < 2 or a.size == 0:
        return False
    flat, zero, one = a.reshape(-1), False, False
    for i in range(0, flat.size, 2**20):
        block = flat[i:i + 2**20]
        z, o = block == 0, block == 1
        if not (z | o).all():
            return False
        zero, one = zero or bool(z.any()), one or bool(o.any())
    return zero and one


def _owner(name: str) -> str:
    return name.rpartition(".")[0]


def tensor_roles(tensors: dict[str, Any], overrides: dict[str, str] | None = None) -> list[RoleRow]:
    """Each tensor of a plain ``state_dict`` (name -> tensor or array, the floating-point ones the
    study stores): its role, guessed by the rules of the module docstring, or given in ``overrides``."""
    shapes = {n: tuple(t.shape) for n, t in tensors.items()}
    norm_owners = {_owner(n) for n, s in shapes.items() if n.endswith(".weight") and len(s) == 1}
    norm_owners |= {_owner(n) for n in shapes if n.rpartition(".")[2] in ("running_mean", "running_var")}
    rows = []
    for name, shape in shapes.items():
        parts, last = name.split("."), name.rpartition(".")[2]
        g = _given(name, overrides)
        if g is not None:
            rows.append(_row(name, "state_dict", shape, *g, "given"))
            continue
        if _BUFFER_NAMES.fullmatch(last):
            role, why = "exclude", f"a buffer, by its name ({last})"
        elif _mask_values(tensors[name]):
            role, why = "exclude", "a buffer: a mask, by its values (only 0 and 1)"
        elif _owner(name) in norm_owners or any(_NORM_PART.fullmatch(p) for p in parts[:-1]):
            role, why = "exclude", "a normalisation layer, by its name or 1-D weight"
        elif any(_EMBED_PART.fullmatch(p) for p in parts):
            role, why = "exclude", "an embedding or unembedding, by its name"
        else:
            role, why = _by_ndim(len(shape), "tensor", conv=any(_CONV_PART.fullmatch(p) for p in parts))
        rows.append(_row(name, "state_dict", shape, role, why, "guessed"))
    return rows


def read_roles_file(path: str) -> dict[str, str]:
    """A ``--roles`` file: a TOML or JSON table of tensor-name globs -> role (first match wins)."""
    from vt_core.storage.location import location

    loc = location(path)
    try:
        text = loc.read_text()
    except OSError as err:
        raise RolesFileError(f"--roles {path}: cannot read it ({err})") from err
    try:
        data = json.loads(text) if path.endswith(".json") else _toml(text)
    except ValueError as err:
        raise RolesFileError(f"--roles {path}: not valid {'JSON' if path.endswith('.json') else 'TOML'} "
                             f"({err}); write lines like \"blocks.*.attn.W_O\" = \"matrix\"") from err
    if not isinstance(data, dict) or not data:
        raise RolesFileError(f"--roles {path}: holds no table of glob = role")
    bad = {k: v for k, v in data.items() if v not in ROLES}
    if bad:
        k, v = next(iter(bad.items()))
        raise RolesFileError(f"--roles {path}: {k!r} = {v!r} is not a role; use one of {', '.join(ROLES)}")
    return {str(k): str(v) for k, v in data.items()}


def _toml(text: str) -> dict:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(str(err)) from err


def unmatched_globs(overrides: dict[str, str], names: list[str]) -> list[str]:
    """The ``--roles`` globs that match no tensor (a typo would otherwise change nothing silently)."""
    return [p for p in overrides if not any(fnmatch.fnmatchcase(n, p) for n in names)]
