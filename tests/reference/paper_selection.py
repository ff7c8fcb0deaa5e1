"""Transcription of the paper's HMM model-selection procedure, on an in-memory table.

Independent reference for tests: written from the paper's public code only, never from vt's code.
Source: github.com/michahu/modeling-training (Hu et al., "Latent State Models of Training Dynamics").
Files transcribed (stored commits c2b7e4a for ``src/utils.py``; c2b7e4a and ccd98f4 for
``scripts/04_train_hmm/model_selection.py``, whose selection code is identical in both):

* ``src/utils.py`` ``make_hmm_data(data_dir, cols, sort=True, first_n=1000)`` -> :func:`paper_hmm_data`.
* ``scripts/04_train_hmm/model_selection.py`` ``get_avg_log_likelihoods`` (and the defaults that ``main`` and
  the argparse block pass to it) -> :func:`paper_model_selection`.
* CSV layout (``scripts/02_stats_to_data/training_run_json_to_csv.py`` ``main``): one CSV per training run
  (one per seed, e.g. ``seed{seed}.csv`` or ``lr{lr}_{optimizer}_seed{seed}_scaling{init_scaling}.csv``), one row
  per logged step, columns ``step`` and the metrics, written with ``df.to_csv`` (index column included). Here the
  table holds all runs at once; a run is the set of rows with one ``seed`` value, in table row order.

What ``make_hmm_data`` does (quotes are from ``src/utils.py``), and how it is reproduced here:

1. Runs: ``for file in glob.glob(data_dir + "*")``, one DataFrame per file, in glob's order. ``glob.glob`` does
   not sort (it is the directory's listing order, which depends on the file system), so the paper has no defined
   run order. Here runs are taken in ascending ``seed`` order (``sorted(table["seed"].unique())``); this order
   only matters for which runs land in the test set (step 4).
2. Per run, with ``sort=True``: ``pd.read_csv(file).sort_values("step").reset_index(drop=True)[cols]
   .head(first_n)``; if that raises ``KeyError`` the same chain is retried with ``"epoch"`` instead of ``"step"``.
   ``sort_values`` is pandas' default (``kind="quicksort"``, not stable), applied to the run's rows in table order
   with a fresh RangeIndex (as ``read_csv`` gives), so rows with equal steps come out as pandas orders them, the
   same as the paper. With ``sort=False``: ``pd.read_csv(file)[cols].head(first_n)`` (table row order).
   ``head(None)`` keeps every row: ``get_avg_log_likelihoods`` has ``first_n=None`` as its own default, and passes
   it to ``make_hmm_data`` explicitly, overriding that function's default of 1000. The CLI passes 1000.
3. ``dfs = [df for df in dfs if not df.isnull().values.any()]  # remove invalid dfs``: a run with any NaN in
   ``cols`` (after ``head``) is dropped, before the split. Infinite values are not dropped.
4. Split of RUNS (not rows): ``train_test_split(dfs, test_size=0.2, random_state=0)`` (scikit-learn). The seed
   is fixed at 0 in the paper, so the paper's split is deterministic. scikit-learn's ``ShuffleSplit`` logic:
   ``n_test = ceil(0.2 * n_runs)``, ``n_train = n_runs - n_test``; ``perm = RandomState(0).permutation(n_runs)``;
   test runs are ``perm[:n_test]`` and train runs ``perm[n_test:]``, each list in that permutation order (NOT
   sorted). E.g. 10 runs at positions 0..9 -> test positions ``[2, 8]``, train ``[4, 9, 1, 6, 7, 3, 0, 5]``.
   Fewer than 2 runs raises ``ValueError`` (empty train set). Here the split is the same scikit-learn call;
   ``split_seed`` is what goes to ``random_state``: ``None`` (the default) means the paper's fixed ``0``; an int
   or a ``numpy.random.RandomState`` is passed through to scikit-learn as is.
5. Standardisation: ``np.vstack([np.apply_along_axis(zscore, 0, df.to_numpy()) for df in train_dfs])`` and the
   same for ``test_dfs``: ``scipy.stats.zscore`` of each column of each run on its own (per run, per feature,
   ``ddof=0``, i.e. population std), for train and test runs alike (test runs are NOT standardised with train
   statistics). A column that is constant within a run becomes all NaN (0/0; scipy warns); the paper does not
   guard against it (hmmlearn then rejects the data).
6. ``get_avg_log_likelihoods`` then takes ``train_lengths = [len(df) for df in train_dfs]`` and likewise
   ``test_lengths``: the lengths after ``head(first_n)``, in split order.

Not reproduced (no effect here): ``read_csv`` parses numbers from text (``to_csv`` writes floats with full
precision, so the round trip is exact in practice); the ``print`` calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from hmmlearn import hmm
from scipy.stats import zscore
from sklearn.model_selection import train_test_split

__all__ = ["PAPER_SPLIT_SEED", "PAPER_TEST_SIZE", "paper_hmm_data", "paper_model_selection"]

# src/utils.py make_hmm_data: train_test_split(dfs, test_size=0.2, random_state=0)
PAPER_TEST_SIZE = 0.2
PAPER_SPLIT_SEED = 0


def _plain(value: Any) -> Any:
    """numpy scalar -> Python scalar (so seeds come back as ints)."""
    return value.item() if isinstance(value, np.generic) else value


def _paper_run_frames(table: pd.DataFrame, cols: Sequence[str], sort: bool, first_n: int | None):
    """One DataFrame per run, as the list comprehension of ``make_hmm_data`` (src/utils.py) builds it.

    Returns ``(seeds, dfs)`` in run order (ascending seed, see module docstring, point 1).
    """
    cols = list(cols)
    seeds = [_plain(s) for s in sorted(pd.unique(table["seed"]))]
    seeds_out: list[Any] = []
    dfs: list[pd.DataFrame] = []
    for seed in seeds:
        # One CSV file of the paper: this run's rows, in table order, with a fresh RangeIndex (as read_csv gives).
        run = table.loc[table["seed"] == seed].reset_index(drop=True)
        if sort:
            # src/utils.py make_hmm_data: .sort_values("step").reset_index(drop=True)[cols].head(first_n),
            # retried with "epoch" on KeyError (the paper wraps the whole list comprehension in the try).
            try:
                df = run.sort_values("step").reset_index(drop=True)[cols].head(first_n)
            except KeyError:
                df = run.sort_values("epoch").reset_index(drop=True)[cols].head(first_n)
        else:
            # src/utils.py make_hmm_data, sort=False branch: pd.read_csv(file)[cols].head(first_n)
            df = run[cols].head(first_n)
        seeds_out.append(seed)
        dfs.append(df)
    return seeds_out, dfs


def paper_hmm_data(
    table: pd.DataFrame,
    cols: Sequence[str],
    sort: bool = True,
    first_n: int | None = None,
    split_seed: int | np.random.RandomState | None = None,
):
    """``make_hmm_data`` (src/utils.py) plus the length lists of ``get_avg_log_likelihoods``.

    ``table``: columns ``seed`` (one run per value), ``step`` and ``cols``. ``first_n=None`` keeps every row
    (``get_avg_log_likelihoods``'s default; ``make_hmm_data``'s own default is 1000 and the CLI passes 1000).
    ``split_seed``: the ``random_state`` of the train/test split of runs; ``None`` = the paper's fixed 0.

    Returns ``(train_runs, test_runs, train_data, train_lengths, test_data, test_lengths)``: the seeds of the
    train and test runs in the order their rows are stacked, the stacked per-run z-scored arrays, and the
    per-run lengths.
    """
    seeds, dfs = _paper_run_frames(table, cols, sort, first_n)

    # src/utils.py make_hmm_data: dfs = [df for df in dfs if not df.isnull().values.any()]  # remove invalid dfs
    kept = [(seed, df) for seed, df in zip(seeds, dfs) if not df.isnull().values.any()]
    seeds = [seed for seed, _ in kept]
    dfs = [df for _, df in kept]

    # src/utils.py make_hmm_data: train_test_split(dfs, test_size=0.2, random_state=0). The seeds are split
    # alongside (same permutation: train_test_split shuffles all its arrays with one ShuffleSplit).
    random_state = PAPER_SPLIT_SEED if split_seed is None else split_seed
    train_dfs, test_dfs, train_runs, test_runs = train_test_split(
        dfs, seeds, test_size=PAPER_TEST_SIZE, random_state=random_state
    )

    # src/utils.py make_hmm_data: np.vstack([np.apply_along_axis(zscore, 0, df.to_numpy()) for df in ...]):
    # per run, per column, scipy.stats.zscore with its default ddof=0.
    train_data = np.vstack([np.apply_along_axis(zscore, 0, df.to_numpy()) for df in train_dfs])
    test_data = np.vstack([np.apply_along_axis(zscore, 0, df.to_numpy()) for df in test_dfs])

    # scripts/04_train_hmm/model_selection.py get_avg_log_likelihoods: train_lengths = [len(df) for df in train_dfs]
    train_lengths = [len(df) for df in train_dfs]
    test_lengths = [len(df) for df in test_dfs]
    return list(train_runs), list(test_runs), train_data, train_lengths, test_data, test_lengths


def _choose_k(bics: Sequence[float]) -> int | None:
    """Lowest mean held-out BIC; ties go to the smaller k; non-finite values are skipped (None if all are)."""
    best_k, best_bic = None, None
    for k, value in enumerate(bics, start=1):
        if not np.isfinite(value):
            continue
        if best_bic is None or value < best_bic:  # strict: an equal later value keeps the smaller k
            best_k, best_bic = k, float(value)
    return best_k


def paper_model_selection(
    table: pd.DataFrame,
    cols: Sequence[str],
    max_components: int = 8,
    bootstrap: int = 5,
    cov_type: str = "diag",
    n_iter: int = 10,
    first_n: int | None = 1000,
    split_seed: int | np.random.RandomState | None = None,
    random_state: Callable[[int, int], int] | None = None,
) -> dict[str, Any]:
    """``get_avg_log_likelihoods`` (scripts/04_train_hmm/model_selection.py) on an in-memory table.

    Defaults are what the published script runs with when no option is given: ``max_components=8``
    (``--max_components`` default 8), ``bootstrap=5`` (hard-coded in ``main``), ``cov_type="diag"``
    (``--cov_type`` default), ``n_iter=10`` (``--num_iters`` default 10; ``get_avg_log_likelihoods``'s own default
    is 10000, never used by ``main``), ``first_n=1000`` (``--first_n`` default; the function's own default is
    None). Note that the README's documented command passes ``--num_iters 32 --max_components 8 --cov_type
    $cov_type``, and the notebooks read pickles under ``data/model_selection/32/`` (e.g. ``modular_v3-full-base.pkl``,
    ``multiberts_diag.pkl``), so the paper's figures were most likely made with ``n_iter=32`` and, for several
    datasets, ``cov_type="full"``.

    For each ``i`` in ``1..max_components`` and each ``b`` in ``range(bootstrap)``, fits
    ``hmm.GaussianHMM(n_components=i, covariance_type=cov_type, n_iter=n_iter)`` on the train runs and scores it
    on the held-out runs. The paper passes no ``random_state`` (its loop variable ``seed`` is unused), so each fit
    draws from numpy's global RNG (hmmlearn -> ``check_random_state(None)``). Here ``random_state(i, b)`` is
    passed when ``random_state`` is a callable, else nothing is passed (the paper's behaviour).

    Returns the paper's keys ``best_scores``, ``mean_scores``, ``scores_stdev``, ``aics``, ``bics``,
    ``best_models`` (lists indexed by ``k - 1``) plus ``chosen_k``, ``train_runs``, ``test_runs``.
    """
    # get_avg_log_likelihoods: sort = True; make_hmm_data(data_dir, cols, sort=sort, first_n=first_n)
    train_runs, test_runs, train_data, train_lengths, test_data, test_lengths = paper_hmm_data(
        table, cols, sort=True, first_n=first_n, split_seed=split_seed
    )

    best_scores: list[float] = []
    mean_scores: list[float] = []
    scores_stdev: list[float] = []
    best_models: list[Any] = []
    aics: list[float] = []
    bics: list[float] = []

    # get_avg_log_likelihoods: for i in trange(1, max_components + 1): ... for seed in range(bootstrap):
    for i in range(1, max_components + 1):
        scores_buf: list[float] = []
        aics_buf: list[float] = []
        bics_buf: list[float] = []
        best_score = -np.inf
        best_model = None
        for b in range(bootstrap):
            kwargs: dict[str, Any] = {}
            if callable(random_state):
                kwargs["random_state"] = random_state(i, b)
            model = hmm.GaussianHMM(n_components=i, covariance_type=cov_type, n_iter=n_iter, **kwargs)
            model.fit(train_data, lengths=train_lengths)
            # Held-out total log-likelihood (hmmlearn score: sum over the test sequences), AIC and BIC on test data.
            score = model.score(test_data, lengths=test_lengths)
            aics_buf.append(model.aic(test_data, lengths=test_lengths))
            bics_buf.append(model.bic(test_data, lengths=test_lengths))
            scores_buf.append(score)
            if score > best_score:  # strict: the first of equal scores is kept; NaN scores never win
                best_score = score
                best_model = model
        best_scores.append(best_score)
        mean_scores.append(np.mean(scores_buf))
        scores_stdev.append(np.std(scores_buf))  # numpy default ddof=0
        aics.append(np.mean(aics_buf))
        bics.append(np.mean(bics_buf))
        best_models.append(best_model)

    # From curves to k: the paper's code never picks k automatically. model_selection.py only pickles the dict and
    # plots mean_scores (+/- scores_stdev), aics and bics against k (plot_avg_log_likelihood);
    # 05_model_selection_curves.ipynb only re-plots the pickles (its `plot` function and one loop over
    # `model_pths`). The k used downstream is typed in by hand in 05_graph_analysis.ipynb
    # (`save_predictions(..., n_components=5)`, 6, 3, 2 for the various datasets), which loads
    # `pickle.load(f)['best_models'][n_components-1]`, i.e. the best-held-out-score fit of that k.
    # Here, as the stated rule: the k with the lowest mean held-out BIC (`bics`), ties to the smaller k.
    chosen_k = _choose_k(bics)

    return {
        "best_scores": best_scores,
        "mean_scores": mean_scores,
        "scores_stdev": scores_stdev,
        "aics": aics,
        "bics": bics,
        "best_models": best_models,
        "chosen_k": chosen_k,
        "train_runs": train_runs,
        "test_runs": test_runs,
    }
