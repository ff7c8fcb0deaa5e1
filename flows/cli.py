"""The `vt` command: run, rerun, import, analyze, dashboard, figures, export, status, validate, hooks, metrics,
report, compare."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.metadata
import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import tasks  # noqa: F401  (analytics off before Prefect is imported)
from flows.import_cli import import_command
from flows.terminal import _closing, _debug, _fail, _run, _view, console
from tasks import quiet_prefect
from vt_core.config.study_config import HMMConfig, load_config
from vt_core.config.usercode import load_user_code
from vt_core.errors import VtError
from vt_core.report.narrative import listed, num
from vt_core.runtime import Runtime
from vt_core.storage.layout import layout
from vt_core.storage.location import is_remote, location, url
from vt_core.storage.seed_status import resume_command, seed_status, study_state
from vt_core.storage.study import StudyError, load_study, study_dir
from vt_core.training.preflight import check_config

# markdown: help paragraphs are reflowed to the terminal's width, never broken where the source is
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown", context_settings={"help_option_names": ["-h", "--help"]})
notes = Console(stderr=True)  # what is said about a command's output, away from the output itself

Runner = Annotated[str, typer.Option(help="threads, dask (local cluster) or tcp://HOST:PORT of a Dask scheduler")]
Workers = Annotated[int, typer.Option(min=1, metavar="N", help="parallel tasks (threads or local Dask workers)")]


def _version(value: bool) -> None:
    if value:
        console.print(f"vt {importlib.metadata.version('vt')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks of unexpected errors")] = False,
             verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show Prefect's own log lines")] = False,
             quiet: Annotated[bool, typer.Option("--quiet", "-q", help="plain progress lines, no live view")] = False,
             _: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                             help="print vt's version and exit")] = False) -> None:
    """vt: training dynamics studies (train seeds, metrics, HMM states, dashboards)."""
    _debug["on"] = debug
    _view["quiet"] = quiet
    quiet_prefect(verbose)


def command(fn):
    """A `vt` subcommand whose :class:`VtError` becomes one ``error:`` line and exit status 2; an
    operating-system error (a full disk, a permission) or an unexpected one is one line and exit
    status 1 (its traceback only with ``vt --debug``)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VtError as err:
            _fail(err)
        except (typer.Exit, typer.Abort, click.ClickException):
            raise
        except OSError as err:
            if _debug["on"]:
                raise
            _fail(err, 1)
        except Exception as err:  # noqa: BLE001 - one line, not a traceback
            if _debug["on"]:
                raise
            _fail(RuntimeError(f"unexpected {type(err).__name__}: {err} (run `vt --debug ...` for the traceback "
                               f"and report it)"), 1)

    return app.command()(wrapper)


StudyArg = Annotated[str, typer.Argument(help="study directory: a path or an fsspec URL (s3://bucket/study, ...)")]


def _study(value: str):
    """The study location (a local path or an fsspec URL)."""
    return location(value)


@command
def run(config: Annotated[Path, typer.Argument(help="study config (.toml)")], runner: Runner = "threads",
        workers: Workers = 2,
        reference: Annotated[str | None, typer.Option(
            help="a finished study (this one, to use its earlier analysis): each seed's state decoded under "
                 "its model as checkpoints commit, shown live and sent as Prefect events")] = None) -> None:
    """Train every seed (finished seeds are skipped, interrupted ones resume), then analyse."""
    cfg = load_config(config)
    console.print(f"study [bold]{cfg.name}[/]: {len(cfg.seeds)} seeds -> {escape(str(study_dir(cfg)))}",
                  soft_wrap=True, highlight=False)
    console.print("checking the config (building the task and the model) ...", style="dim", highlight=False)
    check_config(cfg)  # everything `vt validate` checks, before anything is written
    from flows.live import announce_reference

    reference = announce_reference(console, cfg, reference)
    switches = dataclasses.asdict(Runtime.from_env())
    from vt_core.stages import nothing_to_do

    if layout(study_dir(cfg)).study_json.is_file():
        console.print("verifying the stores of finished seeds (every chunk against its checksum) ...", style="dim",
                      highlight=False)
    if nothing_to_do(study_dir(cfg), cfg):  # no orchestration to start: say so and summarise
        console.print("nothing to do: every seed is finished and matches its checksums, and the analysis is current")
        _closing(study_dir(cfg))
        return
    # the config as read and checked here: the flow neither reads the file nor checks it again
    _run({"config_path": str(config), "config": cfg.model_dump(mode="json"), "checked": True, "runtime": switches,
          "reference": reference}, runner, workers, study=study_dir(cfg))


