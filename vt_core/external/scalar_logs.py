"""The user's own training logs (`vt import --scalars`): losses, accuracies and epochs per step,
matched to the imported checkpoints so that convergence and detours work on imported series.

What is read:

* a table — CSV, parquet, JSON records or JSON lines — with a step column and any scalar columns;
  one per seed (a path with ``{seed}``), or one for every seed with a ``seed`` (or ``run``) column;
* a W&B run's exported history (``run.history()`` saved as CSV: ``_step``, ``_runtime``,
  sparse rows) or a W&B chart export (``Step``, ``RUN - metric``, ``RUN - metric__MIN``, ...);
* a TensorBoard event directory (its scalars, through ``tensorboard``'s event accumulator), one per
  seed (``{seed}``) or a directory of run subdirectories.

Column names: the vt names (``step``, ``epoch``, ``train_loss``, ``test_loss``, ``train_accuracy``,
``test_accuracy``), their common spellings in W&B, TensorBoard, Lightning and Hugging Face logs
(:data:`ALIASES`: ``_step``, ``global_step``, ``val/acc``, ``eval_loss``, ...), or a mapping given by
the user (``{"acc/holdout": "test_accuracy", "epoch": "step"}``) over both. Runs named with strings
are seeds by ``seed<N>`` in the name, or by a mapping (``{"brisk-sun-3": 0}``); nothing else is guessed.

Matching (:func:`match_steps`): each checkpoint at step ``s`` takes, for each scalar, the last row
logged at or before ``s`` and after the previous checkpoint — so a value is used for one checkpoint
at most and a log that stops early leaves NaN after it, never a stale value carried on. A log
whose steps are in another unit than the checkpoints' (epochs against steps) is refused with what
to map. Rows logged twice at a step (a resumed run) keep the last.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypedDict

import numpy as np
import pandas as pd

from vt_core.errors import VtError
from vt_core.storage.location import Location, location

SCALAR_COLUMNS = ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "epoch")
ALIASES: dict[str, tuple[str, ...]] = {
    "step": ("step", "_step", "Step", "global_step", "trainer/global_step", "train/global_step"),
    "epoch": ("epoch", "Epoch", "trainer/epoch", "train/epoch"),
    "train_loss": ("train_loss", "train/loss", "loss/train", "training_loss", "train_loss_epoch", "loss"),
    "test_loss": ("test_loss", "test/loss", "loss/test", "val_loss", "val/loss", "loss/val", "eval_loss",
                  "eval/loss", "validation_loss", "valid_loss"),
    "train_accuracy": ("train_accuracy", "train_acc", "train/acc", "train/accuracy", "accuracy/train", "acc/train"),
    "test_accuracy": ("test_accuracy", "test_acc", "test/acc", "test/accuracy", "accuracy/test", "acc/test",
                      "val_acc", "val/acc", "val_accuracy", "val/accuracy", "accuracy/val", "acc/val",
                      "eval_accuracy", "eval/accuracy", "eval_acc", "valid_acc", "validation_accuracy"),
}
_RUN_COLUMNS = ("seed", "run", "run_name", "name", "Name")
_WANDB_CHART = re.compile(r"^(?P<run>.+?) - (?P<metric>.+?)(?P<agg>__MIN|__MAX)?$")
_SEED_IN_NAME = re.compile(r"seed[_\-=]?(\d+)", re.IGNORECASE)


class ScalarLogError(VtError, ValueError):
    """A log that cannot be read or matched to the checkpoints as asked."""


class MatchSummary(TypedDict):
    scalar: str
    matched: int
    exact: int
    max_lag: int
    checkpoints: int


# ------------------------------------------------------------------------------------------------
# reading


def _read_table(path: Location) -> pd.DataFrame:
    import io

    data = path.read_bytes()
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(data))
        if name.endswith((".jsonl", ".ndjson")):
            return pd.read_json(io.BytesIO(data), lines=True)
        if name.endswith(".json"):
            return pd.read_json(io.BytesIO(data))
        return pd.read_csv(io.BytesIO(data))
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise ScalarLogError(f"--scalars {path}: cannot be read as a table ({err}); give a CSV, parquet, "
                             f"JSON or a TensorBoard event directory") from err


def _read_tensorboard(path: Location) -> pd.DataFrame:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as err:
        raise ScalarLogError("--scalars: reading a TensorBoard directory needs the tensorboard package "
                             "(pip install 'vt[tensorboard]')") from err
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags().get("scalars", [])
    if not tags:
        raise ScalarLogError(f"--scalars {path}: no TensorBoard scalars in it (tags: none); log them with "
                             f"SummaryWriter.add_scalar")
    series = {}
    for tag in tags:
        events = acc.Scalars(tag)
        s = pd.Series([e.value for e in events], index=[e.step for e in events], dtype=float)
        series[tag] = s[~s.index.duplicated(keep="last")]  # a resumed run logs a step again: the last wins
    out = pd.DataFrame(series).sort_index()
    return out.rename_axis("step").reset_index()


def _has_events(path: Location) -> bool:
    """A directory holding TensorBoard event files itself (the event accumulator reads those)."""
    return path.is_dir() and any(p.name.startswith("events.out.tfevents") for p in path.iterdir())


def _read_one(path: Location) -> pd.DataFrame:
    if path.is_dir():
        if not _has_events(path):
            raise ScalarLogError(f"--scalars {path}: a directory without TensorBoard event files "
                                 f"(events.out.tfevents.*)")
        return _read_tensorboard(path)
    if not path.is_file():
        raise ScalarLogError(f"--scalars {path}: no such file or directory")
    return _read_table(path)


def _wide_wandb_chart(df: pd.DataFrame) -> pd.DataFrame | None:
    """A W&B chart export (``Step``, ``RUN - metric``, ``RUN - metric__MIN``...) as long rows
    (``run``, ``step``, metric columns); None if the table is not one."""
    cols = [c for c in df.columns if c != "Step"]
    parsed = [_WANDB_CHART.match(str(c)) for c in cols]
    if "Step" not in df.columns or not cols or not all(parsed):
        return None
    frames = []
    for run in dict.fromkeys(m["run"] for m in parsed if m is not None):
        keep = {c: m["metric"] for c, m in zip(cols, parsed) if m is not None and m["run"] == run and not m["agg"]}
        part = df[["Step", *keep]].rename(columns={"Step": "step", **keep})
        frames.append(part.assign(run=run))
    return pd.concat(frames, ignore_index=True)


def _canonical(df: pd.DataFrame, names: dict[str, str], where: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """The log's columns renamed to vt's (``step`` and :data:`SCALAR_COLUMNS`, plus ``seed``/``run``);
    returns the frame and ``{vt name: the log's column}``."""
    used: dict[str, str] = {}
    for col, target in names.items():
        if col in df.columns:
            used[target] = col
    for target, aliases in ALIASES.items():
        if target in used:
            continue
        found = [a for a in aliases if a in df.columns and a not in used.values()]
        if len(found) > 1 and not (target == "train_loss" and found[0] != "loss"):
            raise ScalarLogError(f"--scalars {where}: columns {found} could each be {target}; say which with "
                                 f"--scalar-names '{{\"{found[0]}\": \"{target}\"}}'")
        if found:
            used[target] = found[0]
    if "step" not in used:
        raise ScalarLogError(f"--scalars {where}: no step column (looked for {', '.join(ALIASES['step'])}; columns: "
                             f"{', '.join(map(str, df.columns[:12]))}); map one with --scalar-names "
                             f"'{{\"COLUMN\": \"step\"}}'")
    if not any(t in used for t in SCALAR_COLUMNS if t != "epoch"):
        raise ScalarLogError(f"--scalars {where}: none of its columns is a loss or an accuracy vt knows "
                             f"({', '.join(map(str, df.columns[:12]))}); map them with --scalar-names "
                             f"'{{\"COLUMN\": \"test_accuracy\"}}'")
    out = pd.DataFrame({t: pd.to_numeric(df[c], errors="coerce") for t, c in used.items()})
    for run_col in _RUN_COLUMNS:
        if run_col in df.columns and run_col not in used.values():
            out["run"] = df[run_col].values
            break
    return out, used


def _seed_of(run, runs: dict[str, int]) -> int:
    if str(run) in runs:
        return runs[str(run)]
    if isinstance(run, (int, np.integer)) or (isinstance(run, float) and float(run).is_integer()):
        return int(run)
    if isinstance(run, str) and run.strip().isdigit():
        return int(run)
    m = _SEED_IN_NAME.search(str(run))
    if m:
        return int(m.group(1))
    raise ScalarLogError(f"--scalars: run {run!r} names no seed; say which seed each run is with "
                         f"--scalar-runs '{{\"{run}\": 0}}'")


def read_scalar_logs(spec: str, seeds: Iterable[int], *, source: str | Location | None = None,
                     names: dict[str, str] | None = None,
                     runs: dict[str, int] | None = None) -> tuple[dict[int, pd.DataFrame], dict[str, str]]:
    """Each seed's log as rows of ``step`` and vt's scalar columns (those found), with ``{vt name:
    log column}``. ``spec``: a file or directory, with ``{seed}`` for one per seed; a relative path
    that does not exist here is looked for under ``source``."""
    seeds, names, runs = sorted(seeds), dict(names or {}), {str(k): int(v) for k, v in (runs or {}).items()}
    bad = {c: t for c, t in names.items() if t not in ("step", "seed", *SCALAR_COLUMNS)}
    if bad:
        c, t = next(iter(bad.items()))
        raise ScalarLogError(f"--scalar-names: {c!r} -> {t!r}: map columns to step, seed or one of "
                             f"{', '.join(SCALAR_COLUMNS)}")
    names = {c: ("run" if t == "seed" else t) for c, t in names.items()}
    frames: dict[int, pd.DataFrame] = {}
    used: dict[str, str] = {}
    if "{seed}" in spec:
        for seed in seeds:
            path = _resolve(spec.replace("{seed}", str(seed)), source)
            df, used = _canonical(_read_one(path), names, str(path))
            frames[seed] = df.drop(columns=["run"], errors="ignore")
        return {s: _tidy(f) for s, f in frames.items()}, used
    path = _resolve(spec, source)
    runs_dirs = [sub for sub in sorted(path.iterdir(), key=lambda p: p.name) if sub.is_dir() and _has_events(sub)] \
        if path.is_dir() and not _has_events(path) else []
    if runs_dirs:  # a TensorBoard log directory of runs: each subdirectory a run, named by its folder
        raw = pd.concat([_read_tensorboard(sub).assign(run=sub.name) for sub in runs_dirs], ignore_index=True)
    else:
        raw = _read_one(path)
        chart = _wide_wandb_chart(raw)
        raw = chart if chart is not None else raw
    df, used = _canonical(raw, names, str(path))
    if "run" not in df.columns:
        if len(seeds) > 1:
            raise ScalarLogError(f"--scalars {path}: one log for {len(seeds)} seeds but no seed or run column; "
                                 f"give one file per seed ('logs/seed{{seed}}.csv') or a seed column")
        return {seeds[0]: _tidy(df)}, used
    df["seed"] = [_seed_of(r, runs) for r in df.pop("run")]
    missing = [s for s in seeds if s not in set(df["seed"])]
    if missing:
        raise ScalarLogError(f"--scalars {path}: no rows for seeds {missing} (it has {sorted(set(df['seed']))}); "
                             f"map run names to seeds with --scalar-runs")
    return {s: _tidy(df[df["seed"] == s].drop(columns="seed")) for s in seeds}, used


def _resolve(spec: str, source: str | Location | None) -> Location:
    here = location(spec)
    if here.exists() or source is None:
        return here
    under = location(source) / spec
    return under if under.exists() else here


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    """One row per step, in step order: each column's last value logged at that step (W&B's sparse
    history rows; a resumed run that logs a step again)."""
    df = df.dropna(subset=["step"])
    df = df.assign(step=df["step"].astype(np.int64))
    return df.sort_values("step", kind="stable").groupby("step", sort=True).last().reset_index()


# ------------------------------------------------------------------------------------------------
# matching to the checkpoints


def match_steps(log: pd.DataFrame, steps: list[int], where: str = "") -> tuple[dict[int, dict[str, float]],
                                                                                   list[MatchSummary]]:
    """For each checkpoint step, each scalar's value: the last one logged at or before it and after
    the previous checkpoint (module docstring); NaN where none. Returns ``{step: {scalar: value}}``
    and one summary per scalar."""
    steps = sorted(int(s) for s in steps)
    if not steps:
        return {}, []
    lo, hi = int(log["step"].min()), int(log["step"].max())
    if steps[-1] > 0 and (hi > 2 * steps[-1] + 1 or hi < steps[-1] / 2 - 1 or lo > steps[-1]):
        raise ScalarLogError(f"--scalars{where}: the log's steps run {lo}-{hi} while the checkpoints' run "
                             f"{steps[0]}-{steps[-1]}: are they counted in the same unit? Map the column that "
                             f"counts like the checkpoints to step (--scalar-names '{{\"epoch\": \"step\"}}')")
    out: dict[int, dict[str, float]] = {s: {} for s in steps}
    summaries: list[MatchSummary] = []
    ckpt = np.asarray(steps)
    for col in [c for c in SCALAR_COLUMNS if c in log.columns]:
        rows = log[["step", col]].dropna()
        logged = rows["step"].to_numpy()
        values = rows[col].to_numpy(dtype=float)
        idx = np.searchsorted(logged, ckpt, side="right") - 1  # the last row at or before each checkpoint
        prev = np.concatenate([[np.iinfo(np.int64).min], ckpt[:-1]])
        ok = (idx >= 0) & (logged[np.clip(idx, 0, None)] > prev) if len(logged) else np.zeros(len(ckpt), bool)
        lags = ckpt[ok] - logged[idx[ok]]
        for s, good, i in zip(steps, ok, idx):
            out[s][col] = float(values[i]) if good else float("nan")
        summaries.append({"scalar": col, "matched": int(ok.sum()), "exact": int((lags == 0).sum()),
                          "max_lag": int(lags.max()) if lags.size else 0, "checkpoints": len(steps)})
    return out, summaries


def describe_match(summaries: list[MatchSummary], used: dict[str, str]) -> str:
    """One line: which column became which scalar, and how its rows met the checkpoints."""
    parts = []
    for m in summaries:
        col = used.get(m["scalar"], m["scalar"])
        name = m["scalar"] if col == m["scalar"] else f"{m['scalar']} (from {col!r})"
        how = f"{m['matched']} of {m['checkpoints']} checkpoints"
        if m["matched"] > m["exact"]:
            how += f", {m['exact']} at their step, the rest from the last row before (at most {m['max_lag']} steps)"
        parts.append(f"{name}: {how}")
    return "scalars matched to checkpoints (the last row at or before each, after the previous one): " + \
        "; ".join(parts)
