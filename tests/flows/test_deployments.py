import importlib
import inspect

import pytest
import yaml

from tests.helpers import ROOT
from vt_core.config.study_config import load_config

pytestmark = pytest.mark.flow  # runs a Prefect flow or the `vt` command


def test_prefect_yaml_points_at_real_flows_and_configs():
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    assert spec["deployments"]
    for dep in spec["deployments"]:
        module, func = dep["entrypoint"].split(":")
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), func)
        params = inspect.signature(flow.fn).parameters
        assert set(dep["parameters"]) <= set(params)
        load_config(ROOT / dep["parameters"]["config_path"])
        assert dep["work_pool"]["name"] and dep["schedules"][0]["cron"]


def test_serve_script_names_a_valid_deployment():
    import runpy

    ns = runpy.run_path(str(ROOT / "deployments" / "serve.py"), run_name="not_main")
    load_config(ns["DEPLOYMENT"]["parameters"]["config_path"])
    assert ns["study_flow"].name == "vt-study"
