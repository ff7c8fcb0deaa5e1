"""Importing checkpoints already on disk (`vt import`): one series of files per seed becomes that
seed's run store, written as `vt run` writes one (same store, commit protocol and writer).

:func:`plan_import` finds the files (:mod:`vt_core.external.checkpoint_files`), writes the study's config
(what is known: parameter shapes, the steps found; :mod:`vt_core.external.studies`) and returns, per seed,
its steps and files; :func:`import_seed` (one Prefect task per seed) reads them one checkpoint at
a time, in step order, and hands each to the writer. It is resumable (a seed goes on after its
last committed step) and idempotent (a seed whose every step is committed is skipped: importing
twice changes nothing). With a model factory (``pkg.mod:fn``, called with ``kwargs``) and a probe
batch, each checkpoint is also loaded into the model and the hookpoints' activations recorded.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

import numpy as np
import torch

from vt_core.config.external_config import ExternalModelConfig
from vt_core.config.study_config import StudyConfig
from vt_core.external.checkpoint_files import CheckpointFilesError, find_checkpoints, load_checkpoint
from vt_core.external.studies import external_config, join_study
from vt_core.metrics.roles import RoleRow, model_roles, parameter_roles, tensor_roles, unmatched_globs
from vt_core.models.hooks import array_kinds, capture, select_hookpoints, select_parameters
from vt_core.names import SCALARS
from vt_core.progress import publish
from vt_core.storage.location import Location, location, url
from vt_core.storage.resume_file import Position
from vt_core.storage.run_store import Checkpoint, RunStore, StoreError
from vt_core.storage.study import load_study, open_run, run_path

if TYPE_CHECKING:
    from vt_core.stages.metrics import MetricCells, MetricsPlan


class ImportPlan(TypedDict):
    """What :func:`plan_import` hands to each seed's task: the study and each seed's checkpoints
    (``{"3": [[step, [file URL, ...]], ...]}``)."""

    study: str
    probe: str | None
    seeds: dict[str, list]


class ImportSummary(TypedDict):
    seed: int
    imported: int
    committed_steps: int
    skipped: bool
    path: str
    metrics: NotRequired[MetricCells]  # the cells computed as the checkpoints were committed


def _floating(t: torch.Tensor) -> bool:
    return t.is_floating_point()


def _build(factory: str | None, kwargs: dict) -> torch.nn.Module | None:
    if factory is None:
        return None
    from vt_core.config.usercode import ModelFactoryError, resolve_factory

    model = resolve_factory(factory)(**kwargs)
    if not isinstance(model, torch.nn.Module):
        raise ModelFactoryError(f"factory {factory!r} returned a {type(model).__name__}, not an nn.Module")
    return model.eval()


def _selected(state: dict[str, torch.Tensor], model: torch.nn.Module | None, weights: list[str]) -> list[str]:
    """The tensors stored as weights: the model's parameters matching ``weights`` (with a
    factory), else every floating-point tensor of the state_dict matching them."""
    if model is not None:
        names = select_parameters(model, weights)
        missing = [n for n in names if n not in state]
        if missing:
            raise CheckpointFilesError(f"the checkpoints have no tensors {missing[:5]} of the factory's model; "
                                       f"check the factory and its kwargs")
        return names
    names = [n for n, t in state.items() if _floating(t) and any(fnmatch.fnmatchcase(n, p) for p in weights)]
    if not names:
        raise CheckpointFilesError(f"no floating-point tensor of the checkpoints matches weights={weights}")
    return names


def renamed(state: dict[str, torch.Tensor], rename: dict[str, str]) -> dict[str, torch.Tensor]:
    """``state`` with each name starting with a key of ``rename`` given that key's value instead."""
    if not rename:
        return state
    out = {}
    for name, t in state.items():
        old = next((o for o in rename if name.startswith(o)), None)
        out[rename[old] + name[len(old):] if old is not None else name] = t
    return out


def _load_probe(probe: str | None) -> torch.Tensor | None:
    if probe is None:
        return None
    path = location(probe)
    if probe.endswith(".npy"):
        import io

        return torch.from_numpy(np.load(io.BytesIO(path.read_bytes()), allow_pickle=False))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(obj, torch.Tensor):
        raise CheckpointFilesError(f"probe {probe} holds a {type(obj).__name__}; save one tensor (torch.save) or .npy")
    return obj


