"""The shipped custom-model example, run end to end through `vt run` (smaller)."""

import json
import tomllib

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.helpers import ROOT, write_toml

pytestmark = pytest.mark.flow  # runs a Prefect flow or the `vt` command


def test_custom_model_example_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the factory path is relative to the repository, as in the README
    d = tomllib.loads((ROOT / "examples" / "custom_model.toml").read_text())
    d |= {"seeds": 3, "output_dir": str(tmp_path / "study")}
    d["training"]["epochs"] = 4
    d["checkpoints"] = {"every_steps": 4}
    d["hmm"] |= {"max_states": 3, "restarts": 2, "features": ["l2", "spectral", "act_sparsity@hook_hidden", "test_accuracy"]}
    d["metrics"] = {"names": ["l2", "spectral", "act_sparsity"]}
    cfg = write_toml(d, tmp_path / "custom.toml")
    res = CliRunner().invoke(app, ["run", str(cfg)])
    assert res.exit_code == 0, res.output
    a = json.loads((tmp_path / "study" / "analysis.json").read_text())
    assert a["chosen_k"] >= 1 and len(a["states"]) == a["chosen_k"]
    layers = json.loads((tmp_path / "study" / "study.json").read_text())["config"]["model"]
    assert layers["factory"] == "examples.custom_model.nets:make_net"
