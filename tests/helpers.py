"""What tests share, in one place: the repository root, a tiny study config, TOML written from a
dict, a free loopback port, and a run store's committed arrays. Fixtures live in the conftest files;
everything here is a plain function."""

from __future__ import annotations

import copy
import json
import re
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_dict(out: Path, **over) -> dict:
    """A sparse-parity study that trains in about a second per seed. A section given in ``over`` is
    merged into the default one when it is of the same kind (same ``name``, no ``factory``), and
    replaces it otherwise."""
    d = {
        "name": "tiny",
        "seeds": [0, 1, 2],
        "output_dir": str(out),
        "model": {"name": "mlp", "hidden": [32]},
        "data": {"name": "sparse_parity", "n_bits": 8, "k": 2, "n_train": 256, "n_test": 64},
        "optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": 0.01},
        "training": {"epochs": 12, "batch_size": 32, "loss": "hinge"},
        "checkpoints": {"every_epochs": 1},
        "hooks": {"activations": ["layers.1"], "probe_size": 8},
        "hmm": {"max_states": 3, "restarts": 2, "covariance": "diag", "bootstrap": 4},
    }
    for key, value in over.items():
        same_kind = (isinstance(value, dict) and isinstance(d.get(key), dict) and "factory" not in value
                     and value.get("name", d[key].get("name")) == d[key].get("name"))
        d[key] = {**d[key], **value} if same_kind else value
    return copy.deepcopy(d)


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(type(v))


def write_toml(d: dict, path: Path) -> Path:
    """``d`` as TOML, one top-level key per line (tables inline); ``None`` values are left out."""
    path.write_text("\n".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in d.items() if v is not None) + "\n")
    return path


def free_port() -> int:
    """A TCP port free on the loopback interface (for servers a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def store_arrays(store_path: Path) -> dict:
    """Every committed row of every array of a run store, by name (``weights/<param>`` ...)."""
    from vt_core.storage.run_store import RunStore

    store = RunStore(store_path, mode="r")
    out = {name: arr[: store.committed] if arr.ndim else arr[()] for name, arr in store.root.arrays()}  # 0-d: seed
    for g in ("weights", "activations"):
        if g in store.root:
            out |= {f"{g}/{name}": arr[: store.committed] for name, arr in store.root[g].arrays()}
    return out


def committed_steps(store_path: Path) -> int:
    """The committed count, read the cheap way a poller would (0 while the store does not exist)."""
    try:
        return json.loads((store_path / "zarr.json").read_text())["attributes"]["committed_steps"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def assert_reads_back(study, steps_per_seed: dict[int, list[int]], metric: str = "l2"):
    """Analyse ``study`` (metrics, states) through vt_core, then check that it reads back: the
    export has one row per committed (seed, step) with the metric and the decoded state, and
    open_study shows the metric for each of them — whatever epochs the study knows (issue 30, item 4)."""
    import numpy as np

    from vt_core import stages
    from vt_core.report.datatree import open_study
    from vt_core.report.export import checkpoint_table

    stages.analyse(study)
    tree = open_study(study)
    table = checkpoint_table(tree)
    want = sorted((s, t) for s, steps in steps_per_seed.items() for t in steps)
    assert sorted(zip(table["seed"], table["step"])) == want
    assert np.isfinite(table[metric]).all() and table["state"].notna().all()
    values = tree["metrics"]["value"].sel(metric=metric)
    for seed, steps in steps_per_seed.items():
        assert np.isfinite(values.sel(seed=seed, step=steps)).all()
    return table