class ImportInspection(TypedDict):
    """What an import would do, found without writing anything (`vt import --dry-run`): the series,
    the stored tensors' roles (one row per tensor, buffers of a factory's model included) and the
    config it would write."""

    series: dict[int, list]
    roles: list[RoleRow]
    config: StudyConfig
    probe: str | None
    scalars: dict[int, dict[int, dict[str, float]]]  # seed -> step -> scalar -> value (from --scalars)


def inspect_import(source: str | Location, study: str | Location, pattern: str, *, weights: list[str] | None = None,
                   factory: str | None = None, kwargs: dict | None = None, rename: dict | None = None,
                   hooks: list[str] | None = None, probe: str | None = None, name: str | None = None,
                   metrics: dict | None = None, hmm: dict | None = None,
                   roles: dict[str, str] | None = None, scalars: str | None = None,
                   scalar_names: dict[str, str] | None = None,
                   scalar_runs: dict[str, int] | None = None) -> ImportInspection:
    """Find the checkpoints, read the first, decide every stored tensor's role (:mod:`vt_core.metrics.roles`:
    known with a factory, guessed from a plain state_dict, given by ``roles`` globs) and make the
    study's config; nothing is written."""
    series = find_checkpoints(source, pattern)
    weights, hooks, kwargs = list(weights or ["*"]), list(hooks or []), dict(kwargs or {})
    if hooks and (factory is None or probe is None):
        raise CheckpointFilesError("activations at hooks need a model factory (--factory pkg.mod:fn) and a probe "
                                   "batch (--probe FILE)")
    model = _build(factory, kwargs)
    first_seed = min(series)
    state = renamed(load_checkpoint(series[first_seed][0][1]), dict(rename or {}))
    names = _selected(state, model, weights)
    unmatched = unmatched_globs(dict(roles or {}), names)
    if unmatched:
        raise CheckpointFilesError(f"--roles: {unmatched[0]!r} matches no stored tensor (they are named like "
                                   f"{names[0]!r}); fix the glob or leave it out")
    rows = model_roles(model, roles) if model is not None else tensor_roles({n: state[n] for n in names}, roles)
    stored = set(names)
    entries = {r["name"]: {"role": r["role"], "why": r["why"], "certainty": r["certainty"]}
               for r in rows if r["name"] in stored}
    if model is not None and hooks:
        select_hookpoints(model, hooks)  # every pattern must match
    probe_t = _load_probe(probe)
    steps = sorted({step for s in series.values() for step, _ in s})
    logged, how = _scalar_logs(source, study, series, scalars, scalar_names, scalar_runs)
    config = external_config(
        study, seeds=sorted(series), checkpoints={"steps": steps}, name=name, metrics=metrics, hmm=hmm,
        model={"class_name": f"{type(model).__module__}.{type(model).__qualname__}" if model else "state_dict",
               "parameters": {n: list(state[n].shape) for n in names}, "factory": factory, "kwargs": kwargs,
               "rename": dict(rename or {}), "roles": entries},
        hooks={"activations": hooks, "weights": weights, "probe_size": int(len(probe_t)) if probe_t is not None else 1},
        origin={"kind": "import", "source": url(location(source)), "pattern": pattern, "scalars": scalars,
                "scalar_match": how})
    return {"series": series, "roles": rows, "config": config, "probe": probe, "scalars": logged}


