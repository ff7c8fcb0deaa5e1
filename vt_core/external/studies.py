"""Studies vt did not train: their config, made from what is known, and their study.json, which
every recorder or import of a seed joins (:mod:`vt_core.external.recorder`, :mod:`vt_core.stages.import_checkpoints`).

The config says what is known (the model's class and parameter shapes, the schedule, the stored
arrays, the metric and HMM settings) and leaves out what is not (optimizer, training, data):
:mod:`vt_core.config.external_config`. Seeds are added to study.json one at a time under the study's lock,
held for the update only, so that several seeds can be recorded or imported side by side.
"""

from __future__ import annotations

import re
import time

import torch

from vt_core.config.external_config import EXTERNAL_UNKNOWN
from vt_core.config.study_config import CheckpointConfig, StudyConfig, parse_config
from vt_core.storage.layout import layout
from vt_core.storage.location import Location, location
from vt_core.storage.study import StudyError, StudyLockedError, load_study, prepare_study, study_lock

#: how long a recorder waits for the study's lock (another seed joining, or `vt analyze`)
LOCK_WAIT_SECONDS = 60.0


def class_name(model: torch.nn.Module) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"


def study_name(study: Location) -> str:
    """A study name (``[A-Za-z0-9_.-]+``) from the directory's name."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", study.name) or "study"


def external_config(study: str | Location, *, seeds: list[int], model: dict, checkpoints: dict, hooks: dict,
                    origin: dict, data: str | None = None, name: str | None = None,
                    metrics: dict | None = None, hmm: dict | None = None) -> StudyConfig:
    """The config of a study vt did not train (:mod:`vt_core.config.external_config`), validated."""
    study = location(study)
    d = {"name": name or study_name(study), "seeds": seeds, "output_dir": str(study),
         "model": {"name": "external", **model}, "data": {"name": "external", "description": data},
         "checkpoints": checkpoints, "hooks": hooks, "origin": {"unknown": list(EXTERNAL_UNKNOWN), **origin}}
    if metrics:
        d["metrics"] = metrics
    if hmm:
        d["hmm"] = hmm
    return parse_config(d, f"the config of {study}")


def join_study(config: StudyConfig, seeds: list[int], wait: float = LOCK_WAIT_SECONDS) -> StudyConfig:
    """Write (or update) study.json so that it lists ``seeds`` besides those it has, holding the
    study's lock for the update only. A study made with another model or schedule is refused; the
    metric and HMM settings already in study.json are kept. Returns the study's config."""
    study = location(config.output_dir)
    study.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    while True:
        try:
            with study_lock(study):
                return _join(study, config, seeds)
        except StudyLockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _join(study: Location, config: StudyConfig, seeds: list[int]) -> StudyConfig:
    current = None
    if layout(study).study_json.is_file():
        current = load_study(study)
        if current.training_hash() != config.training_hash():
            raise StudyError(
                f"{study} holds a study made with another model or schedule (training hash "
                f"{current.training_hash()} != {config.training_hash()}): {_difference(current, config)}; "
                f"record into a new study directory")
        update: dict = {}
        if current.origin is not None and current.origin.kind == "import":  # the steps found so far
            steps = sorted(set(current.checkpoints.steps or []) | set(config.checkpoints.steps or []))
            update["checkpoints"] = CheckpointConfig(steps=steps)
        roles = getattr(config.model, "roles", None)
        if roles and roles != getattr(current.model, "roles", None):  # roles given anew (--roles): the metrics follow
            update["model"] = current.model.model_copy(update={"roles": roles})
        config = current.model_copy(update=update)
    merged = config.seeds + [s for s in seeds if s not in config.seeds]
    config = config.model_copy(update={"seeds": merged})
    if config != current:
        prepare_study(config)
    return config


def _difference(a: StudyConfig, b: StudyConfig) -> str:
    da, db = a.training_dict(), b.training_dict()
    keys = [k for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)]
    return "they differ in " + ", ".join(keys)
