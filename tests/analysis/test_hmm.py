import numpy as np
import pytest
from hmmlearn.hmm import GaussianHMM
from sklearn.metrics import adjusted_rand_score

from benchmarks.known_hmm import left_to_right
from vt_core.analysis import hmm
from vt_core.config.study_config import HMMConfig


def sample_known(sampler_seed: int, n_seqs=8, T=120):
    """A left-to-right 3-state HMM on 3 features, like a network passing through training stages."""
    true = GaussianHMM(n_components=3, covariance_type="diag", random_state=sampler_seed)
    true.startprob_ = np.array([1.0, 0.0, 0.0])
    true.transmat_ = np.array([[0.95, 0.05, 0.0], [0.0, 0.95, 0.05], [0.0, 0.0, 1.0]])
    true.means_ = np.array([[0.0, 0.0, 0.0], [3.0, -2.0, 1.0], [6.0, 2.0, -3.0]])
    true.covars_ = np.full((3, 3), 0.5)
    rng = np.random.default_rng(sampler_seed)
    seqs, states = [], []
    for _ in range(n_seqs):
        x, z = true.sample(T, random_state=int(rng.integers(2**31)))
        seqs.append(x)
        states.append(z)
    return seqs, states


@pytest.mark.parametrize("sampler_seed", [0, 1, 2])
def test_known_hmm_is_recovered(sampler_seed):
    seqs, states = sample_known(sampler_seed)
    cfg = HMMConfig(max_states=5, restarts=3, covariance="diag", seed=7)
    train, held = seqs[:6], seqs[6:]
    fits = [hmm.fit_one(train, held, k, r, cfg) for k in range(1, 6) for r in range(3)]
    for f in fits:  # over-specified k may fail to converge (and is then excluded); the true k may not
        if f["k"] <= 3:
            assert f["status"] == "ok", f["reason"]
    table, k = hmm.selection_table(fits)
    assert k == 3
    best = next(t for t in table if t["k"] == 3)
    model = GaussianHMM(n_components=3, covariance_type="diag", n_iter=cfg.n_iter, tol=cfg.tol,
                        random_state=best["random_state"]).fit(np.concatenate(train), [len(s) for s in train])
    pred = [model.predict(s) for s in seqs]
    ari = adjusted_rand_score(np.concatenate(states), np.concatenate(pred))
    assert ari >= 0.9


def test_shuffled_rows_give_step_ordered_sequences():
    rng = np.random.default_rng(0)
    steps = np.arange(0, 500, 10)
    seed_col = np.repeat([3, 1], len(steps))
    step_col = np.tile(steps, 2)
    values = np.stack([step_col * 1.0 + seed_col, -step_col * 1.0], axis=1)
    perm = rng.permutation(len(seed_col))
    seqs = hmm.sequences_from_rows(seed_col[perm], step_col[perm], values[perm], ["a", "b"])
    assert seqs.seeds == [1, 3]
    for s, st, v in zip(seqs.seeds, seqs.steps, seqs.values):
        np.testing.assert_array_equal(st, steps)
        np.testing.assert_array_equal(v[:, 0], steps + s)


def test_restarts_are_seeded_and_distinct():
    seqs, _ = sample_known(0, n_seqs=3)
    cfg = HMMConfig(max_states=3, restarts=2, covariance="diag", seed=1)
    a = hmm.fit_one(seqs, [], 3, 0, cfg)
    b = hmm.fit_one(seqs, [], 3, 0, cfg)
    c = hmm.fit_one(seqs, [], 3, 1, cfg)
    pa, pb = a.pop("params"), b.pop("params")  # in the row when no params_path is given
    assert a == b and all(np.array_equal(pa[n], pb[n]) for n in pa)
    assert a["random_state"] != c["random_state"]
    assert len({hmm.restart_seed(0, k, r) for k in range(1, 9) for r in range(5)}) == 40


def test_each_k_keeps_its_own_model(tmp_path):
    seqs, _ = sample_known(0, n_seqs=4)
    cfg = HMMConfig(max_states=4, restarts=2, covariance="diag")
    fits = [hmm.fit_one(seqs, [], k, r, cfg, tmp_path / f"{k}-{r}.npz") for k in range(1, 5) for r in range(2)]
    table, _ = hmm.selection_table(fits)
    assert [t["k"] for t in table] == [1, 2, 3, 4]
    assert len({t["params_path"] for t in table}) == 4
    for t in table:
        assert np.load(t["params_path"])["means"].shape[0] == t["k"]