@command
def rerun(study: StudyArg,
          seed: Annotated[list[int], typer.Option(help="seed to retrain from scratch (repeatable)")],
          runner: Runner = "threads", workers: Workers = 2) -> None:
    """Retrain the given seeds from scratch, then analyse the whole study again."""
    study = _study(study)
    cfg = load_user_code(load_study(study))
    unknown = [s for s in seed if s not in cfg.seeds]
    if unknown:
        raise StudyError(f"seeds {listed(unknown)} are not in this study (seeds: {listed(cfg.seeds)})")
    switches = dataclasses.asdict(Runtime.from_env())
    _run({"study": url(study), "rerun_seeds": list(seed), "runtime": switches}, runner, workers, study=study)


@command
def analyze(study: StudyArg, runner: Runner = "threads", workers: Workers = 2) -> None:
    """Compute metrics, fit HMMs and rebuild the dashboard for the finished seeds of a study."""
    study = _study(study)
    load_user_code(load_study(study))  # the plugins the study names, before any flow starts
    _run({"study": url(study)}, runner, workers, analyze_only=True, study=study)


command(import_command)  # `vt import`: flows/import_cli.py


@command
def report(study: StudyArg,
           out: Annotated[str | None, typer.Option(help="write the markdown to this file (default: "
                                                   "STUDY/report.md), or to stdout alone with `-`")] = None) -> None:
    """Markdown that puts the study's results beside the paper's: k, states, detours, R^2. It goes
    to stdout, and to a file unless `--out -`; where it was written goes to stderr."""
    from vt_core.report.markdown import report_markdown

    study = _study(study)
    text = report_markdown(study)
    sys.stdout.write(text)
    if out != "-":
        target = location(out) if out else layout(study).report
        target.write_text(text)
        notes.print(f"written to {target}", soft_wrap=True, markup=False, highlight=False)


@command
def export(study: StudyArg,
           format_: Annotated[str, typer.Option("--format", help="parquet, csv or netcdf")] = "parquet",
           out: Annotated[str | None, typer.Option(help="directory, path or URL (default: STUDY/export)")] = None) -> None:
    """Tidy tables: one row per seed and step (epoch, scalars, metrics, decoded state, posteriors),
    and one per state."""
    from vt_core.report.export import export_study

    for path in export_study(_study(study), format_, out):
        console.print(f"written {path}", markup=False, highlight=False, soft_wrap=True)


@command
def dashboard(study: StudyArg,
              open_: Annotated[bool, typer.Option("--open", help="open it in the default web browser")] = False,
              serve: Annotated[bool, typer.Option("--serve",
                                                  help="serve STUDY/dashboard over HTTP until Ctrl-C")] = False,
              host: Annotated[str, typer.Option(help="address --serve binds to")] = "127.0.0.1",
              port: Annotated[int, typer.Option(help="port for --serve (0: any free port)")] = 8765,
              max_points: Annotated[int, typer.Option(min=10, metavar="N",
                                                      help="checkpoints drawn per seed curve")] = 300) -> None:
    """Rebuild the study's standalone dashboard from its analysis; optionally open or serve it."""
    from vt_core.report.dashboard import build_dashboard

    study = _study(study)
    files = layout(study)
    if files.live.is_file() and not files.analysis.is_file():  # training, live: nothing analysed yet
        from vt_core.report.live_page import draw_live_page

        path = draw_live_page(study)  # drawn now; redrawn as live.json changes while it is served
        console.print(f"live states: [bold]{path}[/] (rewritten as checkpoints commit; the analysis's dashboard "
                      f"comes when training ends)", soft_wrap=True)
    else:
        path = build_dashboard(study, max_points=max_points)
        console.print(f"dashboard: [bold]{path}[/] ({path.stat().st_size / 1e6:.1f} MB)", soft_wrap=True)
        if files.live_page.is_file():
            console.print(f"live states: {files.live_page}", soft_wrap=True, highlight=False)
    page = path.read_bytes()
    if is_remote(path) and (open_ or serve):  # a browser needs a local copy (the page is standalone)
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="vt-dashboard-")) / path.name
        path.write_bytes(page)
        console.print(f"local copy: {path}", soft_wrap=True)
    if open_:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    if serve:
        from flows.serve_dashboard import serve_directory
        from vt_core.report.live_page import redrawing
        from vt_core.report.serving import serving

        served = None if is_remote(study) else functools.partial(serving, study)  # a local copy: not the study's
        live = served is not None and path.name == files.live_page.name  # the watcher's page: redrawn here
        with redrawing(study) if live else contextlib.nullcontext():
            serve_directory(path.parent, host, port, console.print, served=served, page=path.name)


