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


def test_a_scheduled_run_gets_its_own_study_each_night(tmp_path):
    """Issue 34, item 15: the nightly deployment re-ran one config into one study, so every night
    after the first was a no-op. Its ``output_dir`` template gives each night its own study."""
    import datetime

    from flows.study import study_flow
    from tests.helpers import tiny_dict, write_toml
    from vt_core.config.study_config import ConfigError, with_output_dir

    cfg = write_toml(tiny_dict(tmp_path / "base", seeds=[0, 1], training={"epochs": 2},
                               hmm={"max_states": 2, "bootstrap": 0, "cv_folds": 0}), tmp_path / "c.toml")
    result = study_flow(config_path=str(cfg), output_dir=str(tmp_path / "nightly-{date}"))
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    assert result["study"] == str(tmp_path / f"nightly-{today}")
    assert (tmp_path / f"nightly-{today}" / "analysis.json").is_file() and not (tmp_path / "base").exists()

    config = load_config(cfg)
    nights = [with_output_dir(config, str(tmp_path / "n-{date}-{time}"), datetime.datetime(2026, 12, d, 3))
              for d in (1, 2)]
    assert [c.output_dir for c in nights] == [str(tmp_path / f"n-2026-12-0{d}-030000") for d in (1, 2)]
    assert nights[0].training_hash() == config.training_hash()  # the same training, elsewhere
    with pytest.raises(ConfigError, match=r"\{night\}|'night'"):
        with_output_dir(config, "studies/x-{night}")
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    assert "{date}" in spec["deployments"][0]["parameters"]["output_dir"]
