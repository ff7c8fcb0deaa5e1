"""What the Prefect UI's runs list shows of a vt flow run: its name (``sparse_parity · run 3``) and
its tags (``study:NAME``, ``training:HASH``, ``location:ID``), from the study its parameters name.
Logic: :mod:`vt_core.stages.publish`."""

from __future__ import annotations

from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterTags
from prefect.context import FlowRunContext

from vt_core.config.study_config import StudyConfig, load_config, parse_config, with_output_dir
from vt_core.errors import VtError
from vt_core.stages.publish import location_tag, run_name, run_tags
from vt_core.storage.location import location, url
from vt_core.storage.study import load_study, study_dir


def _study_of(params: dict) -> tuple[str, StudyConfig]:
    if params.get("config") or params.get("config_path"):
        config = (parse_config(params["config"], "config") if params.get("config")
                  else load_config(params["config_path"]))
        if params.get("output_dir"):
            config = with_output_dir(config, params["output_dir"])
        return url(study_dir(config)), config
    return url(location(params["study"])), load_study(params["study"])


def _tag_and_number(study: str, tags: list[str]) -> int:
    """Add ``tags`` to this flow run (keeping a deployment's); the run's number among the runs of
    the same study location that the Prefect API knows of."""
    run = FlowRunContext.get().flow_run  # type: ignore[union-attr]
    with get_client(sync_client=True) as client:
        earlier = client.count_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[location_tag(study)]), id=FlowRunFilterId(not_any_=[run.id])))  # type: ignore[union-attr]
        client.update_flow_run(run.id, tags=sorted(set(run.tags) | set(tags)))  # type: ignore[union-attr]
    return earlier + 1


def flow_run_name() -> str:
    """The ``flow_run_name`` of vt's flows (Prefect calls it as a run starts); it also tags the run,
    since a flow's options cannot carry tags that depend on its parameters."""
    ctx = FlowRunContext.get()
    params = dict(ctx.parameters or {}) if ctx else {}
    flow = ctx.flow.name if ctx and ctx.flow else ""
    verb = "analyze" if flow == "vt-analyze" else "rerun" if params.get("rerun_seeds") else "run"
    given = params.get("config_path") or params.get("study")
    try:
        study, config = _study_of(params)
    except (VtError, OSError, TypeError):  # the flow raises it, with its whole check; meanwhile, name
        return f"{Path(str(given)).name} · {verb}" if given else verb  # the run by what it was given
    number = _tag_and_number(study, run_tags(study, config.name, config.training_hash()))
    return run_name(config.name, verb, number, params.get("rerun_seeds") if verb == "rerun" else None)
