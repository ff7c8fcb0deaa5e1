"""The network's function over training: principal components of the per-example losses.

With ``hooks.per_example_loss = N`` every checkpoint records the loss of N fixed training and N
fixed held-out examples (``examples/loss`` in the run store, their indices in ``probe/``). Each
checkpoint is then a point in a 2N-dimensional space of losses; its trajectory is the *function*
the network computes, seen on those examples (Hu, Jain, Chaulagain & Saphra's follow-up, 2025; cf.
Hoogland et al. 2024), and it turns where the network starts to generalise.

The PCA is fitted jointly over every seed and checkpoint: the mean and the (2N x 2N) scatter
matrix are reduced lazily over the seeds' stores with dask (one pass; nothing of size checkpoints x
2N is held beyond a block), then eigendecomposed; each checkpoint's coordinates on the leading
components are ``function_pc1``, ``function_pc2``, ... (each component's sign fixed so that its
largest loading is positive). They are stored in ``STUDY/function.npz`` and are available as HMM
features (``hmm.features = ["function_pc1", "function_pc2"]``) and in the dashboard.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from vt_core.errors import VtError
from vt_core.names import is_function_feature
from vt_core.storage.handle import Study, StudyRef
from vt_core.storage.layout import layout
from vt_core.storage.location import load_npz, save_npz

PREFIX = "function_pc"
MAX_COMPONENTS = 10


class FunctionError(VtError, ValueError):
    """No per-example losses to analyse, or a function feature that was not computed."""


def loss_matrix(study: StudyRef, seeds: list[int]) -> xr.DataArray:
    """Lazy (dask) per-example losses (seed, step, example) of the committed checkpoints; a seed
    without a checkpoint at a step is NaN there."""
    study = Study.open(study)
    parts = []
    for seed in seeds:
        store = study.run(seed)
        if "examples" not in store.root:
            raise FunctionError(f"seed {seed}: its store has no per-example losses (hooks.per_example_loss was 0 "
                                f"when it trained); `vt rerun {study} --seed {seed}` records them")
        parts.append(store.dataset("examples")["loss"])  # (step, example)
    return xr.concat(parts, dim="seed", join="outer").assign_coords(seed=seeds).transpose("seed", "step", "example")


def fit_pca(x: np.ndarray | xr.DataArray, n_components: int) -> dict[str, np.ndarray]:
    """PCA of the rows of ``x`` (observations x examples; a dask-backed array is reduced lazily):
    mean, components (n, examples), explained variance ratio of each."""
    mean = x.mean(axis=0)
    centred = x - mean
    scatter = centred.T @ centred
    if hasattr(scatter, "compute"):
        mean, scatter = (np.asarray(v) for v in _compute(mean, scatter))
    vals, vecs = np.linalg.eigh(np.asarray(scatter, dtype=np.float64))
    order = np.argsort(vals)[::-1]
    vals, vecs = np.clip(vals[order], 0, None), vecs[:, order]
    n = int(min(n_components, len(vals)))
    comps = vecs[:, :n].T
    flip = np.sign(comps[np.arange(n), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(flip == 0, 1, flip)[:, None]
    total = vals.sum()
    return {"mean": np.asarray(mean, dtype=np.float64), "components": comps,
            "explained_variance_ratio": vals[:n] / total if total > 0 else np.zeros(n)}


def _compute(*arrays):
    import dask

    return dask.compute(*arrays)


def fit_function(study: StudyRef, seeds: list[int]) -> dict:
    """The joint PCA of every seed's per-example losses -> ``function.npz``; returns its summary."""
    study = Study.open(study)
    loss = loss_matrix(study, seeds)
    stacked = loss.stack(obs=("seed", "step")).transpose("obs", "example")
    ok = np.isfinite(stacked).all("example").compute()
    rows = stacked.isel(obs=np.flatnonzero(ok.values))
    if rows.sizes["obs"] < 2:
        raise FunctionError(f"{rows.sizes['obs']} checkpoints with per-example losses: a PCA needs at least 2")
    pca = fit_pca(rows.data, min(MAX_COMPONENTS, rows.sizes["example"], rows.sizes["obs"] - 1))
    pcs = (np.asarray(rows.values) - pca["mean"]) @ pca["components"].T
    store = study.run(seeds[0])
    save_npz(study.layout.function, **pca, pcs=pcs, seed=rows["seed"].values.astype(np.int64),
             step=rows["step"].values.astype(np.int64),
             example_index=np.asarray(store.root["probe"]["example_index"][:]),
             example_split=np.asarray(store.root["probe"]["example_split"][:]))
    return {"n_components": len(pca["components"]), "n_checkpoints": int(rows.sizes["obs"]),
            "explained_variance_ratio": pca["explained_variance_ratio"].tolist()}


def load_function(study: StudyRef) -> dict[str, np.ndarray]:
    path = layout(study).function
    if not path.is_file():
        raise FunctionError(f"{path} not found: the function's PCA is computed by `vt analyze {study}` when "
                            f"hooks.per_example_loss is set")
    return load_npz(path)


def function_features(study: StudyRef, names: list[str], seeds, steps) -> xr.DataArray:
    """``function_pcK`` columns (seed, step, metric) on the given coordinates (NaN where missing)."""
    f = load_function(study)
    n = len(f["components"])
    out = np.full((len(seeds), len(steps), len(names)), np.nan)
    s_at = {int(s): i for i, s in enumerate(seeds)}
    t_at = {int(t): i for i, t in enumerate(steps)}
    for j, name in enumerate(names):
        if not is_function_feature(name) or int(name.removeprefix(PREFIX)) > n:
            raise FunctionError(f"feature {name!r}: the function's PCA has {n} components (function_pc1 .. "
                                f"function_pc{n})")
        k = int(name.removeprefix(PREFIX)) - 1
        for seed, step, v in zip(f["seed"], f["step"], f["pcs"][:, k]):
            if int(seed) in s_at and int(step) in t_at:
                out[s_at[int(seed)], t_at[int(step)], j] = v
    return xr.DataArray(out, dims=("seed", "step", "metric"),
                        coords={"seed": list(seeds), "step": list(steps), "metric": list(names)})
