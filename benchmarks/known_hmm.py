"""Sequences sampled from a known left-to-right Gaussian HMM: the ground truth that
benchmarks/hmm_selection.py and tests/analysis/test_hmm.py select k against."""

from __future__ import annotations

import numpy as np
from hmmlearn.hmm import GaussianHMM


def left_to_right(n_seqs: int = 8, T: int = 200, F: int = 14, k: int = 5, seed: int = 0) -> list[np.ndarray]:
    """``n_seqs`` raw (unstandardised) sequences of ``T`` steps: k states visited in order, each
    held with probability 0.97 per step, means N(0, 2²), variances 0.5."""
    rng = np.random.default_rng(seed)
    true = GaussianHMM(n_components=k, covariance_type="diag", random_state=seed)
    true.startprob_ = np.eye(k)[0]
    A = np.eye(k) * 0.97 + np.eye(k, k=1) * 0.03
    A[-1, -1] = 1.0
    true.transmat_ = A
    true.means_ = rng.normal(scale=2.0, size=(k, F))
    true.covars_ = np.full((k, F), 0.5)
    return [true.sample(T, random_state=int(rng.integers(2**31)))[0] for _ in range(n_seqs)]
