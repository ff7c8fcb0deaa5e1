"""vt's analysis of any trajectories: a table of (seed, step, features) from anywhere (W&B exports,
CSVs of the paper's code, another tool's metrics) gets what a study gets: model selection with
cross-validation and bootstrap, decoded states, transition explanations, detours, with no Prefect
and no run stores. ``vt states TABLE.csv`` runs it from the command line.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vt_core.analysis import states
from vt_core.analysis import transitions as analysis
from vt_core.analysis.hmm import sequences_from_rows
from vt_core.analysis.parallel import pool as _pool
from vt_core.config.study_config import ConfigError, HMMConfig
from vt_core.errors import VtError
from vt_core.storage.layout import layout
from vt_core.storage.location import read_json


class TrajectoryError(VtError, ValueError):
    """The table cannot be read as trajectories (a missing column, no numeric feature)."""


def read_table(path: str | Path):
    """A .csv or .parquet file as a DataFrame (parquet needs pyarrow: pip install pyarrow)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise TrajectoryError(f"{path} not found; give a .csv or .parquet table of trajectories")
    if path.suffix.lower() == ".parquet":
        try:
            return pd.read_parquet(path)
        except ImportError as err:
            raise TrajectoryError(f"{path}: reading parquet needs pyarrow ({err}); pip install pyarrow, "
                                  f"or give a .csv") from None
    if path.suffix.lower() in (".csv", ".txt"):
        return pd.read_csv(path)
    raise TrajectoryError(f"{path}: unknown table format {path.suffix!r}; give a .csv or .parquet file")


def _frame(table: Any):
    import pandas as pd

    if isinstance(table, pd.DataFrame):
        return table
    if hasattr(table, "to_dataframe"):  # an xarray Dataset with seed and step dimensions
        return table.to_dataframe().reset_index()
    raise TrajectoryError(f"a table of trajectories is a pandas DataFrame or an xarray Dataset, not "
                          f"{type(table).__name__}")


def _convergence(df, seed: str, step: str, convergence, threshold: float) -> dict[int, int | None]:
    seeds = sorted(int(s) for s in df[seed].unique())
    if convergence is None:
        return {s: None for s in seeds}
    if isinstance(convergence, str):
        if convergence not in df.columns:
            raise TrajectoryError(f"convergence column {convergence!r} is not in the table (columns: {list(df.columns)})")
        out = {}
        for s in seeds:
            rows = df[df[seed] == s]
            out[s] = analysis.convergence_step(rows[step].to_numpy(), rows[convergence].to_numpy(), threshold)
        return out
    return {s: (None if convergence.get(s, convergence.get(str(s))) is None
                else int(convergence.get(s, convergence.get(str(s))))) for s in seeds}


#: columns that name the run, and the step, in exports of other tools (W&B, TensorBoard, Lightning CSV)
RUN_COLUMNS = ("seed", "run", "run_name", "name", "run_id", "id", "experiment", "group")
STEP_COLUMNS = ("step", "_step", "global_step", "Step", "trainer/global_step", "epoch", "iteration")


def _check_columns(df, seed: str, step: str, features: list[str] | None) -> None:
    """Every named column is in the table; a missing run or step column is named with the option
    that sets it and the table's likely candidates."""
    for col, what, option, candidates in ((seed, "names the run (a seed, a run name)", "seed", RUN_COLUMNS),
                                          (step, "holds the training step", "step", STEP_COLUMNS)):
        if col not in df.columns:
            likely = [c for c in candidates if c in df.columns]
            hint = f"; here perhaps {likely[0]!r}" if likely else ""
            raise TrajectoryError(f"columns [{col!r}] are not in the table: give the column that {what} with "
                                  f"--{option}-col ({option}=... in Python){hint}; it has {list(df.columns)}")
    missing = [c for c in features or [] if c not in df.columns]
    if missing:
        raise TrajectoryError(f"feature columns {missing} are not in the table; it has {list(df.columns)}")


def run_labels(column) -> list | None:
    """The runs' labels when they are not integers (W&B run names, hashes), in sorted order; None
    when every label is an integer (kept as the seed)."""
    values = list(column.unique())
    try:
        if all(float(v) == int(float(v)) for v in values) and not any(isinstance(v, str) for v in values):
            return None
    except (TypeError, ValueError):
        pass
    return sorted(values, key=str)