def test_failed_fits_are_recorded_not_fatal():
    short = [np.random.default_rng(0).normal(size=(6, 4))]
    cfg = HMMConfig(max_states=4, restarts=1, covariance="full")
    row = hmm.fit_one(short, [], 4, 0, cfg)
    assert row["status"] == "failed" and "parameters for 6 observations" in row["reason"]
    longer = [np.random.default_rng(1).normal(size=(40, 4))]
    ok = hmm.fit_one(longer, [], 1, 0, HMMConfig(covariance="diag"))
    table, k = hmm.selection_table([row, ok])
    assert k == 1 and table[-1]["n_failed"] == 1
    with pytest.raises(hmm.HMMError, match="every HMM fit failed"):
        hmm.selection_table([row])


def test_canonical_order_does_not_depend_on_labels():
    seqs, _ = sample_known(0, n_seqs=3)
    steps = [np.arange(len(s)) * 10 for s in seqs]
    model = GaussianHMM(n_components=3, covariance_type="diag", random_state=0).fit(
        np.concatenate(seqs), [len(s) for s in seqs])
    params = {**hmm.model_params(model), "covariance_type": np.array("diag")}
    labelled = []
    for relabel in (np.array([0, 1, 2]), np.array([2, 0, 1]), np.array([1, 2, 0])):
        p = hmm.permute_params(params, relabel)  # the same model with its states renamed
        paths = hmm.decode(p, seqs)
        perm = hmm.canonical_permutation(paths, steps, 3, p["means"])
        labelled.append(np.concatenate([perm[x] for x in paths]))
        assert perm[paths[0][0]] == 0  # the state the run starts in is state 0
    np.testing.assert_array_equal(labelled[0], labelled[1])
    np.testing.assert_array_equal(labelled[0], labelled[2])


def test_split_is_seeded_and_keeps_a_training_seed():
    assert hmm.split_seeds([0, 1, 2, 3, 4], 0.2, 0) == hmm.split_seeds([4, 3, 2, 1, 0], 0.2, 0)
    train, held = hmm.split_seeds(list(range(10)), 0.2, 0)
    assert len(held) == 2 and not set(train) & set(held)
    assert hmm.split_seeds([5], 0.5, 0) == ([5], [])
    assert hmm.split_seeds([1, 2], 0.9, 0)[0]


def test_zscore_is_per_seed():
    s = hmm.Sequences([0, 1], [np.arange(3), np.arange(3)], [np.array([[1.0], [2.0], [3.0]]),
                                                           np.array([[10.0], [10.0], [10.0]])], ["a"])
    z = s.zscored("seed")
    np.testing.assert_allclose(z[0][:, 0], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    np.testing.assert_array_equal(z[1], 0.0)  # a constant column stays finite


def test_bic_weights_sum_to_one_and_favour_the_true_k():
    seqs, _ = sample_known(0)
    cfg = HMMConfig(max_states=4, restarts=2, covariance="diag")
    table, k = hmm.selection_table([hmm.fit_one(seqs, [], kk, r, cfg) for kk in range(1, 5) for r in range(2)])
    w = {t["k"]: t["bic_weight"] for t in table if t["n_ok"]}
    assert sum(w.values()) == pytest.approx(1.0) and max(w, key=w.get) == k == 3


def test_non_converged_fits_are_excluded():
    seqs, _ = sample_known(0, n_seqs=3)
    row = hmm.fit_one(seqs, [], 3, 0, HMMConfig(n_iter=1, covariance="diag"))
    assert row["status"] == "failed" and "no convergence" in row["reason"]


def test_feasibility_is_checked_up_front():
    with pytest.raises(hmm.HMMError, match="cannot support even one state"):
        hmm.check_feasible(20, 14, HMMConfig(covariance="full"))
    assert hmm.check_feasible(600, 14, HMMConfig(covariance="diag", max_states=8)) == 8
    assert hmm.check_feasible(303, 14, HMMConfig(covariance="full", max_states=8)) == 2


def test_global_standardisation_and_pca():
    s = hmm.Sequences([0, 1], [np.arange(3)] * 2, [np.array([[1.0], [2.0], [3.0]]), np.array([[5.0], [5.0], [5.0]])], ["a"])
    z = s.zscored("global")
    allv = np.concatenate(z)
    assert allv.mean() == pytest.approx(0) and allv.std() == pytest.approx(1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 1)) @ np.array([[3.0, 4.0, 0.0]]) + 0.01 * rng.normal(size=(200, 3))
    mu, comps, ratio = hmm.pca_projection([x], 2)
    assert comps.shape == (2, 3) and ratio[0] > 0.99
    np.testing.assert_allclose(np.abs(comps[0]), [0.6, 0.8, 0.0], atol=0.01)


