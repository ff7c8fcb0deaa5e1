"""What every fuzz test shares: a tiny config, the `vt` command run in-process (with a guard that
turns "a run was started" into a failure), snapshots of directories, and one small finished study
(built once per session, on a temporary Prefect server) that the damage and payload tests copy.

Written against the contract of issue 17, not against vt's code: helpers locate files by the
documented study layout (README, "What a study directory holds") and fail loudly when it changes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT, tiny_dict, toml_value, write_toml  # noqa: F401  (shared by the fuzz tests)

#: the repository (subprocesses run ``python -m flows.cli`` from here)
ROOT_DIR = ROOT
#: every `vt` invocation must finish within this (a refused config is refused at once)
WALL_CLOCK_S = 30.0
#: the longest output a refusal may print
MAX_OUTPUT = 2000


def pytest_collection_modifyitems(config, items):
    """Tests that need the Prefect server (they run flows) are marked ``flow`` like tests/flows."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents and "prefect_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.flow)


# --- configs -------------------------------------------------------------------------------------


# --- running vt ----------------------------------------------------------------------------------


class FlowStarted(BaseException):
    """Raised by the guard in place of any Prefect flow: the command got as far as starting one.
    A BaseException, so that no ``except Exception`` in vt can turn it into an error line."""


@pytest.fixture
def no_flows(monkeypatch):
    """Every Prefect flow call raises :class:`FlowStarted` instead of running (nothing trains)."""
    from prefect.flows import Flow

    def refuse(self, *args, **kwargs):
        raise FlowStarted(f"flow {getattr(self, 'name', '?')!r} was started")

    monkeypatch.setattr(Flow, "__call__", refuse)


@dataclass
class Run:
    args: list[str]
    exit_code: int | None
    output: str
    exception: BaseException | None
    elapsed: float
    flow_started: bool = False

    def describe(self) -> str:
        exc = "" if self.exception is None else f" exception={type(self.exception).__name__}: {self.exception}"
        return (f"`vt {' '.join(self.args)}` -> exit {self.exit_code} in {self.elapsed:.1f} s{exc}"
                f"{' (a flow was started)' if self.flow_started else ''}\n--- output ---\n{self.output[:4000]}")


def _steady_log_streams() -> None:
    """Point every logging stream handler at the process's own stderr (fd 2, which pytest and
    ``capfd`` capture). Prefect's console handler keeps the ``sys.stderr`` it was created with:
    inside a CliRunner that is a buffer closed when the invocation ends, and every later log line
    would print a "--- Logging error ---" traceback that a real terminal never shows."""
    import logging

    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in lg.handlers:
            ours = type(h).__module__.startswith("prefect") or getattr(getattr(h, "stream", None), "closed", False)
            if ours and isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                h.stream = sys.__stderr__
                if hasattr(h, "console"):
                    h.console.file = sys.__stderr__


def vt(*args) -> Run:
    """``vt ARGS`` in-process (Typer's CliRunner); stdout and stderr interleaved. What Prefect logs
    goes to the process's stderr (read it with ``capfd``)."""
    from typer.testing import CliRunner

    from flows.cli import app

    args = [str(a) for a in args]
    _steady_log_streams()
    start = time.perf_counter()
    try:
        res = CliRunner().invoke(app, args)
    except FlowStarted as err:
        return Run(args, None, "", err, time.perf_counter() - start, flow_started=True)
    finally:
        _steady_log_streams()
    return Run(args, res.exit_code, res.output, res.exception, time.perf_counter() - start)


def with_logs(run: Run, capfd) -> str:
    """The command's output and what was logged to the process's streams meanwhile (Prefect's
    logs: a user sees them in the same terminal). Call ``capfd.readouterr()`` before the command."""
    cap = capfd.readouterr()
    return "\n".join([run.output, cap.out, cap.err])


def assert_no_traceback_logged(run: Run, text: str) -> None:
    assert "Traceback" not in text, f"a traceback was printed or logged:\n{run.describe()}\n--- logs ---\n{text[-6000:]}"


def error_lines(run: Run) -> list[str]:
    return [line for line in run.output.splitlines() if line.startswith("error:")]


def assert_clean(run: Run) -> None:
    """No traceback, and any exception is the command's exit."""
    assert "Traceback" not in run.output, f"traceback in the output:\n{run.describe()}"
    assert run.exception is None or isinstance(run.exception, SystemExit), f"uncaught exception:\n{run.describe()}"


def mentions(text: str, token: str) -> bool:
    """``token`` in ``text`` as a whole word or path (not inside a longer identifier). A dotted
    field path also matches with one tag between its parts (``data.sparse_parity.k`` names
    ``data.k``: the data kind is part of the path pydantic reports)."""
    if "." in token and not token.startswith(("/", ".")) and re.fullmatch(r"[\w.]+", token):
        parts = token.split(".")
        body = re.escape(parts[0]) + "".join(r"\.(?:[\w-]+\.)?" + re.escape(p) for p in parts[1:])
    else:
        body = re.escape(token)
    return re.search(r"(?<![A-Za-z0-9_])" + body + r"(?![A-Za-z0-9_])", text) is not None


