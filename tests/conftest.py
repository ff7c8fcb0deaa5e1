import json
import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from vt_core.config.study_config import parse_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tiny_dict(out: Path, **over) -> dict:
    """A sparse-parity study that trains in about a second per seed."""
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
        if same_kind:
            d[key] = {**d[key], **value}
        else:
            d[key] = value
    return d


def free_port() -> int:
    """A TCP port free on the loopback interface (for servers a test starts)."""
    import socket

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


@pytest.fixture
def tiny_config(tmp_path):
    return parse_config(tiny_dict(tmp_path / "study"))


@pytest.fixture(scope="session")
def analysed_study(tmp_path_factory):
    """A tiny study trained and analysed through vt_core alone (no Prefect)."""
    from vt_core import stages
    from vt_core.report.dashboard import build_dashboard
    from vt_core.stages.train import train_seed
    from vt_core.storage.study import prepare_study

    config = parse_config(tiny_dict(
        tmp_path_factory.mktemp("analysed") / "study", checkpoints={"every_epochs": None, "every_steps": 2},
        hmm={"features": ["l2", "spectral", "code_sparsity", "mean_singular_value", "var_w", "mean_b",
                          "train_loss", "test_accuracy"]}))
    study = prepare_study(config)
    for seed in config.seeds:
        train_seed(study, seed)
    stages.analyse(study)
    build_dashboard(study)
    return study