@command
def figures(study: StudyArg,
            format_: Annotated[str, typer.Option("--format", help="pdf, svg or png")] = "pdf",
            out: Annotated[str | None, typer.Option(help="folder to write to (default: STUDY/figures)")] = None) -> None:
    """Publication-ready figures: state graph, timeline, curves by state, model selection, regression."""
    from vt_core.report.figures import write_figures

    for path in write_figures(_study(study), format_, out):
        console.print(f"figure: {path}", soft_wrap=True, markup=False, highlight=False)


@command
def status(study: StudyArg) -> None:
    """Each seed's state (complete, running, interrupted, stopped-early, failed, diverged, missing) and last step."""
    study = _study(study)
    rows = seed_status(study)
    table = Table(title=f"study {study}")
    for col in ("seed", "status", "checkpoints", "last step", "error"):
        table.add_column(col)
    colors = {"complete": "green", "running": "yellow", "interrupted": "yellow", "failed": "red",
              "diverged": "magenta", "stopped-early": "cyan", "queued": "yellow"}
    for r in rows:
        c = colors.get(r["status"], "white")
        table.add_row(str(r["seed"]), f"[{c}]{r['status']}[/]", num(r["committed_steps"]), num(r["last_step"]),
                      escape(r["error"] or ""))
    console.print(table)
    from flows.live import print_live_status

    print_live_status(console, study)
    state, hints = study_state(rows, resume_command(study))
    console.print(f"study: [bold]{state}[/]", soft_wrap=True)
    for hint in hints:
        console.print(f"  {hint.replace('STUDY', str(study))}", soft_wrap=True, markup=False, highlight=False)


@command
def hooks(config: Annotated[Path, typer.Argument(help="study config (.toml)")]) -> None:
    """Every hookpoint of the configured model, the shapes it yields on the probe batch, and which
    ones the config selects."""
    from vt_core.data import build_task
    from vt_core.models import build_model
    from vt_core.models.hooks import INPUT_SUFFIX, describe_hookpoints, select_hookpoints

    cfg = load_user_code(load_config(config))
    task = build_task(cfg.data, cfg.seeds[0])
    model = build_model(cfg.model, task, cfg.output_size(task.n_classes))
    selected = set(select_hookpoints(model, cfg.hooks.activations)) if cfg.hooks.activations else set()
    rows = describe_hookpoints(model, task.x_test[: cfg.hooks.probe_size])
    table = Table(title=f"hookpoints of {cfg.model.name} (probe batch of {cfg.hooks.probe_size}; "
                        f"capture = {cfg.hooks.capture}; inputs are stored as NAME{INPUT_SUFFIX})")
    for col in ("selected", "name", "module", "output shape", "input shape"):
        table.add_column(col)
    for r in rows:
        table.add_row("*" if r["name"] in selected else "", r["name"], r["type"], str(r["output"]), str(r["input"]))
    Console(width=160).print(table)
    console.print(f"{len(selected)} of {len(rows)} hookpoints selected by hooks.activations = {cfg.hooks.activations}")
    _print_roles(model, cfg)


def _print_roles(model, cfg) -> None:
    """Which parameters the weight metrics read, and as what (vt_core.metrics.roles)."""
    from flows.role_table import print_role_table
    from vt_core.metrics.roles import role_table
    from vt_core.models.hooks import select_parameters

    print_role_table(console, role_table(model), stored=set(select_parameters(model, cfg.hooks.weights)),
                     exclude=list(cfg.metrics.exclude),
                     title=f"tensors read by the weight metrics (metrics.convention = {cfg.metrics.convention}; "
                           f"rules: `vt_core/metrics/roles.py`)")


#: the HMM settings' defaults, from the config model (one place): `vt states` offers the same
_HMM = {name: field.default for name, field in HMMConfig.model_fields.items()}


