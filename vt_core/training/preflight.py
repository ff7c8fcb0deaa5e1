"""Everything a config must satisfy before anything is written: :func:`check_config`, the one
function behind `vt validate CONFIG` and `vt run CONFIG` (and the study flow), so that neither
accepts what the other refuses and a refused config never touches its ``output_dir``.

Beyond the fields' own types and ranges (:mod:`vt_core.config.study_config`): the user code it names imports,
the device exists, the task and the model build, every hookpoint and parameter glob matches, the
probe batch and the checkpoint schedule fit the run, the HMM features exist and its settings are
possible, and the output directory can hold this study (:func:`vt_core.storage.study.check_output_dir`).
Nothing here writes.
"""

from __future__ import annotations

from typing import TypedDict

from vt_core.config.study_config import ConfigError, StudyConfig
from vt_core.errors import VtError
from vt_core.names import is_function_feature
from vt_core.storage.location import location
from vt_core.storage.study import check_output_dir


class Checked(TypedDict):
    """What `vt validate` prints about an accepted config."""

    name: str
    model: str
    n_parameters: int
    seeds: int
    weight_arrays: int
    hooks: list[str]
    total_steps: int
    checkpoints: int
    study: str


def _field(field: str, err: Exception) -> ConfigError:
    return ConfigError(f"{field}: {err}")


def check_device(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= n:
            raise ConfigError(f"training.device = {device!r}: this machine has {n} CUDA device(s); "
                              f"use \"cpu\" or \"auto\"")
    if device == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                and torch.backends.mps.is_available()):
        raise ConfigError("training.device = 'mps': Apple's MPS is not available here; use \"cpu\" or \"auto\"")


def check_config(cfg: StudyConfig) -> Checked:
    """Raise a :class:`ConfigError` (naming the field) for anything that would fail later."""
    from vt_core.config.usercode import load_user_code
    from vt_core.data import build_task
    from vt_core.models import build_model
    from vt_core.models.hooks import select_hookpoints, select_parameters
    from vt_core.training.position import BatchPosition

    load_user_code(cfg)
    check_device(cfg.training.device)
    try:
        task = build_task(cfg.data, cfg.seeds[0])
    except (VtError, ValueError, OSError) as err:
        raise _field("data", err) from None
    _check_size(cfg)
    try:
        model = build_model(cfg.model, task, cfg.output_size(task.n_classes))
    except (VtError, ValueError, TypeError, RuntimeError, MemoryError) as err:
        raise _field("model", err) from None
    try:
        hooks = select_hookpoints(model, cfg.hooks.activations) if cfg.hooks.activations else []
    except VtError as err:
        raise _field("hooks.activations", err) from None
    try:
        params = select_parameters(model, cfg.hooks.weights)
    except VtError as err:
        raise _field("hooks.weights", err) from None
    _check_matrices(cfg, model, params)
    if cfg.hooks.probe_size > len(task.x_test):
        raise ConfigError(f"hooks.probe_size = {cfg.hooks.probe_size} is more than the {len(task.x_test)} held-out "
                          f"examples the probe batch is drawn from; lower it")
    _check_examples(cfg, task)
    try:
        position = BatchPosition(cfg, len(task.x_train), cfg.seeds[0])
    except VtError as err:
        raise _field("checkpoints", err) from None
    if cfg.training.lr_schedule != "constant" and cfg.training.warmup_steps > position.total_steps:
        raise ConfigError(f"training.warmup_steps = {cfg.training.warmup_steps} is past the last step "
                          f"{position.total_steps}; lower it")
    n_ckpt = position.expected_checkpoints
    _check_hmm(cfg, params, hooks, n_ckpt)
    check_output_dir(cfg)
    return {"name": cfg.name, "model": cfg.model.name, "n_parameters": sum(p.numel() for p in model.parameters()),
            "seeds": len(cfg.seeds), "weight_arrays": len(params), "hooks": hooks,
            "total_steps": position.total_steps, "checkpoints": n_ckpt, "study": str(location(cfg.output_dir))}


def _check_matrices(cfg: StudyConfig, model, params: list[str]) -> None:
    """The metric stage needs at least one weight matrix among the stored parameters once the
    module rules and ``metrics.exclude`` are applied (:func:`vt_core.metrics.params.weight_arrays`):
    refused here, not after training (`vt run` wrote a whole study before it failed)."""
    import fnmatch

    from vt_core.metrics.roles import WEIGHT_ROLES, parameter_roles

    if not params:
        raise ConfigError("hooks.weights selects no parameter, and the metrics read weight matrices; select some "
                          "(the default [\"*\"] takes every one; `vt hooks CONFIG` lists them)")
    roles = parameter_roles(model)
    kept = [p for p in params if not any(fnmatch.fnmatchcase(p, pat) for pat in cfg.metrics.exclude)]
    if not any(roles.get(p) in WEIGHT_ROLES for p in kept):
        raise ConfigError(f"metrics.exclude = {list(cfg.metrics.exclude)} leaves no weight matrix of the "
                          f"{len(params)} stored parameters ({', '.join(params[:6])}{', ...' if len(params) > 6 else ''}) "
                          f"for the weight metrics; exclude less (`vt hooks CONFIG` shows each parameter's role)")