def _scalar_logs(source, study, series: dict[int, list], spec: str | None, names: dict | None,
                 runs: dict | None) -> tuple[dict[int, dict[int, dict[str, float]]], str | None]:
    """Each seed's losses and accuracies from the user's log, matched to its checkpoints
    (:mod:`vt_core.external.scalar_logs`), and one line saying how. Refused for a study whose
    seeds were imported without them (scalars are written with each checkpoint)."""
    from vt_core.external.scalar_logs import describe_match, match_steps, read_scalar_logs
    from vt_core.storage.layout import layout

    paths = layout(study)
    if paths.study_json.is_file():
        before = load_study(study).origin
        imported = [s for s in series if (paths.run(s) / "zarr.json").is_file()]
        if imported and before is not None and before.scalars != spec:
            raise CheckpointFilesError(
                f"{study}: seeds {imported[:5]} were imported with --scalars {before.scalars}; the scalars are "
                f"written with each checkpoint: import into a new study directory to take {spec}")
    if spec is None:
        return {}, None
    logs, used = read_scalar_logs(spec, sorted(series), source=source, names=names, runs=runs)
    out, lines = {}, []
    for seed, ckpts in series.items():
        out[seed], summary = match_steps(logs[seed], [step for step, _ in ckpts], where=f" (seed {seed})")
        lines.append(describe_match(summary, used))
    how = lines[0] if len(set(lines)) == 1 else "; ".join(f"seed {s}: {line}" for s, line in zip(series, lines))
    return out, how[:2000]


def plan_import(source: str | Location, study: str | Location, pattern: str, **options) -> ImportPlan:
    """Find the checkpoints, write (or extend) the study's config, and say what each seed imports
    (``options``: those of :func:`inspect_import`)."""
    found = inspect_import(source, study, pattern, **options)
    series = found["series"]
    join_study(found["config"], sorted(series))
    logged = found["scalars"]
    return {"study": url(location(study)), "probe": found["probe"],
            "seeds": {str(seed): [[step, files, logged.get(seed, {}).get(step, {})] for step, files in s]
                      for seed, s in series.items()}}


class _SeedImport:
    """One seed's import: the store opened or created, the steps still to write."""

    def __init__(self, study: Location, seed: int, checkpoints: list, probe: str | None):
        self.study, self.seed = study, seed
        self.config = load_study(study)
        m = self.config.model
        assert isinstance(m, ExternalModelConfig)
        self.shapes, self.model, self.rename = m.parameters, _build(m.factory, m.kwargs), dict(m.rename)
        self.roles = m.roles
        self.probe = _load_probe(probe)
        self.hooks = select_hookpoints(self.model, list(self.config.hooks.activations)) \
            if self.model is not None and self.config.hooks.activations else []
        self.names = list(self.shapes)
        self.checkpoints = [(int(c[0]), list(c[1])) for c in checkpoints]
        self.logged = {int(c[0]): dict(c[2]) for c in checkpoints if len(c) > 2}  # from --scalars
        self.path = run_path(study, seed)

    def open(self) -> RunStore:
        if self.path.exists():
            store = open_run(self.study, self.seed, self.config)
            problems = store.check()
            if problems:
                raise StoreError(f"seed {self.seed}: {problems[0]}; delete {self.path} to import the seed again")
            store.truncate(store.committed)
            return store
        roles: dict[str, str] = {n: str(e.role) for n, e in self.roles.items()} if self.roles else \
            parameter_roles(self.model) if self.model is not None else {}  # studies made before roles were recorded
        kinds = array_kinds(self.model, self.names, self.hooks) if self.model is not None else None
        store = RunStore.create(self.path, seed=self.seed, config_hash=self.config.training_hash(),
                                config=self.config.training_dict(), roles=roles, kinds=kinds)
        if self.probe is not None:
            store.write_probe(self.probe.numpy(), np.zeros(len(self.probe), dtype=np.int64))
        return store

    def todo(self, store: RunStore) -> list[tuple[int, list[str]]]:
        done = [int(s) for s in store.root["step"][: store.committed]] if store.committed else []
        last = done[-1] if done else -1
        gaps = [step for step, _ in self.checkpoints if step <= last and step not in set(done)]
        if gaps:
            raise StoreError(f"seed {self.seed}: checkpoints at steps {gaps[:5]} appeared after steps up to {last} "
                             f"were imported; a store holds its steps in order: import into a new study")
        return [(step, files) for step, files in self.checkpoints if step > last]

    @torch.no_grad()
    def record(self, index: int, step: int, files: list[str]) -> Checkpoint:
        state = renamed(load_checkpoint(files), self.rename)
        weights = {}
        for n in self.names:
            t = state.get(n)
            if t is None or list(t.shape) != self.shapes[n]:
                got = "missing" if t is None else f"shape {list(t.shape)}"
                raise CheckpointFilesError(f"{files[0]}: tensor {n} is {got}; the study's first checkpoint has "
                                           f"shape {self.shapes[n]}")
            weights[n] = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
        acts = {}
        if self.model is not None and self.hooks and self.probe is not None:
            self.model.load_state_dict(state)
            with capture(self.model, self.hooks, self.config.hooks.capture) as out:
                self.model(self.probe)
            acts = {n: v.float().numpy() for n, v in out.items()}
        del state
        logged = self.logged.get(step, {})
        return Checkpoint(index=index, step=step, epoch=float(logged.get("epoch", math.nan)),
                          scalars={s: float(logged.get(s, math.nan)) for s in SCALARS},
                          weights=weights, activations=acts)


