"""The compare flow: one HMM fitted jointly over several studies' seeds (one task per fit), the
comparison, its dashboard, report and artifacts; and what `vt compare` prints."""

from __future__ import annotations

import time

from prefect import flow, unmapped

from tasks.compare import (
    finalize_comparison_task,
    fit_comparison_task,
    prepare_comparison_task,
    publish_comparison,
    select_comparison_task,
)
from vt_core.analysis.states import fit_rounds


@flow(name="vt-compare")
def compare_flow(studies: list[str], out: str | None = None) -> dict:
    """``studies``: two or more analysed study directories (paths or URLs); ``out``: the
    comparison's directory (default: ``compare-A-vs-B`` beside the first study)."""
    plan = prepare_comparison_task(studies, out)
    root = plan["root"]
    def fit_many(more: list[dict]) -> list[dict]:
        return list(fit_comparison_task.map(root=unmapped(root), job=more).result())

    rows = fit_rounds(fit_many(plan["jobs"]), lambda rows: select_comparison_task(root, rows), fit_many)
    result = finalize_comparison_task(root, rows)
    return result | publish_comparison(root) | {"root": root}


def run_compare(studies: list[str], out: str | None, runner: str, workers: int, echo) -> dict:
    """`vt compare`: the flow with the chosen task runner, then the comparison in a few lines."""
    from flows.runners import make_task_runner
    from vt_core.report.compare_markdown import comparison_lines
    from vt_core.stages.compare import check_studies, load_comparison

    check_studies(studies)  # refused before the flow starts, as `vt run` checks its config first
    start = time.perf_counter()
    result = compare_flow.with_options(task_runner=make_task_runner(runner, workers))(studies=studies, out=out)
    echo(f"\ndone in {time.perf_counter() - start:.1f} s")
    echo(f"dashboard: {result['dashboard']}")
    echo(f"report: {result['report']}")
    for line in comparison_lines(load_comparison(result["root"])):
        echo(line)
    return result