@command
def states(table: Annotated[Path, typer.Argument(help="trajectories: .csv or .parquet, one row per seed and step")],
           features: Annotated[str | None, typer.Option(help="comma-separated feature columns (default: every "
                                                          "numeric column but seed, step, convergence)")] = None,
           seed_col: Annotated[str, typer.Option("--seed-col", help="column naming the run")] = "seed",
           step_col: Annotated[str, typer.Option("--step-col", help="column with the training step")] = "step",
           convergence: Annotated[str | None, typer.Option(help="column whose first step at or above "
                                                           "--threshold is a run's convergence")] = None,
           threshold: Annotated[float, typer.Option(help="convergence threshold")] = _HMM["convergence_threshold"],
           max_states: Annotated[int, typer.Option(help="fit k = 1.. this (extended while BIC falls)")] = _HMM["max_states"],
           covariance: Annotated[str, typer.Option(help="full, diag, spherical or tied")] = _HMM["covariance"],
           standardize: Annotated[str, typer.Option(help="global or seed (per run, as the paper)")] = _HMM["standardize"],
           bootstrap: Annotated[int, typer.Option(help="bootstrap resamples of the runs (0: off)")] = _HMM["bootstrap"],
           cv_folds: Annotated[int, typer.Option(help="folds over the runs for the cross-validated "
                                                 "log-likelihood (0: off)")] = _HMM["cv_folds"],
           extend: Annotated[bool, typer.Option(help="extend the grid while BIC is lowest at its edge")] = _HMM["extend"],
           out: Annotated[Path | None, typer.Option(help="directory for hmm/, analysis.json, the dashboard and "
                                                    "the report (default: TABLE's name + _states)")] = None,
           workers: Workers = 1) -> None:
    """vt's analysis of trajectories logged anywhere (W&B exports, CSVs): states, k with its
    uncertainty, transitions and detours, with no study and no Prefect."""
    from vt_core.analysis.records import load_analysis
    from vt_core.analysis.trajectories import analyse_trajectories, read_table
    from vt_core.report.narrative import closing_lines
    from vt_core.report.trajectory_outputs import write_trajectory_outputs

    df = read_table(table)
    target = out or table.with_name(table.stem + "_states")
    target.mkdir(parents=True, exist_ok=True)
    hmm = {"max_states": max_states, "covariance": covariance, "standardize": standardize, "bootstrap": bootstrap,
           "cv_folds": cv_folds, "extend": extend, "convergence_threshold": threshold}
    analyse_trajectories(df, features.split(",") if features else None, seed=seed_col, step=step_col,
                         convergence=convergence, hmm=hmm, name=table.stem, out=target, workers=workers)
    # the lines say what analysis.json says: its selection summary holds the reason for every k
    for line in closing_lines(load_analysis(target)):
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    written = write_trajectory_outputs(target, table.stem)
    console.print(f"analysis: {layout(target).analysis}", soft_wrap=True, markup=False, highlight=False)
    console.print(f"dashboard: {written['dashboard']}\nreport: {written['report']}", soft_wrap=True, markup=False,
                  highlight=False)


@command
def compare(studies: Annotated[list[str], typer.Argument(help="two or more analysed study directories (paths or URLs)")],
            out: Annotated[str | None, typer.Option(help="comparison directory (default: compare-A-vs-B beside "
                                                    "the first study)")] = None,
            runner: Runner = "threads", workers: Workers = 2) -> None:
    """One HMM fitted jointly over the studies' seeds; per study: occupancy, states only it visits,
    detours, convergence, and the difference in convergence with a bootstrap interval."""
    from flows.compare import run_compare

    run_compare(studies, out, runner, workers,
                lambda line: console.print(line, soft_wrap=True, markup=False, highlight=False))


@command
def metrics() -> None:
    """List every registered metric: its name, what it reads, its formula."""
    from vt_core.metrics.registry import all_metrics

    table = Table(title="vt metrics (* = the paper's 14)")
    for col in ("name", "reads", "formula"):
        table.add_column(col, overflow="fold")
    for m in all_metrics().values():
        table.add_row(m.name + (" *" if m.paper else ""), m.reads, m.formula)
    Console(width=160).print(table)


@command
def validate(config: Annotated[str, typer.Argument(
        help="study config (.toml), or a study directory (path or URL)")],
             full: Annotated[bool, typer.Option("--full", help="read every chunk back, also those verified "
                                                 "before and unchanged since")] = False) -> None:
    """Check a config without training or writing anything (everything `vt run` checks first); or
    check a study directory: every chunk of every store against its checksum (those verified before
    and unchanged since are not read again, unless --full), resume files, metrics, HMM files and
    the analysis."""
    from vt_core.storage.study import validate_study

    where = _study(config)
    if is_remote(where) or where.is_dir():
        config = where
        problems = validate_study(config, full=full)
        for p in problems:
            console.print(f"problem: {p}", soft_wrap=True, markup=False, highlight=False, style="red")
        if problems:
            raise typer.Exit(1)
        console.print(f"[green]ok[/]: every store of {config} is complete up to its commit and matches its "
                      f"checksums; metrics, HMM files and analysis are intact", soft_wrap=True)
        return
    c = check_config(load_config(config))
    console.print(f"[green]ok[/]: {c['name']}: {c['model']} ({c['n_parameters']:,} parameters), {c['seeds']} seeds, "
                  f"{c['total_steps']:,} steps, {c['checkpoints']} checkpoints each, {c['weight_arrays']} weight "
                  f"arrays, hookpoints {c['hooks']} -> {c['study']}", soft_wrap=True, highlight=False)


if __name__ == "__main__":
    app()
