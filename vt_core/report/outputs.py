"""What the dashboard and the paper figures both draw, computed once: the study's analysis
outputs, the orders of the seeds (by convergence, grouped by path), run-length segments of the
decoded states, thinning, and the mean and quantile band of a metric over seeds coloured by the
modal state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vt_core.analysis.records import Analysis, Selection
from vt_core.storage.handle import StudyRef
from vt_core.storage.location import read_json

BAND_QUANTILES = (0.1, 0.9)


@dataclass
class Outputs:
    """A study's analysis outputs as the views read them (``value``: metrics (seed, step, metric))."""

    name: str
    context: str
    analysis: Analysis
    selection: Selection
    paths: dict
    value: Any  # xarray.DataArray


def load_outputs(study: StudyRef) -> Outputs:
    from vt_core.analysis.records import load_analysis, load_selection
    from vt_core.metrics.store import open_metrics
    from vt_core.storage.handle import Study

    study = Study.open(study)
    files = study.layout
    config = study.config
    a = load_analysis(study)
    model = getattr(config.model, "class_name", None)  # imported or recorded: the user's model, no task of vt's
    what = f"{model.rsplit('.', 1)[-1]} checkpoints" if model else f"{config.model.name} on {config.data.name}"
    context = f"{len(config.seeds)} seeds · {what} · {len(a['features'])} features"
    fix = f"`vt analyze {study}` recomputes it"
    return Outputs(config.name, context, a, load_selection(study),
                   read_json(files.paths, fix), open_metrics(study)["value"].load())


def thin(n: int, states: np.ndarray | None, max_points: int) -> np.ndarray:
    """Indices kept of ``n`` checkpoints: every k-th, the last, and each change of state."""
    if n <= max_points:
        return np.arange(n)
    keep = set(np.linspace(0, n - 1, max_points // 2).round().astype(int).tolist())
    if states is not None and len(states) == n:
        keep.update((np.flatnonzero(np.diff(states) != 0) + 1).tolist())
    return np.array(sorted(keep))


def segments(steps: np.ndarray, states: np.ndarray) -> list[tuple[float, float, int]]:
    """Run-length segments ``(start, end, state)``; a segment ends where the next one starts (the
    last one a step gap after the last checkpoint)."""
    if len(steps) == 0:
        return []
    gap = steps[-1] - steps[-2] if len(steps) > 1 else 1.0
    edges = np.append(steps, steps[-1] + gap).astype(float)
    change = np.flatnonzero(np.diff(states) != 0) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(states)]])
    return [(edges[s], edges[e], int(states[s])) for s, e in zip(starts, ends)]


def path_of(states) -> tuple[int, ...]:
    """The states a seed passes through, in order, each run once: ``(0, 2, 3)``."""
    s = np.asarray(states, int)
    if s.size == 0:
        return ()
    return tuple(int(v) for v in s[np.concatenate([[True], s[1:] != s[:-1]])])


def path_text(path: tuple[int, ...]) -> str:
    return " → ".join(map(str, path)) or "no states"


def seed_orders(paths: dict, conv: dict) -> dict[str, list[str]]:
    """The seeds (as strings) three ways: by number; by convergence step (never-converged last);
    grouped by path (the commonest path first), by convergence within a group."""
    seeds = sorted(paths, key=int)
    never = float("inf")
    by_conv = sorted(seeds, key=lambda s: (conv.get(s) if conv.get(s) is not None else never, int(s)))
    groups = path_groups(paths, conv)
    return {"seed": seeds, "convergence": by_conv, "path": [s for _, members in groups for s in members]}


def path_groups(paths: dict, conv: dict) -> list[tuple[tuple[int, ...], list[str]]]:
    """Seeds grouped by the path they take, commonest path first; within a group by convergence."""
    never = float("inf")
    groups: dict[tuple[int, ...], list[str]] = {}
    for s in sorted(paths, key=lambda s: (conv.get(s) if conv.get(s) is not None else never, int(s))):
        groups.setdefault(path_of(paths[s]["states"]), []).append(s)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def state_grid(value, paths: dict) -> np.ndarray:
    """(seed, step) decoded state of each seed at each step of ``value`` (-1: none)."""
    steps = np.asarray(value["step"].values)
    out = np.full((value.sizes["seed"], len(steps)), -1, int)
    order = np.argsort(steps)
    for i, seed in enumerate(value["seed"].values):
        d = paths.get(str(int(seed)), {"steps": [], "states": []})
        if not d["steps"]:
            continue
        at = np.searchsorted(steps, d["steps"], sorter=order)
        at = np.clip(at, 0, len(steps) - 1)
        hit = steps[order[at]] == np.asarray(d["steps"])
        out[i, order[at[hit]]] = np.asarray(d["states"], int)[hit]
    return out


def modal_state(grid: np.ndarray) -> np.ndarray:
    """Per step: the state most seeds are in (-1 where no seed has one)."""
    k = int(grid.max()) + 1 if grid.size else 0
    if k == 0:
        return np.full(grid.shape[1], -1)
    counts = np.stack([(grid == s).sum(axis=0) for s in range(k)])
    return np.where(counts.max(axis=0) > 0, counts.argmax(axis=0), -1)


def band(value, metric: str | None = None, steps: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Mean and the 10%/90% quantiles over seeds per step (NaN where no seed has a value), of
    ``metric`` (arrays (step,)) or of every metric at once (arrays (step, metric)); ``steps``: the
    indices of the steps wanted (default: all)."""
    v = np.asarray((value.sel(metric=metric) if metric is not None else value).values, float)  # (seed, step[, m])
    if steps is not None:
        v = v[:, steps]
    ok = np.isfinite(v).any(axis=0)
    mean, lo, hi = (np.full(v.shape[1:], np.nan) for _ in range(3))
    if ok.any():
        mean[ok] = np.nanmean(v[:, ok], axis=0)
        lo[ok], hi[ok] = np.nanquantile(v[:, ok], BAND_QUANTILES, axis=0)
    return {"mean": mean, "lo": lo, "hi": hi}
