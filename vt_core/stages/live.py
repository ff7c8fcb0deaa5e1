"""Live states while a study trains (`vt run CONFIG --reference STUDY`, issue 32).

A watcher process (``python -m vt_core.stages.live STUDY REFERENCE``, started by the study flow
beside training, niced, dying with its parent) polls each seed's run store for checkpoints the
writer has committed, computes the reference model's features for them (the same kernels and the
same checksummed reads as the metric stage, :class:`vt_core.metrics.stream.WeightMetrics`: only
the new rows, no xarray), and runs each seed's forward filter
(:class:`vt_core.analysis.live.OnlineFilter`). What it finds goes to ``live.json`` (written
atomically, checksummed): every seed's filtered posterior at its last committed checkpoint, and
the events so far, each keyed by seed, training run, step and kind.

Nothing of this runs in the training loop. A watcher started again (a killed and resumed run)
replays every seed from its first committed checkpoint: the filter is deterministic, so it decodes
the same events, and the keys already in ``live.json`` are not added twice — none lost, none
repeated. A ``live.json`` found damaged is named and rebuilt the same way.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from vt_core.analysis.live import (  # noqa: F401  (predict_convergence: part of this module's interface)
    OnlineFilter,
    Reference,
    ReferenceError,
    describe,
    describe_event,
    describe_prediction,
    events,
    load_reference,
    predict_convergence,
    read_live,
)
from vt_core.config.study_config import ConfigError, StudyConfig
from vt_core.config.usercode import load_user_code
from vt_core.metrics.cells import Cells
from vt_core.metrics.registry import get
from vt_core.metrics.stream import KINDS, WeightMetrics
from vt_core.names import SCALARS, is_function_feature
from vt_core.storage.handle import Study, StudyRef
from vt_core.storage.layout import layout
from vt_core.storage.location import DamagedFileError, Location, location, read_json, url, write_json_atomic
from vt_core.storage.run_store import RunStore, StoreError
from vt_core.storage.study import ENDED
from vt_core.training import early_stop

log = logging.getLogger("vt")

# the live page: while `vt dashboard --serve` serves it, that process redraws it (live_page.redrawing,
# every REFRESH_S); otherwise the watcher does, at most every UNSERVED_PAGE_S (a draw costs ~0.15 s)
UNSERVED_PAGE_S = 30.0
NICE = 10     # the watcher process's niceness, from its start: below training, but not starved by it
POLL_S = 2.0  # how often the watcher looks for new commits (each look decodes every new one of a seed at once)
DUTY = 0.05   # the most of the wall-clock time it spends decoding

# The watcher's command. It lowers its priority to NICE before anything else (its imports and the
# reference: about a second of CPU), so that training and its writers come first; at nice 10 it still
# gets about a tenth of a core that training holds, and it spends at most DUTY of the wall time, so
# it keeps up with a small model's checkpoints without costing training more than a few percent
# (benchmarks/live_overhead.py measures both). Tried and dropped: SCHED_IDLE and nice 19, which on 2
# cores busy with two training tasks starved it until training ended (the live view showed nothing).
_MAIN = ("import os, sys\ntry:\n    os.nice(int(sys.argv[3]))\nexcept OSError:\n    pass\n"
         "from vt_core.stages.live import _main\nsys.exit(_main(sys.argv[1:3]))\n")


def watcher_command(study: str, reference: str) -> list[str]:
    """The command that starts the watcher process for ``study`` under ``reference``."""
    return [sys.executable, "-c", _MAIN, study, reference, str(NICE)]


def live_reference(config: StudyConfig, given: str | Location | None = None) -> str | None:
    """The reference a run of ``config`` decodes under, as a URL: ``given`` (`vt run --reference`), else
    ``live.reference``; None for none. The stop policy without a reference is refused in one line."""
    chosen = given if given is not None else config.live.reference
    if chosen is None:
        if config.live.stop_if_predicted_beyond is not None:
            raise ConfigError("live.stop_if_predicted_beyond needs a reference study to predict from: set "
                              "live.reference in the config or pass `vt run CONFIG --reference STUDY`")
        return None
    return url(location(chosen))


def check_reference(config: StudyConfig, reference: str | Location, source: str = "--reference") -> Reference:
    """The reference, refused with one line when a study of ``config`` cannot be decoded under it:
    features it does not compute, or features made from every seed at once (the function's PCs).
    ``source``: where it was named (``--reference``, or ``live.reference`` in the config)."""
    if not layout(reference).study_json.is_file():
        raise ReferenceError(f"{source} {reference}: no study there (no study.json); give a study vt analysed "
                             f"(`vt run` its config first)")
    ref = load_reference(reference)
    whole = [f for f in ref.features if is_function_feature(f)]
    if whole:
        raise ReferenceError(f"the reference's HMM reads {whole}, made from every seed's finished run; "
                             f"live states need a reference analysed on metrics a checkpoint gives alone")
    computed = set(config.metrics.names) | set(SCALARS)
    missing = sorted({f.partition("@")[0] for f in ref.features} - computed)
    if missing:
        raise ReferenceError(f"the reference's HMM reads {missing}, which this study does not compute; "
                             f"add them to metrics.names (or use a reference analysed on this study's metrics)")
    return ref


@dataclass
class _Seed:
    filter: OnlineFilter
    run_id: int | None = None
    done: int = 0                  # committed checkpoints decoded
    step: int | None = None
    posterior: np.ndarray | None = None
    entered: int | None = None     # the step its most probable state became so
    skipped: int = 0               # checkpoints with a nonfinite feature (the HMM drops them too)
    converged: bool = False        # its held-out accuracy has reached the reference's threshold
    stopped: int | None = None     # the step at which the live policy asked it to stop
    status: str | None = None      # its training's status (stopped-early once training saw the request)
    weights: WeightMetrics | None = None  # what its store's layout decides, worked out at its first decode


class Watcher:
    """Decodes every seed of ``study`` under ``reference``, one :meth:`poll` at a time."""

    def __init__(self, study: StudyRef, reference: str | Location):
        self.study = Study.open(study)
        self.config = load_user_code(self.study.config)
        self.reference = url(location(reference))
        self.ref = check_reference(self.config, reference)
        self.names = list(dict.fromkeys(f.partition("@")[0] for f in self.ref.features))
        self.budget: int | None = None  # the last step of training: from the first store that records it
        self.beyond = self.config.live.stop_if_predicted_beyond  # the stop policy (None: off)
        self.threshold = self.ref.threshold if self.ref.threshold is not None else self.config.hmm.convergence_threshold
        if self.beyond is not None and "test_accuracy" not in self.names:  # a converged seed is never stopped
            self.names.append("test_accuracy")
        # weight metrics and recorded scalars: read straight from the new rows (every feature of the paper's)
        self.lean = all(get(n).reads in (*KINDS, "scalar") for n in self.names)
        self.page_written = time.monotonic()  # the first page after UNSERVED_PAGE_S (bokeh: ~1 s to import)
        self.one_off = 0.0  # CPU seconds paid once (bokeh's import), not counted against DUTY
        self.seeds = {s: _Seed(OnlineFilter(self.ref)) for s in self.config.seeds}
        self.events: list[dict] = self._stored_events()
        self.keys = {e["key"] for e in self.events}

    def _stored_events(self) -> list[dict]:
        path = layout(self.study).live
        if not path.is_file():
            return []
        try:
            doc = read_json(path)
        except DamagedFileError as err:
            log.warning("%s; its events are decoded again from the stores", err)
            return []
        if doc.get("reference") != self.reference:  # another reference's states mean other things
            return []
        return [e for e in doc.get("events", []) if isinstance(e, dict) and isinstance(e.get("key"), str)]

    def poll(self) -> list[dict]:
        """Decode the checkpoints committed since the last poll; the new events (also in ``live.json``)."""
        new: list[dict] = []
        changed = False
        for seed, state in self.seeds.items():
            path = layout(self.study).run(seed)
            if not (path / "zarr.json").is_file():
                continue
            try:
                store = RunStore(path, mode="r")
                run_id, n = store.attrs.get("run_id"), store.committed
                if self.budget is None:
                    self.budget = store.attrs.get("total_steps") or training_budget(self.config)
            except (StoreError, OSError, KeyError, ValueError):
                continue  # being created: the next poll
            if run_id != state.run_id:  # a new training run (retrained from scratch): decoded afresh
                self.seeds[seed] = state = _Seed(OnlineFilter(self.ref), run_id=run_id)
            if store.status != state.status:
                state.status, changed = store.status, True
            if n <= state.done:
                continue
            new += self._decode(seed, state, store, n, training=store.status == "running")
            changed = True
        if changed:
            self.write()
        return new

    def _decode(self, seed: int, state: _Seed, store: RunStore, n: int, training: bool = True) -> list[dict]:
        """Decode the seed's checkpoints up to ``n``; the events. A seed whose training has ended
        (``training`` false) is not asked to stop: there is nothing left to stop."""
        index = list(range(state.done, n))
        # numpy on the CPU: no torch in the watcher (importing it cost a second), and no second process on
        # the GPU training uses; the features equal the metric stage's to rounding (float64 either way)
        cells = self._cells(state, store, index)
        rows, ok = rows_of(cells, self.ref.features)
        steps = [int(s) for s in cells.step]
        accuracy = (cells.feature("test_accuracy") if self.beyond is not None
                    else np.full(len(steps), np.nan))
        new = []
        for step, row, good, acc in zip(steps, rows, ok, accuracy):
            state.converged |= bool(acc >= self.threshold)
            if not good:
                state.skipped += 1
                continue
            before = state.posterior
            state.posterior, state.step = state.filter.update(row), step
            if before is None or before.argmax() != state.posterior.argmax():
                state.entered = step
            found = events(seed, step, before, state.posterior, self.ref, run=state.run_id)
            for e in found:
                e["prediction"] = predict_convergence(self.ref, e["state"], step, step)
                if e["kind"] == "detour" and e["state"] in self.ref.delays:
                    e["delay_per_step"] = list(self.ref.delays[e["state"]])
            late = self._late(seed, state, step)
            stop = self._stop(seed, state, step) if training else None
            for e in found + [x for x in (late, stop) if x is not None]:
                if e["key"] not in self.keys:
                    self.keys.add(e["key"])
                    self.events.append(e)
                    new.append(e)
        state.done = n
        return new

    def _cells(self, state: _Seed, store: RunStore, index: list[int]) -> Cells:
        """The features' metrics at ``index``: a seed's stores read again and again, a few new rows at a
        time (opening them as a Dataset each time was most of the watcher's cost)."""
        if not self.lean:
            from vt_core.metrics.store import compute_cells  # activations: the lazy path (xarray, dask)

            return Cells.of(compute_cells(store, self.config, self.names, index, device=None))
        if state.weights is None:
            state.weights = WeightMetrics(store, self.config, self.names, direct=True)
        return state.weights(store, np.asarray(index, dtype=int))

    def _late(self, seed: int, state: _Seed, step: int) -> dict | None:
        """``late``: at the checkpoint where a seed enters a state, the reference's precedents put its
        convergence (the median) past the last step of training; keyed like the other events."""
        if self.budget is None or state.entered != step or state.posterior is None:
            return None
        top = int(np.argmax(state.posterior))
        p = predict_convergence(self.ref, top, step, step)
        if p["predicted"] is None or p["predicted"] <= self.budget:
            return None
        prefix = f"{seed}:{state.run_id}:{step}"
        return {"key": f"{prefix}:late", "kind": "late", "seed": seed, "step": step, "state": top,
                "probability": float(state.posterior[top]), "prediction": p, "budget": self.budget}

    def _stop(self, seed: int, state: _Seed, step: int) -> dict | None:
        """The live policy: at the first checkpoint where the reference's precedents put the seed's
        convergence (their median) past ``live.stop_if_predicted_beyond``, ask its training to stop
        (:mod:`vt_core.training.early_stop`). Never a seed that has converged already, nor one in a
        state for which the reference predicts nothing."""
        if self.beyond is None or state.stopped is not None or state.converged or state.posterior is None:
            return None
        top, entered = int(np.argmax(state.posterior)), state.entered if state.entered is not None else step
        p = predict_convergence(self.ref, top, entered, step)
        if p["predicted"] is None or p["predicted"] <= self.beyond:
            return None
        state.stopped = step
        reason = (f"stopped early at step {step:,} by live.stop_if_predicted_beyond = {self.beyond:,}: in state "
                  f"{top} since step {entered:,}, {describe_prediction(p)} (`vt run` without the policy resumes it)")
        early_stop.request(self.study.location, seed, state.run_id, step, reason, state=top, prediction=p,
                           beyond=self.beyond, threshold=self.threshold)
        return {"key": f"{seed}:{state.run_id}:{step}:stopped", "kind": "stopped", "seed": seed, "step": step,
                "state": top, "entered": entered, "probability": float(state.posterior[top]), "prediction": p,
                "beyond": self.beyond}

    def write(self, page: bool = True) -> None:
        """``live.json``; and the live page, when ``page`` (no more often than it reloads itself)."""
        seeds = {}
        for seed, s in self.seeds.items():
            if s.posterior is None:
                continue
            top = int(np.argmax(s.posterior))
            seeds[str(seed)] = {"step": s.step, "checkpoints": s.done, "skipped": s.skipped, "run_id": s.run_id,
                                "state": top, "probability": float(s.posterior[top]),
                                "posterior": [float(p) for p in s.posterior],
                                "detour": top in self.ref.detour_states, "entered": s.entered, "stopped": s.stopped,
                                "status": s.status,
                                "prediction": predict_convergence(self.ref, top, s.entered or 0, s.step or 0)}
        doc = {"reference": self.reference, "k": self.ref.k, "status": self.ref.status,
               "detour_states": sorted(self.ref.detour_states), "features": self.ref.features, "seeds": seeds,
               "budget": self.budget, "events": self.events, "updated": time.time()}
        write_json_atomic(layout(self.study).live, doc)
        if page and time.monotonic() - self.page_written >= UNSERVED_PAGE_S and not self._served():
            if "vt_core.report.live_page" not in sys.modules:  # bokeh, imported once there is a page to draw:
                t = time.process_time()  # 1.2 s of CPU, which counted against DUTY stalled every look for 25 s
                import vt_core.report.live_page  # noqa: F401
                self.one_off += time.process_time() - t
            from vt_core.report.live_page import write_live_page

            write_live_page(self.study, json.loads(json.dumps(doc)), self.config.name)
            self.page_written = time.monotonic()

    def _served(self) -> bool:
        """`vt dashboard --serve` serves the page: it redraws it itself (:func:`vt_core.report.live_page.redrawing`)."""
        from vt_core.report.serving import served_url

        return served_url(self.study.location) is not None

    def finished(self) -> bool:
        """Every seed's training has ended and each of its commits is decoded."""
        for seed, state in self.seeds.items():
            try:
                store = RunStore(layout(self.study).run(seed), mode="r")
                if store.status not in (*ENDED, "failed", "interrupted") or store.committed > state.done:
                    return False
            except (StoreError, OSError, KeyError, ValueError):
                return False
        return True


def training_budget(config: StudyConfig) -> int | None:
    """The last step of a vt-trained seed's training (None for a study vt did not train)."""
    from vt_core.data import build_task
    from vt_core.training.position import BatchPosition

    if config.given_training is None:
        return None
    task = build_task(config.data, config.seeds[0])
    return BatchPosition(config, len(task.x_train), config.seeds[0]).total_steps


def rows_of(cells: Cells, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The raw feature rows (n, F) of freshly computed cells, and which rows the HMM would keep
    (every feature finite, no nonfinite weight flagged)."""
    rows = np.stack([cells.feature(f).astype(np.float64) for f in features], axis=-1)
    return rows, np.isfinite(rows).all(axis=1) & ~cells.nonfinite.astype(bool)


def watch(study: str, reference: str, stop: threading.Event | None = None, nice: int = 0) -> None:
    """Poll until every seed has ended and is decoded, or ``stop`` is set; one last poll either way.
    ``nice``: the niceness added once the reference is read (the watcher process is niced from its start).
    Between polls it waits :data:`POLL_S`, or longer while it has spent more than :data:`DUTY` of
    the wall-clock time decoding, counted from its first decode on (which pays one-off costs:
    imports, the first page), less bokeh's import when a page is first drawn (1.2 s: counted, it
    stalled the served live view for 25 s); what piles up meanwhile is decoded at once, at the same fixed cost.
    (A wait set by one poll's cost alone slept 40 s after the first one, longer than the demo's
    training: the live view showed nothing while it trained.)"""
    stop = stop or threading.Event()
    w = Watcher(study, reference)
    w.write(page=False)  # the page once a checkpoint is decoded (bokeh is imported then, at the lower priority)
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    since: tuple[float, float, float] | None = None  # (cpu, wall, one-off cpu) after the first decode
    while not stop.is_set() and not w.finished():
        if w.poll() or since is not None:
            since = since or (time.process_time(), time.monotonic(), w.one_off)
        spent = 0.0 if since is None else time.process_time() - since[0] - (w.one_off - since[2])
        elapsed = 0.0 if since is None else time.monotonic() - since[1]
        stop.wait(max(POLL_S, spent / DUTY - elapsed))
    w.poll()
    w.page_written = -float("inf")
    w.write()  # the last state on the page too


def _main(argv: list[str]) -> int:
    import signal

    study, reference = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops training; the parent then closes our stdin
    closed = threading.Event()

    def wait_for_parent() -> None:  # the parent closes our stdin to say "training has ended"
        sys.stdin.read()
        closed.set()

    threading.Thread(target=wait_for_parent, daemon=True).start()
    try:
        watch(study, reference, stop=closed)
    except Exception as err:  # noqa: BLE001 - one line for the parent to show; training is not affected
        print(f"live states stopped: {type(err).__name__}: {str(err)[:300]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
