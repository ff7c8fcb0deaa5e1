"""What the weight metrics read of a run store: the metrics' names, each stored parameter's role
and shape, which parameters are weight matrices and biases, and the layers a matrix gives. No
xarray here (the live watcher imports this without it: xarray and dask cost it most of a second)."""

from __future__ import annotations

import fnmatch
import functools
import json
from collections.abc import Mapping

import numpy as np

from vt_core.config.study_config import StudyConfig
from vt_core.errors import VtError
from vt_core.metrics.registry import LAYER_KINDS, get
from vt_core.metrics.roles import WEIGHT_ROLES, parameter_roles
from vt_core.names import SCALARS
from vt_core.storage.run_store import RunStore


class MetricsComputeError(VtError, RuntimeError):
    """Metrics cannot be computed or read as asked."""


def metric_names(config: StudyConfig) -> list[str]:
    """Every column of ``value``: the configured metrics, then the recorded scalars."""
    return list(config.metrics.names) + [s for s in SCALARS if s not in config.metrics.names]


def layer_metric_names(config: StudyConfig) -> list[str]:
    return [n for n in config.metrics.names if get(n).reads in LAYER_KINDS]


def _excluded(name: str, exclude: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in exclude)


def _fallback_role(ndim_stored: int) -> str:
    """A stored parameter that no rule names (``ndim_stored`` counts the step axis)."""
    return "matrix" if ndim_stored == 3 else "bias" if ndim_stored <= 2 else "heads"


@functools.lru_cache(maxsize=8)
def _roles_of_config(training_json: str) -> dict[str, str]:
    from vt_core.config.study_config import parse_config
    from vt_core.data import build_task
    from vt_core.models import build_model

    config = parse_config(json.loads(training_json))
    task = build_task(config.data, config.seeds[0])
    model = build_model(config.model, task, config.output_size(task.n_classes))
    return parameter_roles(model)


def store_roles(store: RunStore, config: StudyConfig) -> dict[str, str]:
    """Each stored parameter's role (:mod:`vt_core.metrics.roles`): from study.json for a study vt
    did not train (where ``--roles`` may have changed them), recorded in the store when
    training started, or (stores written before roles were recorded) from the config's model."""
    declared = getattr(config.model, "roles", None)
    if declared:  # a study vt did not train: the roles in study.json (known, guessed or given)
        return {name: entry.role for name, entry in declared.items()}
    roles = store.attrs.get("parameter_roles")
    if roles:
        return dict(roles)
    return _roles_of_config(json.dumps(config.model_dump(mode="json"), sort_keys=True))


def stored_shapes(store: RunStore) -> dict[str, tuple[int, ...]]:
    """Each stored weight parameter's shape (the step axis first), from the arrays' metadata alone
    (opening them as a Dataset imports dask: half a second of the live watcher's first look)."""
    return {str(n): tuple(a.shape) for n, a in store.root["weights"].arrays() if n != "step"}


def weight_arrays(shapes: Mapping[str, tuple[int, ...]], config: StudyConfig,
                  roles: dict[str, str]) -> tuple[list[str], list[str]]:
    """(weight parameters, bias parameters) that the weight metrics read, sorted by name: by their
    roles, less any ``metrics.exclude`` glob. ``shapes``: :func:`stored_shapes`."""
    # sorted: zarr lists members in no fixed order, and layer labels must not depend on it
    params = sorted(str(v) for v in shapes if not _excluded(str(v), list(config.metrics.exclude)))
    role = {p: roles.get(p, _fallback_role(len(shapes[p]))) for p in params}
    return [p for p in params if role[p] in WEIGHT_ROLES], [p for p in params if role[p] == "bias"]


def matrix_layers(shapes: Mapping[str, tuple[int, ...]], params: list[str],
                  roles: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    """(parameter, role, layer labels) for each weight parameter: a head-split parameter gives
    one layer per head (``blocks.0.attn.W_Q.2``), any other parameter one layer."""
    out = []
    for p in params:
        role = roles.get(p, _fallback_role(len(shapes[p])))
        n = int(np.prod(shapes[p][1:-2])) if role == "heads" else 1
        out.append((p, role, [f"{p}.{h}" for h in range(n)] if role == "heads" else [p]))
    return out
