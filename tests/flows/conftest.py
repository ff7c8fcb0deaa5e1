import json
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config, items):
    """Every test here runs a Prefect flow or the `vt` command: marked ``flow`` (not in test-fast)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.flow)


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    """One temporary Prefect server (SQLite) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(type(v))


def write_toml(d: dict, path: Path) -> Path:
    path.write_text("\n".join(f"{k} = {_toml_value(v)}" for k, v in d.items() if v is not None) + "\n")
    return path
