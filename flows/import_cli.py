"""`vt import`: the command (registered by :mod:`flows.cli`); the flow is :mod:`flows.imports`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from flows.role_table import guessed_line
from vt_core.errors import VtError
from vt_core.storage.location import location, url
from vt_core.storage.study import load_study

StudyArg = Annotated[str, typer.Argument(help="study directory: a path or an fsspec URL (s3://bucket/study, ...)")]
Runner = Annotated[str, typer.Option(help="threads, dask (local cluster) or tcp://HOST:PORT of a Dask scheduler")]
Workers = Annotated[int, typer.Option(min=1, help="parallel tasks (threads or local Dask workers)")]


def import_command(source: Annotated[str, typer.Argument(help="directory (or URL) of checkpoint files")],
            study: StudyArg,
            pattern: Annotated[str, typer.Option(help="file names relative to SOURCE, with {seed} and {step}: "
                                                       "seed{seed}/step_{step}.pt, run{seed}/checkpoint-{step}")],
            weights: Annotated[list[str], typer.Option(help="tensor globs to store (repeatable)")] = ["*"],  # noqa: B006
            factory: Annotated[str | None, typer.Option(help="pkg.module:function building the model "
                                                             "(parameter roles; activations with --hook)")] = None,
            kwargs: Annotated[str, typer.Option(help="the factory's keyword arguments, as JSON")] = "{}",
            rename: Annotated[str, typer.Option(help='tensor-name prefixes in the files -> the model\'s, as JSON '
                                                     '({"embed_out.": "lm_head."})')] = "{}",
            hook: Annotated[list[str], typer.Option(help="hookpoint (glob) whose activations to record")] = [],  # noqa: B006
            probe: Annotated[str | None, typer.Option(help="probe batch: a torch.save-d tensor or .npy")] = None,
            hmm: Annotated[str, typer.Option(help="HMM settings as in a config's [hmm], as JSON "
                                                  '({"covariance": "diag", "features": ["l2", "spectral"]})')] = "{}",
            analyze: Annotated[bool, typer.Option(help="analyse the study once every seed is in (HMMs, "
                                                        "dashboard)")] = True,
            metrics: Annotated[bool, typer.Option(help="compute the metrics as the checkpoints come in (`vt analyze` "
                                                        "then reuses them)")] = True,
            roles: Annotated[str | None, typer.Option(help="TOML or JSON file of tensor-name globs -> role (matrix, "
                                                           "heads, merged_heads, kernel, bias, exclude); over "
                                                           "every rule")] = None,
            scalars: Annotated[str | None, typer.Option(help="the run's own logs: a CSV/parquet/JSON table (step and "
                                                             "train_loss, test_accuracy, ...), a W&B history or "
                                                             "chart export, or a TensorBoard directory; {seed} for "
                                                             "one per seed")] = None,
            scalar_names: Annotated[str, typer.Option(help='the log\'s column names -> vt\'s, as JSON '
                                                           '({"acc/holdout": "test_accuracy", "epoch": "step"})')] = "{}",
            scalar_runs: Annotated[str, typer.Option(help='run names in the log -> seeds, as JSON '
                                                          '({"brisk-sun-3": 0})')] = "{}",
            dry_run: Annotated[bool, typer.Option(help="find the checkpoints and print each tensor's role; write "
                                                        "nothing")] = False,
            runner: Runner = "threads", workers: Workers = 2) -> None:
    """Import checkpoints on disk (state_dict .pt or safetensors; one series per seed) as a study, then analyse."""
    from flows.display import Display
    from flows.imports import import_flow
    from flows.runners import make_task_runner
    from flows.terminal import _run, _view, console
    from vt_core.metrics.roles import read_roles_file

    options = {"weights": list(weights), "factory": factory, "kwargs": _json("--kwargs", kwargs),
               "rename": _json("--rename", rename), "hooks": list(hook),
               "probe": probe, "hmm": _json("--hmm", hmm) or None, "roles": read_roles_file(roles) if roles else None,
               "scalars": scalars, "scalar_names": _json("--scalar-names", scalar_names) or None,
               "scalar_runs": _json("--scalar-runs", scalar_runs) or None}
    if dry_run:
        _dry_run(source, study, pattern, options)
        return
    with Display(console, live=not _view["quiet"]):  # a bar of the checkpoints imported
        result = import_flow.with_options(task_runner=make_task_runner(runner, workers))(
            source, url(location(study)), pattern, options, metrics=metrics)
    _closing_lines(result, study)
    if analyze:
        _run({"study": result["study"]}, runner, workers, analyze_only=True, study=location(study))
    else:
        console.print(f"not analysed (--no-analyze): `vt analyze {study}` fits the HMMs and builds the dashboard",
                      soft_wrap=True, highlight=False)


class OptionError(VtError, ValueError):
    """An option's value that cannot be used."""


def _json(option: str, text: str) -> dict:
    """A JSON-object option, or one line saying what is wrong with it."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise OptionError(f"{option} {text!r} is not JSON ({err.msg} at character {err.pos}); write an object "
                          f"such as '{{\"name\": \"value\"}}' in single quotes") from err
    if not isinstance(value, dict):
        raise OptionError(f"{option} {text!r}: give a JSON object ({{...}}), not a {type(value).__name__}")
    return value


def _closing_lines(result: dict, study: str) -> None:
    """What the import did: each seed, the metrics, how the logs matched, which roles were guessed."""
    from flows.terminal import console

    for s in result["seeds"]:
        console.print(f"seed {s['seed']}: " + ("already imported" if s["skipped"] else f"{s['imported']} imported")
                      + f", {s['committed_steps']} checkpoints", highlight=False)
    if (cells := result["metric_cells"]) is not None:
        console.print(f"metrics: {cells['computed']:,} cells computed as the checkpoints came in, "
                      f"{cells['reused']:,} reused", highlight=False)
    else:
        console.print("metrics: not computed (--no-metrics); `vt analyze` computes them", highlight=False)
    config = load_study(location(study))
    if config.origin is not None and config.origin.scalar_match:
        console.print(config.origin.scalar_match, soft_wrap=True, highlight=False)
    guessed = config.model.guessed_roles  # type: ignore[union-attr]
    if guessed:
        console.print(guessed_line(guessed), soft_wrap=True, highlight=False)


def _dry_run(source: str, study: str, pattern: str, options: dict) -> None:
    """`vt import --dry-run`: the checkpoints found and every tensor's role; nothing written."""
    from flows.role_table import print_role_table
    from flows.terminal import console
    from vt_core.stages.import_checkpoints import inspect_import

    found = inspect_import(source, study, pattern, **options)
    model = found["config"].model
    n_ckpt = sum(len(s) for s in found["series"].values())
    console.print(f"found {len(found['series'])} seeds, {n_ckpt} checkpoints ({pattern}); "
                  f"{len(model.parameters)} tensors would be stored", highlight=False)  # type: ignore[union-attr]
    how = f"from the model built by {options['factory']}" if options["factory"] else "from a plain state_dict"
    print_role_table(console, found["roles"], stored=set(model.parameters),  # type: ignore[union-attr]
                     title=f"roles of the checkpoints' tensors, {how} (rules: vt_core/metrics/roles.py)")
    matched = found["config"].origin.scalar_match if found["config"].origin is not None else None
    if matched:
        console.print(matched, soft_wrap=True, highlight=False)
    console.print(f"dry run: nothing written to {study}", highlight=False)


import_command.__name__ = "import"  # the command's name: `vt import` (import is a keyword)