def test_per_seed_zscoring_inflates_k():
    """A finding, pinned: with seeds that spend different times in each state, z-scoring each seed
    on its own (the paper's choice, our default) moves a state's mean from seed to seed, and BIC
    then asks for more states than there are; standardising all seeds together recovers k."""
    k, F = 5, 14
    raw = left_to_right(n_seqs=8, T=200, F=F, k=k, seed=0)
    s = hmm.Sequences(list(range(8)), [np.arange(200)] * 8, raw, [str(i) for i in range(F)])
    chosen = {}
    for mode in ("seed", "global"):
        z = s.zscored(mode)
        cfg = HMMConfig(max_states=8, restarts=2, covariance="diag")
        chosen[mode] = hmm.selection_table([hmm.fit_one(z[:6], z[6:], kk, r, cfg)
                                            for kk in range(1, 9) for r in range(2)])[1]
    assert chosen["global"] == 5
    assert chosen["seed"] > 5


def test_restart_order_does_not_change_labels(tmp_path):
    """The same grid fitted with the restarts in another order gives the same model and labels."""
    seqs, _ = sample_known(1, n_seqs=4)
    steps = [np.arange(len(s)) * 10 for s in seqs]
    cfg = HMMConfig(max_states=4, restarts=3, covariance="diag")
    labels = []
    for order in ([0, 1, 2], [2, 1, 0]):
        fits = [hmm.fit_one(seqs, [], k, r, cfg, tmp_path / f"{k}-{r}.npz") for k in range(1, 5) for r in order]
        table, k = hmm.selection_table(fits)
        best = next(t for t in table if t["k"] == k)
        params = {**dict(np.load(best["params_path"]))}
        paths = hmm.decode(params, seqs)
        perm = hmm.canonical_permutation(paths, steps, k, params["means"])
        labels.append(np.concatenate([perm[p] for p in paths]))
        assert best["bic_min"] <= best["bic"] <= best["bic_max"] and best["aic_min"] <= best["aic_max"]
    np.testing.assert_array_equal(labels[0], labels[1])


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical", "tied"])
def test_batched_estep_fits_what_hmmlearn_fits(covariance):
    """vt's GaussianHMM (E-step batched over sequences) against hmmlearn's own, the reference:
    same iterations, same parameters and log-likelihood up to float summation order."""
    Reference = GaussianHMM  # hmmlearn's
    seqs = left_to_right(n_seqs=12, T=60, F=5, k=4, seed=3)
    X = np.concatenate(seqs)
    X = (X - X.mean(0)) / X.std(0)
    lengths = [len(s) for s in seqs]
    kw = dict(n_components=4, covariance_type=covariance, n_iter=30, tol=1e-6, random_state=5)
    ours, ref = hmm.GaussianHMM(**kw).fit(X, lengths), Reference(**kw).fit(X, lengths)
    assert ours.monitor_.iter == ref.monitor_.iter and len(ours.monitor_.history) == len(ref.monitor_.history)
    np.testing.assert_allclose(list(ours.monitor_.history), list(ref.monitor_.history), rtol=1e-10)
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-7, atol=1e-10, err_msg=name)
    assert ours.score(X, lengths) == pytest.approx(ref.score(X, lengths), rel=1e-10)
    np.testing.assert_array_equal(ours.predict(X, lengths), ref.predict(X, lengths))


def test_fits_side_by_side_leave_the_blas_threads_as_they_were():
    """Each fit runs BLAS on one thread; fits overlapping in threads restore the setting once, at the end."""
    import threading

    from threadpoolctl import threadpool_info

    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    X = np.concatenate(left_to_right(n_seqs=4, T=40, F=3, k=2, seed=1))
    seen = []

    def fit(seed):
        model = hmm.GaussianHMM(n_components=2, covariance_type="diag", n_iter=20, random_state=seed)
        orig = model._do_estep

        def estep(*a):
            seen.append([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"])
            return orig(*a)

        model._do_estep = estep
        model.fit(X, [40] * 4)

    threads = [threading.Thread(target=fit, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen and all(set(n) == {1} for n in seen)
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


def test_a_fit_whose_model_cannot_load_again_is_a_failed_row(monkeypatch):
    """A near-singular state's covariance (not positive-definite once saved) would crash decoding
    later: the fit is a failed row with its reason instead, never chosen."""
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(40, 2)) for _ in range(4)]
    real = hmm.model_params

    def broken(model):
        p = dict(real(model))
        p["covars"] = p["covars"].copy()
        p["covars"][0] = np.array([[1.0, 2.0], [2.0, 1.0]])  # symmetric, eigenvalues 3 and -1
        return p

    monkeypatch.setattr(hmm, "model_params", broken)
    row = hmm.fit_one(seqs, [], 2, 0, HMMConfig(covariance="full", n_iter=50))
    assert row["status"] == "failed" and "degenerate state" in row["reason"], row
