import json

import numpy as np
import pytest

from tests.helpers import ROOT
from vt_core import stages
from vt_core.analysis import transitions as analysis
from vt_core.config.study_config import load_config
from vt_core.stages.explain import analysis_is_current
from vt_core.storage.location import read_json


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
    a = json.loads((analysed_study / "analysis.json").read_text())
    k = a["chosen_k"]
    assert len(a["states"]) == k
    assert sum(s["occupancy"] for s in a["states"]) == pytest.approx(1.0)
    firsts = [s["first_step_mean"] for s in a["states"] if s["first_step_mean"] is not None]
    assert firsts == sorted(firsts)  # canonical order: by mean first-visit step
    sel = json.loads((analysed_study / "hmm" / "selection.json").read_text())
    assert sel["chosen_k"] == min((t for t in sel["table"] if t["n_ok"]), key=lambda t: t["bic"])["k"]
    paths = read_json(analysed_study / "hmm" / "paths.json")  # verified; its checksum key removed
    for p in paths.values():
        assert p["steps"] == sorted(p["steps"])
    assert analysis_is_current(analysed_study, [0, 1, 2])
    assert not analysis_is_current(analysed_study, [0, 1])


def test_time_in_states_counts_steps():
    occ = analysis.time_in_states(np.array([0, 0, 1, 2, 2]), np.array([0, 10, 30, 60, 100]), 3)
    np.testing.assert_array_equal(occ, [30, 30, 40])


def test_regression_recovers_a_known_linear_law():
    rng = np.random.default_rng(0)
    occ = {s: rng.uniform(0, 100, 3) for s in range(12)}
    conv = {s: int(5 + 2 * o[0] - 1 * o[1] + 0 * o[2]) for s, o in occ.items()}
    r = analysis.convergence_regression(conv, occ)
    assert r["determined"] and r["r2"] > 0.99
    np.testing.assert_allclose(r["coefficients"], [2, -1, 0], atol=0.05)
    conv[3] = None  # a seed that never converges is left out
    assert analysis.convergence_regression(conv, occ)["n"] == 11
    few = analysis.convergence_regression({0: 10, 1: 20}, {0: np.ones(3), 1: np.zeros(3)})
    assert not few["determined"]


def test_detours_are_positive_and_not_universal():
    # 1: positive but every seed visits it; 3: only some seeds, but it speeds convergence up
    assert analysis.detour_states([0.5, 2.0, 3.0, -1.0], [[0, 1], [0, 1, 2], [1], [2]], 3) == [0, 2]


def test_wasserstein_dissimilarity_and_unusual_seeds():
    same = {s: np.array([10.0, 10.0, 0.0]) for s in range(5)}
    d, per = analysis.trajectory_dissimilarity(same)
    assert d == 0 and analysis.unusual_seeds(per) == []
    odd = dict(same)
    odd[4] = np.array([0.0, 0.0, 20.0])  # spends its time in a state nobody else visits
    d, per = analysis.trajectory_dissimilarity(odd)
    assert d > 0 and analysis.unusual_seeds(per) == [4]
    # occupancy (1,0) vs (0,1) on positions 0 and 1: moving all mass one state along costs 1
    d2, _ = analysis.trajectory_dissimilarity({0: np.array([5.0, 0.0]), 1: np.array([0.0, 5.0])})
    assert d2 == pytest.approx(1.0)


def test_analysis_json_has_the_convergence_analysis(analysed_study):
    a = json.loads((analysed_study / "analysis.json").read_text())
    for key in ("regression", "detour_states", "trajectory_dissimilarity", "unusual_seeds", "time_in_states"):
        assert key in a
    assert 0 < a["selection"]["bic_weight"] <= 1
    assert all("detour" in s for s in a["states"])


def test_report_puts_the_study_beside_the_paper(analysed_study):
    from vt_core.report.markdown import paper_setting, report_markdown

    text = report_markdown(analysed_study)
    assert "| k chosen (lowest BIC) |" in text and "## States" in text
    assert "| metric convention | paper_code (the paper's published code) | paper_code |" in text
    examples = ROOT / "examples"
    assert paper_setting(load_config(examples / "sparse_parity.toml")) == "sparse_parity"
    assert paper_setting(load_config(examples / "modular_addition_stabilised.toml")) == "modular_addition_stabilised"
    assert paper_setting(load_config(examples / "custom_model.toml")) is None
    # issue 34, item 10: by what the config trains, not by its name
    renamed = load_config(examples / "sparse_parity.toml").model_copy(update={"name": "parity40"})
    assert paper_setting(renamed) == "sparse_parity"
    assert "sparse parity 40 bits" in report_markdown(analysed_study)  # the tiny study: sparse parity
    assert "data.n_bits = 8, not 40" in report_markdown(analysed_study)  # ... at another size, said


@pytest.mark.integration  # starts processes (a kill trial, worker processes or a compiler)
def test_analyse_in_worker_processes_equals_in_process(analysed_study, tmp_path):
    """stages.analyse(workers=2) fans the metric stage and the HMM fits out to processes and
    writes the same analysis as the in-process run (the session fixture's)."""
    import json
    import shutil


    copy = tmp_path / "copy"
    shutil.copytree(analysed_study, copy, ignore=shutil.ignore_patterns("metrics.zarr", "hmm", "analysis.json"))
    stages.analyse(copy, workers=2)
    a = json.loads((copy / "analysis.json").read_text())
    b = json.loads((analysed_study / "analysis.json").read_text())
    for key in ("chosen_k", "states", "transitions", "convergence_step"):
        assert a[key] == b[key], key


def test_one_seeds_metrics_at_a_time_per_process(monkeypatch):
    """Metric tasks started together by a thread task runner compute one seed at a time (each
    already uses every core); the seeds all get computed."""
    import threading
    import time

    active, most, done = [0], [0], []
    guard = threading.Lock()

    def fake_write(study, config, run, seed, plan):
        with guard:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.05)
        with guard:
            active[0] -= 1
            done.append(seed)
        return {"computed": 1, "reused": 0, "why": None}

    from vt_core.stages import metrics as stage

    class Opened:  # a study handle that holds nothing: the stage only passes it on
        config = None

        def run(self, seed):
            return None

    monkeypatch.setattr(stage.Study, "open", classmethod(lambda cls, study: Opened()))
    monkeypatch.setattr(stage, "load_user_code", lambda config: None)
    monkeypatch.setattr(stage.incremental, "write_seed_metrics", fake_write)
    threads = [threading.Thread(target=stage.compute_metrics, args=("s", seed, {})) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(done) == [0, 1, 2, 3] and most[0] == 1
