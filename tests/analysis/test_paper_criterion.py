"""hmm.criterion = "paper": vt's implementation of the paper's published model selection equals an
independent transcription of the paper's code (tests/reference/paper_selection.py, written by a
helper who had not read vt's) on the same table: the same split, the same k, mean held-out BICs
to 1e-9 relative with the same initialisations. And vt reports it beside its own criterion."""

import numpy as np
import pytest

from tests.planted import sample_study
from tests.reference.paper_selection import paper_model_selection
from vt_core.analysis.hmm import restart_seed
from vt_core.analysis.trajectories import analyse_trajectories

pytestmark = pytest.mark.minutes


@pytest.mark.parametrize("n_states,n_seeds,rng,cov", [(3, 10, 0, "diag"), (4, 12, 2, "full")])
def test_paper_criterion_equals_the_transcription(n_states, n_seeds, rng, cov):
    p = sample_study(n_states, n_seeds, rng=rng)
    features = list(p.features)
    hmm = {"criterion": "paper", "max_states": 5, "restarts": 2, "covariance": cov, "bootstrap": 0, "cv_folds": 0,
           "seed": 3}
    res = analyse_trajectories(p.table, features=features, seed="seed", step="step", convergence="test_accuracy",
                               hmm=hmm)
    sel = res["selection"]
    ref = paper_model_selection(p.table, features, max_components=5, bootstrap=5, cov_type=cov, n_iter=10,
                                first_n=None, random_state=lambda k, b: restart_seed(3, k, b))
    ours = sel["paper"]
    assert ours["train_runs"] == ref["train_runs"] and ours["test_runs"] == ref["test_runs"]
    np.testing.assert_allclose([t["mean_heldout_bic"] for t in ours["table"]], ref["bics"], rtol=1e-9)
    np.testing.assert_allclose([t["mean_heldout_ll"] for t in ours["table"]], ref["mean_scores"], rtol=1e-9)
    assert ours["chosen_k"] == ref["chosen_k"] and res["chosen_k"] == ref["chosen_k"]
    assert sel["criterion"] == "paper" and sel["criteria"]["paper"] == ref["chosen_k"]
    assert sel["bic_k"] == sel["criteria"]["bic"]


def test_vt_reports_the_papers_k_beside_its_own():
    p = sample_study(3, 10, rng=0)
    res = analyse_trajectories(p.table, features=list(p.features), seed="seed", step="step",
                               convergence="test_accuracy",
                               hmm={"max_states": 4, "restarts": 2, "covariance": "diag", "bootstrap": 0, "seed": 0})
    sel = res["selection"]
    assert sel["criterion"] == "bic" and sel["criteria"]["paper"] == sel["paper"]["chosen_k"] is not None
