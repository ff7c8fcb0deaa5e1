import pytest

from tests.helpers import ROOT, tiny_dict
from vt_core.config.study_config import ConfigError, load_config, parse_config
from vt_core.config.usercode import load_user_code
from vt_core.names import PAPER_METRICS


def test_examples_load():
    for path in sorted((ROOT / "examples").glob("*.toml")):
        cfg = load_config(path)
        assert cfg.seeds and cfg.name


def test_seed_count_expands_and_defaults(tmp_path):
    cfg = parse_config(tiny_dict(tmp_path, seeds=4))
    assert cfg.seeds == [0, 1, 2, 3]
    assert cfg.metrics.names == list(PAPER_METRICS)
    assert cfg.hmm_features == list(PAPER_METRICS)


BAD = [
    ({"lerning_rate": 1}, "lerning_rate: unknown key"),
    ({"optimizer": {"lr": -1.0}}, "optimizer.lr"),
    ({"optimizer": {"lr": "fast"}}, "optimizer.lr"),
    ({"seeds": []}, "seeds"),
    ({"seeds": [1, 1]}, "repeated: [1]"),
    ({"seeds": 10**9}, "seeds=1000000000: at most 100,000 seeds in one study"),  # took all memory (issue 34)
    ({"nаme": "tiny"}, "its 2nd character 'а' is CYRILLIC SMALL LETTER A (U+0430), not ASCII"),
    ({"seeds": -3}, "seeds"),
    ({"model": {"name": "mlp", "hidden": [0]}}, "model.mlp.hidden.0"),
    ({"model": {"name": "lstm"}}, "model"),
    ({"data": {"name": "sparse_parity", "n_bits": 3, "k": 5}}, "k=5 relevant bits cannot exceed n_bits=3"),
    ({"data": {"name": "modular_addition", "p": 1}}, "data.modular_addition.p"),
    ({"data": {"name": "modular_addition", "train_fraction": 1.5}}, "train_fraction"),
    ({"training": {"epochs": 0}}, "training.epochs"),
    ({"training": {"epochs": 3, "loss": "hinge"}, "data": {"name": "modular_addition"}},
     "needs a binary task"),
    ({"checkpoints": {"every_epochs": 1, "every_steps": 5}}, "set exactly one of every_epochs, every_steps"),
    ({"checkpoints": {"every_epochs": None, "steps": [5, 3]}}, "strictly increasing"),
    ({"checkpoints": {"every_epochs": None, "log_spaced": 1}}, "checkpoints.log_spaced"),
    ({"training": {"epochs": 3, "device": "gpu0"}}, "training.device"),
    ({"hooks": {"capture": "gradients"}}, "hooks.capture"),
    ({"model": {"name": "resnet", "blocks": []}}, "model.resnet.blocks"),
    ({"model": {"name": "lenet5"}}, "needs images"),
    ({"model": {"factory": "no_such_pkg.nets:make"}}, "cannot import 'no_such_pkg.nets'"),
    ({"model": {"factory": "not a path"}}, "model.custom.factory"),
    ({"data": {"name": "mnist"}}, "data.mnist.root: required"),
    ({"metrics": {"plugins": ["no_such_plugin"]}}, "cannot import 'no_such_plugin'"),
    ({"hmm": {"max_states": 0}}, "hmm.max_states"),
    ({"hmm": {"holdout_fraction": 1.0}}, "hmm.holdout_fraction"),
    ({"metrics": {"names": ["l1", "entropy"]}}, "unknown metric(s) ['entropy']"),
    ({"hmm": {"features": ["l7"]}}, "hmm.features ['l7'] are not computed"),
    ({"hmm": {"covariance": "banded"}}, "hmm.covariance"),
    ({"name": "has space"}, "name"),
    ({"output_dir": "nosuch://bucket/studies/x"}, "unknown URL scheme 'nosuch'"),
    ({"output_dir": "sftp://host/studies/x"}, "pip install it beside vt"),  # paramiko is not installed
    ({"output_dir": "file://otherhost/studies/x"}, "a file:// URL names this machine"),
    ({"training": {"batch_size": 0}}, "training.batch_size"),
    ({"hooks": {"probe_size": -4}}, "hooks.probe_size"),
]


def test_file_url_output_dir_is_a_local_path(tmp_path):
    from vt_core.storage.study import prepare_study

    cfg = parse_config(tiny_dict(tmp_path, output_dir=(tmp_path / "my study").as_uri()))
    assert cfg.output_dir == str(tmp_path / "my study")
    assert prepare_study(cfg) == tmp_path / "my study" and (tmp_path / "my study" / "study.json").is_file()


@pytest.mark.parametrize("patch, message", BAD)
def test_bad_configs_name_the_field(tmp_path, patch, message):
    """Every bad field is refused, by parsing or (model factory, metric plugins) by the one call
    that imports user code at the edge."""
    with pytest.raises(ConfigError) as err:
        load_user_code(parse_config(tiny_dict(tmp_path, **patch)))
    assert message in str(err.value)


def test_missing_section_is_named(tmp_path):
    d = tiny_dict(tmp_path)
    del d["training"]
    with pytest.raises(ConfigError, match="training: required"):
        parse_config(d)


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_training_hash_ignores_seeds_and_analysis_settings(tmp_path):
    base = parse_config(tiny_dict(tmp_path))
    assert parse_config(tiny_dict(tmp_path, seeds=[5, 6], hmm={"max_states": 5})).training_hash() == base.training_hash()
    assert parse_config(tiny_dict(tmp_path, optimizer={"lr": 0.2})).training_hash() != base.training_hash()


@pytest.mark.parametrize("patch, message", [
    ({"hooks": {"weights": [], "activations": ["layers.1"], "probe_size": 8}}, "hooks.weights selects no parameter"),
    ({"metrics": {"exclude": ["*"]}}, "metrics.exclude = ['*'] leaves no weight matrix of the 4 stored parameters"),
    ({"metrics": {"exclude": ["layers.*.weight"]}}, "leaves no weight matrix"),
])
def test_validate_refuses_what_run_would_refuse_after_writing(tmp_path, patch, message):
    """Issue 34, item 21: configs `vt validate` accepted and `vt run` refused only after writing a
    study (no weight matrix for the metric stage) are refused by the checks both run, first."""
    from vt_core.training.preflight import check_config

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("*", r"\*")):
        check_config(parse_config(tiny_dict(tmp_path / "s", **patch)))
    assert not (tmp_path / "s").exists()
    check_config(parse_config(tiny_dict(tmp_path / "s", metrics={"exclude": ["layers.0.*"]})))  # one is left: fine
