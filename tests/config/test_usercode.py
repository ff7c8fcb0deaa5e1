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


@pytest.mark.parametrize("body, raised", [
    ("x = 1\nraise RuntimeError('the plugin is broken')\n", "RuntimeError: the plugin is broken"),
    ("def f(:\n", "SyntaxError"),
    ("from vt_core.metrics.registry import register_metric\n"
     "@register_metric('l2', reads='matrix')\ndef mine(w, s):\n    return w.sum()\n", "MetricError"),
])
def test_a_plugin_that_raises_at_import_is_named_with_its_error(tmp_path, monkeypatch, body, raised):
    """Issue 34, item 20: a plugin raising at import ended with exit 1 and no clear line; now a
    ConfigError (exit 2 in the CLI) naming the plugin, what it raised, where, and the fix."""
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"vt_test_raising_{abs(hash(body)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(body)
    cfg = parse_config(tiny_dict(tmp_path / "s", metrics={"plugins": [name]}))
    with pytest.raises(ConfigError) as err:
        load_user_code(cfg)
    text = str(err.value)
    assert text.startswith(f"metrics.plugins: importing {name!r} raised {raised}"), text
    assert f"{name}.py" in text and "take it out of metrics.plugins" in text

    from typer.testing import CliRunner

    from flows.cli import app
    from tests.helpers import write_toml

    res = CliRunner().invoke(app, ["validate", str(write_toml(tiny_dict(tmp_path / "s", metrics={"plugins": [name]}),
                                                              tmp_path / "c.toml"))])
    assert res.exit_code == 2 and "Traceback" not in res.output and raised.split(":")[0] in res.output


def test_a_factory_module_that_raises_at_import_is_named(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "vt_test_bad_factory.py").write_text("raise ValueError('no weights here')\n")
    with pytest.raises(ModelFactoryError, match=r"importing 'vt_test_bad_factory' raised ValueError: no weights here "
                                                r"\(.*vt_test_bad_factory.py, line 1\); fix the module"):
        resolve_factory("vt_test_bad_factory:make")
