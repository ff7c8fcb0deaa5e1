import json

import numpy as np
import pytest

from vt_core import analysis, stages


def random_model(k=3, F=4, seed=0):
    rng = np.random.default_rng(seed)
    startprob = rng.dirichlet(np.ones(k))
    transmat = rng.dirichlet(np.ones(k), size=k)
    means = rng.normal(size=(k, F)) * 2
    a = rng.normal(size=(k, F, F))
    covars = a @ a.transpose(0, 2, 1) + np.eye(F)
    return startprob, transmat, means, covars


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transition_gradient_matches_finite_differences(seed):
    sp, A, mu, cov = random_model(seed=seed)
    z = np.random.default_rng(seed + 10).normal(size=(6, 4)) * 2
    t, j = 3, 1  # d log p(s_4 = j | z_1..4) / d z_4
    lf = analysis.log_filtered(z, sp, A, mu, cov)
    grad = analysis.transition_gradient(z[t + 1], lf[t], j, A, mu, cov)
    eps = 1e-6
    num = np.empty(4)
    for f in range(4):
        zp, zm = z.copy(), z.copy()
        zp[t + 1, f] += eps
        zm[t + 1, f] -= eps
        num[f] = (analysis.log_filtered_posterior(zp, t + 1, j, sp, A, mu, cov)
                  - analysis.log_filtered_posterior(zm, t + 1, j, sp, A, mu, cov)) / (2 * eps)
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-7)


def test_explanations_are_per_feature_absolute_means_at_t_plus_1():
    sp, A, mu, cov = random_model()
    z = np.random.default_rng(5).normal(size=(8, 4))
    path = np.array([0, 0, 1, 1, 1, 2, 2, 2])
    out = analysis.explain_transitions([z], [path], sp, A, mu, cov)
    assert set(out) == {(0, 1), (1, 2)}
    lf = analysis.log_filtered(z, sp, A, mu, cov)
    g = analysis.transition_gradient(z[2], lf[1], 1, A, mu, cov)  # at t+1 = 2, not at t = 1
    np.testing.assert_allclose(out[(0, 1)], np.abs(g))
    assert out[(0, 1)].shape == (4,) and (out[(0, 1)] >= 0).all()


def test_state_graph_prunes_unused_edges():
    A = np.full((3, 3), 1 / 3)
    g = analysis.state_graph(A, [np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])], [7, 8])
    assert set(g.edges) == {(0, 1)}  # 1->2, 0->2 etc. have p > 0 but no seed takes them
    assert g.edges[0, 1]["n_seeds"] == 2 and g.edges[0, 1]["seeds"] == [7, 8]
    assert g.nodes[0]["stay"] == pytest.approx(1 / 3)


def test_convergence_step_uses_step_order():
    steps = np.array([30, 10, 20, 0])
    acc = np.array([0.95, 0.5, 0.92, 0.1])
    assert analysis.convergence_step(steps, acc, 0.9) == 20
    assert analysis.convergence_step(steps, acc, 0.99) is None


def test_study_analysis_files(analysed_study):
    a = json.loads((analysed_study / stages.ANALYSIS_JSON).read_text())
    k = a["chosen_k"]
    assert len(a["states"]) == k
    assert sum(s["occupancy"] for s in a["states"]) == pytest.approx(1.0)
    firsts = [s["first_step_mean"] for s in a["states"] if s["first_step_mean"] is not None]
    assert firsts == sorted(firsts)  # canonical order: by mean first-visit step
    sel = json.loads((analysed_study / "hmm" / "selection.json").read_text())
    assert sel["chosen_k"] == min((t for t in sel["table"] if t["n_ok"]), key=lambda t: t["bic"])["k"]
    paths = json.loads((analysed_study / "hmm" / "paths.json").read_text())
    for p in paths.values():
        assert p["steps"] == sorted(p["steps"])
    assert stages.analysis_is_current(analysed_study, [0, 1, 2])
    assert not stages.analysis_is_current(analysed_study, [0, 1])
