"""vt_core.config.usercode: user code (metric plugins, a model factory) runs only when asked, once."""

from __future__ import annotations

import pytest

from tests.helpers import tiny_dict
from vt_core.config.study_config import ConfigError, parse_config
from vt_core.config.usercode import ModelFactoryError, load_user_code, resolve_factory


def _payload(tmp_path, name: str) -> tuple[str, object]:
    marker = tmp_path / f"{name}.ran"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "import torch\n"
        "def make(n_classes=2, **kw):\n    return torch.nn.Linear(3, n_classes)\n")
    return name, marker


def test_parsing_a_config_runs_no_user_code(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin, plugin_ran = _payload(tmp_path, "vt_test_plugin_a")
    factory, factory_ran = _payload(tmp_path, "vt_test_factory_a")
    cfg = parse_config(tiny_dict(tmp_path, metrics={"plugins": [plugin], "names": ["l2"]},
                                 model={"factory": f"{factory}:make"}))
    assert not plugin_ran.exists() and not factory_ran.exists()
    assert load_user_code(cfg) is cfg
    assert plugin_ran.exists() and factory_ran.exists()


def test_a_plugin_metric_name_is_checked_after_import(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin, _ = _payload(tmp_path, "vt_test_plugin_b")
    cfg = parse_config(tiny_dict(tmp_path, metrics={"plugins": [plugin], "names": ["l2", "not_registered_xyz"]}))
    with pytest.raises(ConfigError, match=r"unknown metric\(s\) \['not_registered_xyz'\]"):
        load_user_code(cfg)


def test_factory_errors_name_the_field():
    with pytest.raises(ModelFactoryError, match="model.factory 'json:not_there'"):
        resolve_factory("json:not_there")
    with pytest.raises(ModelFactoryError, match="cannot import 'no_such_pkg_xyz'"):
        resolve_factory("no_such_pkg_xyz:make")