def assert_refused(run: Run, names: tuple[str, ...] | list[str], *, wall_clock: float = WALL_CLOCK_S) -> None:
    """The contract of a refusal: exit != 0, an ``error:`` line, naming one of ``names``, short,
    no traceback, quick, and no run started."""
    assert not run.flow_started, f"vt accepted the input and started a Prefect flow:\n{run.describe()}"
    assert run.exit_code not in (0, None), f"vt accepted the input (exit 0):\n{run.describe()}"
    assert_clean(run)
    assert error_lines(run), f"no line starts with 'error:':\n{run.describe()}"
    assert len(run.output) <= MAX_OUTPUT, f"output is {len(run.output)} characters (> {MAX_OUTPUT}):\n{run.describe()}"
    assert any(mentions(run.output, n) for n in names), f"the output names none of {list(names)}:\n{run.describe()}"
    assert run.elapsed < wall_clock, f"took {run.elapsed:.1f} s (>= {wall_clock} s):\n{run.describe()}"


# --- snapshots -----------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, object]:
    """Every entry under ``root``: a file's bytes, a directory's marker, a link's target."""
    out: dict[str, object] = {}
    if not root.exists() and not root.is_symlink():
        return out
    if root.is_file():
        return {".": root.read_bytes()}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = os.path.relpath(dirpath, root)
        out[rel + "/"] = "dir"
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            key = os.path.normpath(os.path.join(rel, name))
            if p.is_symlink():
                out[key] = ("link", os.readlink(p))
            elif p.is_file():
                try:
                    out[key] = p.read_bytes()
                except OSError as err:
                    out[key] = ("unreadable", str(err))
            elif not p.is_dir():
                out[key] = ("special", p.stat().st_mode)
    return out


def diff_snapshots(before: dict, after: dict) -> list[str]:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return [f"+ {k}" for k in added[:20]] + [f"- {k}" for k in removed[:20]] + [f"~ {k}" for k in changed[:20]]


# --- one finished study ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (SQLite) for the flows these tests run."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


STUDY_SEEDS = [0, 1]
STUDY_EPOCHS = 8


def study_dict(out: Path) -> dict:
    """The finished study's config: 2 seeds, 8 epochs (8 steps each), a checkpoint per epoch,
    activations at one hookpoint."""
    return tiny_dict(out, seeds=list(STUDY_SEEDS), training={"epochs": STUDY_EPOCHS},
                     hooks={"activations": ["layers.1"], "probe_size": 8})


@dataclass
class Pristine:
    path: Path               # the finished study (moved away from where it was trained)
    trained_at: Path         # where it was trained (study.json's output_dir); must never reappear
    files: dict              # its snapshot, to check that no test changes it
    clean_validate: Run      # `vt validate` of an undamaged copy

    def copy_to(self, dest: Path) -> Path:
        shutil.copytree(self.path, dest, symlinks=True)
        return dest


@pytest.fixture(scope="session")
def pristine(tmp_path_factory, prefect_server) -> Pristine:
    base = tmp_path_factory.mktemp("pristine")
    trained_at = base / "trained"
    cfg = write_toml(study_dict(trained_at), base / "study.toml")
    with pytest.MonkeyPatch.context() as m:
        # a chunk per checkpoint, as the stores of larger models have (vt_core.storage.chunks.rows_per_chunk):
        # damage to one chunk is then damage to one checkpoint, which the outputs must name
        m.setattr("vt_core.storage.chunks.CHUNK_BYTES", 0)
        run = vt("run", cfg)
    assert run.exit_code == 0, f"the fixture study did not train:\n{run.describe()}"
    assert not (trained_at / ".vt.lock").exists()
    path = base / "pristine"
    os.rename(trained_at, path)
    probe = base / "probe-copy"
    shutil.copytree(path, probe, symlinks=True)
    clean = vt("validate", probe)
    shutil.rmtree(probe)
    return Pristine(path, trained_at, snapshot(path), clean)


@pytest.fixture
def study(pristine, tmp_path) -> Path:
    """A fresh copy of the finished study, at ``tmp_path/study``; afterwards, the original is
    checked to be untouched (no command may write through study.json's output_dir)."""
    dest = pristine.copy_to(tmp_path / "study")
    yield dest
    assert not pristine.trained_at.exists(), (
        f"a command on a copy of the study wrote to the directory named in study.json ({pristine.trained_at})")
    assert snapshot(pristine.path) == pristine.files, "a command on a copy changed the original study"


def config_for(study_path: Path, where: Path | None = None) -> Path:
    """The finished study's own config, with output_dir pointing at ``study_path``."""
    where = where or study_path.parent
    return write_toml(study_dict(study_path), where / f"{study_path.name}.toml")


def result_records(study: Path) -> list[Path]:
    """The study's cached task results (Prefect's result files); where there are none, the paths
    Prefect would give them for this study's training tasks (``vt-train-HASH-seedN-vVERSION``), so
    that a planted file sits where a cache lookup would read it."""
    from importlib import metadata

    folder = study / ".prefect" / "results"
    found = sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
    if found:
        return found
    folder.mkdir(parents=True, exist_ok=True)
    meta = json.loads((study / "study.json").read_text())
    return [folder / f"vt-train-{meta['training_hash']}-seed{s}-v{metadata.version('vt')}" for s in STUDY_SEEDS]