def import_seed(study: str | Location, seed: int, checkpoints: list, probe: str | None = None,
                metrics: MetricsPlan | None = None, limit: int | None = None) -> ImportSummary:
    """Import one seed's checkpoints (``[[step, [files]], ...]``) after its last commit. With a
    ``metrics`` plan (:func:`vt_core.stages.metrics.plan_metrics` given the import's steps), their
    metrics are computed as they are committed (:class:`~vt_core.stages.metrics.MetricsStream`) and
    the summary's ``metrics`` counts the cells. ``limit``: import up to that many checkpoints of
    the seed, and leave it running (the import flow's first pass, which gives metrics.zarr its layers)."""
    from vt_core.metrics.stream import return_freed_memory
    from vt_core.stages.metrics import MetricsStream
    from vt_core.storage.writer_thread import write_committed

    return_freed_memory()  # one checkpoint's memory at a time, not a checkpoint's and its freed predecessor's
    job = _SeedImport(location(study), seed, checkpoints, probe)
    store = job.open()
    todo = job.todo(store)
    if limit is not None:
        todo = todo[:max(0, limit - store.committed)]
    stream = MetricsStream(study, seed, metrics, store) if metrics is not None else None
    if not todo and (store.status == "complete" or limit is not None):
        return _summary(seed, 0, store, stream, skipped=True)
    store.set_status("running")
    publish({"kind": "stage", "stage": "import", "total": len(todo)})
    # written here, one checkpoint at a time, each committed before the next is read: memory holds
    # one checkpoint (no copy on its way to a writer), and there is no training loop to keep going
    n0 = store.committed
    try:
        for i, (step, files) in enumerate(todo):
            ckpt = job.record(n0 + i, step, files)
            nbytes = ckpt.nbytes()
            write_committed(store, [ckpt], Position(step, n0 + i + 1),
                            len(job.checkpoints))
            del ckpt
            if stream is not None:
                stream.committed(store, nbytes)
            publish({"kind": "advance", "stage": "import"})
    except BaseException as err:
        RunStore(store.path).set_status("failed", error=f"{type(err).__name__}: {err}")
        raise
    done = RunStore(store.path)
    if limit is None or done.committed == len(job.checkpoints):
        done.truncate(done.committed)
        done.set_status("complete")
    return _summary(seed, len(todo), done, stream, skipped=False)


def kept_seeds(study: str | Location, importing: list[int]) -> list[int]:
    """The study's seeds with a store that this import does not touch (imported before from a
    source that no longer holds them: a series imported a seed at a time). Their metrics go into
    the import's metrics.zarr too, reused, not dropped."""
    study = location(study)
    return [s for s in load_study(study).seeds if s not in importing and run_path(study, s).exists()]


def merged(first: Mapping[str, Any], rest: Mapping[str, Any]) -> dict:
    """One seed's summary over the import flow's two passes (its first checkpoint, then the rest)."""
    return {**rest, "imported": first["imported"] + rest["imported"], "skipped": first["skipped"] and rest["skipped"]}


def _summary(seed: int, imported: int, store: RunStore, stream, skipped: bool) -> ImportSummary:
    out: ImportSummary = {"seed": seed, "imported": imported, "committed_steps": store.committed,
                          "skipped": skipped, "path": str(store.path)}
    if stream is not None:
        out["metrics"] = stream.finish(store)
    return out