#: more parameters than this is no model a study of training dynamics trains (Pythia-12B has 1.2e10)
MAX_PARAMETERS = 20_000_000_000


def _check_size(cfg: StudyConfig) -> None:
    """Refuse a built-in model too large to build before building it (an MLP of 2,000 layers of
    4,096 would take 130 GB)."""
    m = cfg.model
    widths = getattr(m, "hidden", None)
    if widths is not None:
        n, field = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True)), "model.hidden"
    elif m.name == "transformer":
        n = m.n_layers * (4 * m.d_model * m.n_heads * m.d_head + 2 * m.d_model * m.d_mlp)  # type: ignore[union-attr]
        field = "model (n_layers, d_model, n_heads, d_head, d_mlp)"
    elif m.name == "resnet":
        n, field = 9 * (8 * m.width) ** 2 * sum(m.blocks) * 2, "model (width, blocks)"  # type: ignore[union-attr]
    else:
        return
    if n > MAX_PARAMETERS:
        raise ConfigError(f"{field}: about {n:,.0f} parameters, more than vt trains ({MAX_PARAMETERS:,}); "
                          f"make the model smaller")


def _check_examples(cfg: StudyConfig, task) -> None:
    """``hooks.per_example_loss``: as many examples in each split, and one data set for every seed
    (the function's PCA compares the seeds on the same examples)."""
    n = cfg.hooks.per_example_loss
    if not n:
        if any(is_function_feature(f) for f in cfg.hmm.features or []):
            raise ConfigError("hmm.features function_pc1, ... are the PCs of per-example losses: set "
                              "hooks.per_example_loss = N (examples of each split recorded at every checkpoint)")
        return
    smaller = min(len(task.y_train), len(task.y_test))
    if n > smaller:
        raise ConfigError(f"hooks.per_example_loss = {n} is more than the {smaller} examples of the smaller split "
                          f"({len(task.y_train)} training, {len(task.y_test)} held-out); lower it")
    shared = cfg.data.name in ("mnist", "cifar10", "cifar100") or getattr(cfg.data, "seed", None) is not None
    if not shared and len(cfg.seeds) > 1:
        raise ConfigError(f"hooks.per_example_loss = {n} needs the same examples for every seed, and data.seed is "
                          f"unset (each seed draws its own data); set data.seed = 0 (or any seed)")


def _check_hmm(cfg: StudyConfig, params: list[str], hooks: list[str], n_checkpoints: int) -> None:
    """Features that name a layer must name one that is stored; the settings must be possible."""
    from vt_core.metrics.cells import AGGREGATIONS
    from vt_core.models.hooks import INPUT_SUFFIX

    layers = set(params) | set(hooks) | {h + INPUT_SUFFIX for h in hooks}
    for f in cfg.hmm.features or []:
        _, at, layer = f.partition("@")
        if at and not layer:
            raise ConfigError(f"hmm.features: {f!r} names no layer after '@'; write metric@LAYER or "
                              f"metric@{'/'.join(AGGREGATIONS)}")
        if not layer or layer in AGGREGATIONS:  # the model average, or another aggregation over layers
            continue
        base = layer.rsplit(".", 1)[0] if layer.rsplit(".", 1)[-1].isdigit() else layer
        if layer not in layers and base not in params:
            raise ConfigError(f"hmm.features: {f!r} names layer {layer!r}, which is not stored; stored "
                              f"parameters and hookpoints: {sorted(layers)[:12]}")
    n_features = len(cfg.hmm_features)
    if cfg.hmm.pca_components is not None and cfg.hmm.pca_components > n_features:
        raise ConfigError(f"hmm.pca_components = {cfg.hmm.pca_components} is more than the {n_features} "
                          f"features; lower it or leave it out")
    n_obs = len(cfg.seeds) * n_checkpoints
    if cfg.hmm.max_states > n_obs:
        raise ConfigError(f"hmm.max_states = {cfg.hmm.max_states} is more than the {n_obs} observations "
                          f"({len(cfg.seeds)} seeds x {n_checkpoints} checkpoints); lower it")
