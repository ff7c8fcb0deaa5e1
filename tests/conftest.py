import pytest  # noqa: E402

import tasks  # noqa: F401  (vt's Prefect defaults, analytics off, before anything imports Prefect)
from tests.helpers import tiny_dict  # noqa: E402
from vt_core.config.study_config import parse_config  # noqa: E402


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