def relabelled(result: dict, labels: list) -> dict:
    """``result`` with every seed number put back to its run's label: lists of seeds, dicts keyed by
    seed, the decoded paths (analysis.json keeps the numbers and ``seed_labels``)."""
    name = {str(i): label for i, label in enumerate(labels)}

    def seeds(xs):
        return [name[str(s)] for s in xs]

    def keyed(d):
        return {name[str(k)]: v for k, v in d.items()}

    out = dict(result)
    out["states"] = [dict(s, seeds=seeds(s.get("seeds", []))) for s in result.get("states", [])]
    out["transitions"] = [dict(t, seeds=seeds(t.get("seeds", [])), first_step=keyed(t.get("first_step", {})))
                          for t in result.get("transitions", [])]
    graph = dict(result.get("graph") or {})
    graph["edges"] = [dict(e, seeds=seeds(e.get("seeds", []))) for e in graph.get("edges", [])]
    out["graph"] = graph
    for key in ("convergence_step", "time_in_states", "seed_dissimilarity", "paths"):
        out[key] = keyed(result.get(key) or {})
    for key in ("unusual_seeds", "accuracy_unrecorded"):
        out[key] = seeds(result.get(key) or [])
    out["regression"] = dict(result.get("regression") or {}, seeds=seeds((result.get("regression") or {}).get("seeds", [])))
    return out


def hmm_config(settings: dict | HMMConfig | None) -> HMMConfig:
    if isinstance(settings, HMMConfig):
        return settings
    from pydantic import ValidationError

    try:
        return HMMConfig.model_validate(settings or {})
    except ValidationError as err:
        bad = "; ".join(f"hmm.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid HMM settings: {bad}") from None


def analyse_trajectories(table: Any, features: list[str] | None = None, *, seed: str = "seed", step: str = "step",
                         convergence: str | dict | None = None, hmm: dict | HMMConfig | None = None,
                         name: str = "trajectories", out: str | Path | None = None, workers: int = 1) -> dict:
    """The analysis of ``table`` (long format: one row per seed and step, in any order).

    ``seed``: the column naming the run (integers are seeds; other labels, such as W&B's run names,
    are numbered for the fit and given back as labels in the result, with ``seed_labels`` in
    analysis.json). ``features``: the columns to model (default: every numeric column but seed,
    step, the convergence column and bookkeeping columns whose names start with ``_``, such as
    W&B's ``_runtime`` and ``_timestamp``). ``convergence``: a column (the first step where it reaches
    ``hmm.convergence_threshold``), or a dict seed -> step (None: never), or None (no detours).
    ``hmm``: settings as in a study config's ``[hmm]``. ``out``: keep the files there (``hmm/``,
    ``analysis.json``); by default a temporary directory, removed. Returns analysis.json's content
    plus ``selection`` (the whole model-selection record), ``paths`` and ``bootstrap``."""
    cfg = hmm_config(hmm)
    df = _frame(table)
    _check_columns(df, seed, step, features)
    labels = run_labels(df[seed])
    if labels is not None:  # runs named by strings (W&B's "sp-seed0"): numbered here, named in the result
        df = df.assign(**{seed: df[seed].map({label: i for i, label in enumerate(labels)})})
        if isinstance(convergence, dict):
            convergence = {labels.index(k) if k in labels else k: v for k, v in convergence.items()}
    conv_col = convergence if isinstance(convergence, str) else None
    if features is None:
        features = [c for c in df.columns if c not in (seed, step, conv_col) and not str(c).startswith("_")
                    and np.issubdtype(df[c].dtype, np.number)]
    if not features:
        raise TrajectoryError("the table has no numeric feature column to model; name them with features=[...]")
    conv = _convergence(df, seed, step, convergence, cfg.convergence_threshold)
    seqs = sequences_from_rows(df[seed].to_numpy(), df[step].to_numpy(), df[features].to_numpy(dtype=float),
                               list(features))
    root = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="vt-states-"))
    try:
        plan = states.prepare(root, seqs, cfg)
        with _pool(workers) as pool:
            rows = states.run_fits(root, plan["jobs"], cfg, map if pool is None else pool.map)
        states.finalize(root, rows, cfg)
        extra = {"seed_labels": {str(i): label for i, label in enumerate(labels)}} if labels is not None else None
        result: dict = dict(states.explain(root, cfg, conv, name, extra=extra))
        result["selection"] = read_json(layout(root).selection)  # the whole selection, not its summary
        result["bootstrap"] = result["selection"].get("bootstrap")
        result["paths"] = read_json(layout(root).paths)
        return relabelled(result, labels) if labels is not None else result
    finally:
        if out is None:
            shutil.rmtree(root, ignore_errors=True)
