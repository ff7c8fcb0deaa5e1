"""Planted studies: per-seed metric trajectories sampled from a known latent path, shaped like real
training runs, for testing vt's latent-state analysis (issue 16) against ground truth.

Independent of vt_core on purpose (numpy and pandas only), so that a mistake shared by the analysis
and its test data cannot hide.

How a study is built (``sample_study``):

- **Main path.** ``n_states`` states visited left to right by every converging seed, 0 -> 1 -> ... ->
  n_states-1. Labels: main states are 0..n_states-1, the detour state (if any) is ``n_states``, the
  post-convergence state (if any) is the last label. ``k`` counts them all.
- **Unequal dwell times.** Each state has a base dwell (checkpoints; about ``length`` per seed in
  all, state bases differ by up to 2x). Each seed's dwell in a state is the base times a factor; for
  every state the factors of the seeds are a random permutation of a log-spaced grid from 0.5 to 2
  (jittered), so in every state the slowest seed stays about 4x longer than the fastest and a seed
  fast in one state is not fast in the next. Run lengths therefore differ by seed.
- **Checkpoint steps** are shared by all seeds (a run's checkpoints are the first ``T_seed`` of the
  schedule): every 10 steps from 0 (``schedule="uniform"``) or increasingly sparse
  (``schedule="log"``). Never 0..T-1.
- **Convergence.** ``test_accuracy`` is a logistic curve per seed (own floor, ceiling and width)
  built so that it first reaches 0.9 at a checkpoint inside the last main state (20-50% of the way
  into it); ``convergence[seed]`` is that checkpoint's step (= first step with accuracy >= 0.9).
- **Detour** (``detour=True``): half the converging seeds (rounded down; at least 2 on each side) pass
  through an extra state between main states j and j+1 (j random, before the last main state). It adds
  its dwell before convergence, so these seeds converge later.
- **Post-convergence state** (``post_convergence_state=True``): every converging seed moves into an
  extra state when its last main state ends, which is always after its convergence checkpoint, and
  stays there for a random dwell.
- **Unconverged seeds** (``unconverged=n``, beyond the brief): n seeds never reach the last main state
  (nor the post state); they stay in the last-but-one main state to the end and their accuracy
  plateaus below 0.9 (``convergence[seed] is None``).
- **Emissions.** Whitened space: each state has a random full covariance with sds between 0.6 and
  1.5 along random axes. Means follow the path as a random walk: each new state's mean sits at
  Mahalanobis distance ``separation`` (under the worse of the two states' covariances) from its
  predecessor in a random direction, redrawn until it is at least that far from every other state.
  Observations are Gaussian around the state mean, then each feature gets its own scale (1e-3..1e2)
  and offset, as real metrics (weight norms, variances of weights) have wildly different units.
- **Same length** (``same_length=True``, beyond the brief): one training budget for all seeds, as in
  a vt study; each run's last state (final main, post or stuck state) lasts until the longest run
  ends, so fast seeds spend most of their run in it (the case where per-seed z-scoring hurts most).
- Rows are returned shuffled (``shuffle=True``), seeds are non-contiguous integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

THRESHOLD = 0.9
MIN_DWELL = 3


@dataclass
class Planted:
    table: pd.DataFrame
    true_states: dict[int, np.ndarray]
    convergence: dict[int, int | None]
    detour_state: int | None
    post_state: int | None
    k: int
    features: list[str] = field(default_factory=list)
    detour_seeds: list[int] = field(default_factory=list)
    main_states: list[int] = field(default_factory=list)
    dwell: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # seed -> [(state, checkpoints)]
    means: np.ndarray | None = None  # (k, n_features), whitened space, before per-feature scaling

    def __repr__(self) -> str:
        return (f"Planted(k={self.k}, seeds={len(self.true_states)}, rows={len(self.table)}, "
                f"detour_state={self.detour_state}, post_state={self.post_state})")

    def sorted_table(self) -> pd.DataFrame:
        return self.table.sort_values(["seed", "step"]).reset_index(drop=True)

    def true_labels(self, table: pd.DataFrame | None = None) -> np.ndarray:
        """True state of every row of ``table`` (default: this study's table), row by row."""
        t = self.table if table is None else table
        lookup = {}
        for s, states in self.true_states.items():
            steps = self.steps_of(s)
            lookup.update({(s, int(st)): int(z) for st, z in zip(steps, states)})
        return np.array([lookup[(int(a), int(b))] for a, b in zip(t["seed"], t["step"])])

    def steps_of(self, seed: int) -> np.ndarray:
        return np.sort(self.table.loc[self.table["seed"] == seed, "step"].to_numpy())


def _rng(rng: int | np.random.Generator) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _covariances(rng: np.random.Generator, k: int, f: int) -> np.ndarray:
    out = np.empty((k, f, f))
    for s in range(k):
        q, _ = np.linalg.qr(rng.normal(size=(f, f)))
        sd = rng.uniform(0.6, 1.5, size=f)
        out[s] = (q * sd**2) @ q.T
    return out


def _mahalanobis(d: np.ndarray, cov: np.ndarray) -> float:
    return float(np.sqrt(d @ np.linalg.solve(cov, d)))


def _separation_ok(d: np.ndarray, ca: np.ndarray, cb: np.ndarray, sep: float) -> bool:
    return min(_mahalanobis(d, ca), _mahalanobis(d, cb)) >= sep - 1e-9


def _means(rng: np.random.Generator, covs: np.ndarray, predecessor: list[int | None], sep: float,
           trend: float) -> np.ndarray:
    """Random-walk means: state s at distance ``sep`` from ``predecessor[s]``, ≥ sep from all; each
    step's direction has component ``trend`` along one direction common to the whole walk."""
    k, f = covs.shape[:2]
    means = np.zeros((k, f))
    common = rng.normal(size=f)
    common /= np.linalg.norm(common)
    for s in range(k):
        p = predecessor[s]
        if p is None:
            means[s] = rng.normal(size=f)
            continue
        for _ in range(1000):
            u = rng.normal(size=f)
            u -= (u @ common) * common
            u = trend * common + np.sqrt(1 - trend**2) * u / np.linalg.norm(u)
            # scale so that the worse (smaller) of the two Mahalanobis lengths equals sep
            length = sep / min(_mahalanobis(u, covs[s]), _mahalanobis(u, covs[p]))
            cand = means[p] + length * u
            if all(_separation_ok(cand - means[t], covs[s], covs[t], sep) for t in range(s)):
                means[s] = cand
                break
        else:  # pragma: no cover - practically unreachable for f >= 3
            raise RuntimeError("could not place a well separated state mean")
    return means


def _dwell_factors(rng: np.random.Generator, n_seeds: int) -> np.ndarray:
    """One factor per seed, spread log-uniformly over [0.5, 2] (max/min about 4), in random order."""
    grid = np.exp(np.linspace(np.log(0.5), np.log(2.0), n_seeds))
    grid = grid * np.exp(rng.uniform(-0.08, 0.08, size=n_seeds))
    return rng.permutation(grid)


def _schedule(kind: str, n: int) -> np.ndarray:
    if kind == "uniform":
        return 10 * np.arange(n, dtype=np.int64)
    if kind == "log":  # dense early, sparse late, strictly increasing
        raw = np.floor(10 * 1.04 ** np.arange(n)).astype(np.int64)
        return np.maximum.accumulate(raw + np.arange(n, dtype=np.int64))
    raise ValueError(f"unknown schedule {kind!r}")


def _accuracy(rng: np.random.Generator, n: int, conv_index: int | None) -> np.ndarray:
    """A smooth rising held-out accuracy over checkpoints 0..n-1; first >= 0.9 exactly at conv_index."""
    t = np.arange(n, dtype=float)
    lo = rng.uniform(0.05, 0.25)
    width = rng.uniform(1.5, 5.0)
    if conv_index is None:  # plateaus below the threshold
        hi = rng.uniform(0.6, 0.85)
        mid = rng.uniform(0.2, 0.6) * n
    else:
        hi = rng.uniform(0.97, 1.0)
        p = (THRESHOLD - lo) / (hi - lo)
        mid = conv_index - 0.5 - width * np.log(p / (1 - p))
    acc = lo + (hi - lo) / (1 + np.exp(-(t - mid) / width))
    if conv_index is not None:
        assert acc[conv_index] >= THRESHOLD and (conv_index == 0 or acc[conv_index - 1] < THRESHOLD)
    else:
        assert acc.max() < THRESHOLD
    return acc


def _seed_path(rng, main_dwell, detour_at, detour_label, detour_dwell, post_label, post_dwell, converges):
    """[(state, dwell)] for one seed, and the checkpoint index where it converges (or None)."""
    n_main = len(main_dwell)
    path = []
    for s in range(n_main if converges else n_main - 1):
        dwell = int(main_dwell[s])
        if not converges and s == n_main - 2:  # stuck: stays here to the end of a full-length run
            dwell += int(main_dwell[n_main - 1]) + int(post_dwell or 0)
        path.append((s, dwell))
        if s == detour_at:
            path.append((detour_label, int(detour_dwell)))
    if not converges:
        return path, None
    entry = sum(d for _, d in path[:-1])
    d_last = path[-1][1]
    conv = entry + int(np.clip(round(rng.uniform(0.2, 0.5) * d_last), 1, d_last - 1))
    if post_label is not None:
        path.append((post_label, int(post_dwell)))
    return path, conv


def sample_study(n_states: int, n_seeds: int, n_features: int = 6, *, detour: bool = False,
                 post_convergence_state: bool = False, rng: int | np.random.Generator = 0, length: int = 80,
                 separation: float = 4.0, unconverged: int = 0, schedule: str = "uniform",
                 same_length: bool = False, trend: float = 0.0, shuffle: bool = True) -> Planted:
    """A planted study: ``n_states`` main-path states (plus an optional detour and post-convergence
    state, counted in ``k``) for ``n_seeds`` seeds of about ``length`` checkpoints each."""
    if n_states < 1 or (detour or unconverged) and n_states < 2:
        raise ValueError("a detour or unconverged seeds need at least 2 main states")
    if not 0.0 <= trend < 1.0:
        raise ValueError("trend must be in [0, 1)")
    if n_features < 2:
        raise ValueError("need at least 2 features")
    g = _rng(rng)
    labels = {"detour": n_states if detour else None}
    labels["post"] = n_states + int(detour) if post_convergence_state else None
    k = n_states + int(detour) + int(post_convergence_state)
    detour_at = int(g.integers(0, n_states - 1)) if detour else None

    predecessor: list[int | None] = [None] + list(range(n_states - 1))
    if detour:
        predecessor.append(detour_at)
    if post_convergence_state:
        predecessor.append(n_states - 1)
    covs = _covariances(g, k, n_features)
    means = _means(g, covs, predecessor, separation, trend)
    chol = np.linalg.cholesky(covs)
    scale = np.exp(g.uniform(np.log(1e-3), np.log(1e2), size=n_features))
    offset = g.normal(scale=3.0, size=n_features) * scale

    n_path = n_states + int(post_convergence_state)
    base = length / n_path * np.exp(g.uniform(np.log(0.7), np.log(1.4), size=k))
    dwell = np.stack([_dwell_factors(g, n_seeds) for _ in range(k)], axis=1) * base  # (seeds, k)
    dwell = np.maximum(MIN_DWELL, np.round(dwell)).astype(int)

    seeds = np.sort(g.choice(np.arange(1, 10 * n_seeds + 100), size=n_seeds, replace=False)).tolist()
    order = g.permutation(n_seeds)
    if detour and n_seeds < 4:
        raise ValueError("a detour needs at least 4 seeds (2 visiting, 2 not)")
    if unconverged > n_seeds - (4 if detour else 2):
        raise ValueError("too many unconverged seeds")
    stuck = {seeds[i] for i in order[:unconverged]}
    n_detour = (n_seeds - unconverged) // 2 if detour else 0  # half of the converging seeds
    detour_seeds = sorted(seeds[i] for i in order[unconverged:unconverged + n_detour])

    paths = {}
    for i, seed in enumerate(seeds):
        paths[seed] = _seed_path(
            g, dwell[i, :n_states], detour_at if seed in detour_seeds else None, labels["detour"],
            dwell[i, labels["detour"]] if detour else None, labels["post"],
            dwell[i, labels["post"]] if post_convergence_state else None, seed not in stuck)
    if same_length:  # one training budget: each run's last state lasts until the longest run ends
        n_max = max(sum(d for _, d in path) for path, _ in paths.values())
        for path, _ in paths.values():
            path[-1] = (path[-1][0], path[-1][1] + n_max - sum(d for _, d in path))
    steps_all = _schedule(schedule, max(sum(d for _, d in path) for path, _ in paths.values()))
    frames, true_states, convergence, dwells = [], {}, {}, {}
    for seed, (path, conv) in paths.items():
        z = np.concatenate([np.full(d, s) for s, d in path])
        noise = np.einsum("tij,tj->ti", chol[z], g.normal(size=(len(z), n_features)))
        x = (means[z] + noise) * scale + offset
        steps = steps_all[: len(z)]
        frame = pd.DataFrame(x, columns=[f"m{j}" for j in range(n_features)])
        frame.insert(0, "step", steps)
        frame.insert(0, "seed", seed)
        frame["test_accuracy"] = _accuracy(g, len(z), conv)
        frames.append(frame)
        true_states[seed] = z
        convergence[seed] = None if conv is None else int(steps[conv])
        dwells[seed] = path
    table = pd.concat(frames, ignore_index=True)
    if shuffle:
        table = table.iloc[g.permutation(len(table))].reset_index(drop=True)
    return Planted(table=table, true_states=true_states, convergence=convergence,
                   detour_state=labels["detour"], post_state=labels["post"], k=k,
                   features=[f"m{j}" for j in range(n_features)], detour_seeds=detour_seeds,
                   main_states=list(range(n_states)), dwell=dwells, means=means)
