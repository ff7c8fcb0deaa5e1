"""The terminal side of the `vt` command: its console, the one-line errors, vt's warnings as
lines, and running a flow with the live display, signals and the closing summary."""

from __future__ import annotations

import logging
import time

import typer
from rich.console import Console

from vt_core.storage.layout import layout
from vt_core.storage.location import LocationError, same_process_only, url

console = Console()

_MAX_ERROR_CHARS = 2000
_debug = {"on": False}
_view = {"quiet": False}


def _fail(err: Exception, code: int = 2) -> None:
    text = str(err)
    if len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS] + " ..."
    console.print(f"error: {text}", soft_wrap=True, markup=False, highlight=False, style="red")
    raise typer.Exit(code)


class _Warnings(logging.Handler):
    """vt's own warnings (a repair, a lock taken over) as ``warning:`` lines on the terminal."""

    def emit(self, record: logging.LogRecord) -> None:
        console.print(f"warning: {record.getMessage()}", soft_wrap=True, markup=False, highlight=False,
                      style="yellow")


logging.getLogger("vt").addHandler(_Warnings(logging.WARNING))
logging.getLogger("vt").propagate = False


def _run(flow_kwargs: dict, runner: str, workers: int, analyze_only: bool = False, study=None) -> dict:
    """One flow, with the temporary server started quietly, Ctrl-C / SIGTERM turned into a stop at
    the next checkpoint (exit 130), the live display, and the closing summary."""
    from flows.display import Display
    from flows.runners import make_task_runner
    from flows.session import interruptible, start_temporary_server
    from flows.study import analyze_flow, study_flow
    from vt_core.stages.train import SeedsFailedError
    from vt_core.training.interrupt import StudyInterrupted

    if study is not None and same_process_only(study) and runner != "threads":
        _fail(LocationError(f"{url(study)} lives in this process's memory: Dask workers cannot see it; "
                            f"use --runner threads, or a shared location (a path, s3://...)"))
    task_runner = make_task_runner(runner, workers)
    f = analyze_flow if analyze_only else study_flow
    start = time.perf_counter()
    stopped: Exception | None = None
    with interruptible(_say), Display(console, live=not _view["quiet"]):
        start_temporary_server(_say)
        try:
            result = f.with_options(task_runner=task_runner)(**flow_kwargs)
        except (StudyInterrupted, SeedsFailedError) as err:
            stopped = err  # reported once the live view has closed
    if isinstance(stopped, StudyInterrupted):
        console.print(str(stopped), soft_wrap=True, markup=False, highlight=False, style="yellow")
        raise typer.Exit(130)
    if stopped is not None:
        console.print(f"\n{stopped}", soft_wrap=True, markup=False, highlight=False, style="red")
        if study is not None and layout(study).analysis.is_file():
            _closing(study, time.perf_counter() - start)
        raise typer.Exit(1)
    _closing(result["study"], time.perf_counter() - start, result.get("metric_cells"))
    return result


def _say(text: str) -> None:
    console.print(text, soft_wrap=True, markup=False, highlight=False, style="yellow")


def _closing(study, seconds: float | None = None, cells: dict | None = None) -> None:
    """The closing summary (:func:`vt_core.report.closing.closing_summary`)."""
    from vt_core.report.closing import closing_summary
    from vt_core.stages.metrics import describe_cells

    if seconds is not None:
        console.print(f"\n[bold green]done[/] in {seconds:.1f} s")
    if cells and cells.get("reused") is not None:
        console.print(describe_cells(cells), soft_wrap=True, markup=False, highlight=False)  # type: ignore[arg-type]
    for line in closing_summary(study):
        console.print(line, soft_wrap=True, markup=False, highlight=False)


