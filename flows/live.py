"""Live states in the study flow (`vt run CONFIG --reference STUDY`): the watcher process of
:mod:`vt_core.stages.live` runs beside training; this thread reads what it decodes, shows it (the
terminal's live view) and sends each event to Prefect (``emit_event``), so that an automation can
notify or cancel. An event's Prefect id is derived from its key: sent again by a resumed run, the
server keeps one (events and triggers are deduplicated by id)."""

from __future__ import annotations

import contextlib
import logging
import statistics
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator

from vt_core.analysis.live import describe, describe_event, read_live  # light: `vt status` imports this module
from vt_core.progress import publish

log = logging.getLogger("vt")

EVENT_NAMES = {"entered": "vt.seed.entered-state", "detour": "vt.seed.entered-detour",
               "late": "vt.seed.predicted-late", "stopped": "vt.seed.stopped-early"}


def event_id(study: str, key: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"vt:{study}#{key}")


def emit(study: str, name: str, e: dict, flow_run: str | None = None) -> None:
    """One decoded event to Prefect: the seed as the resource; the study, and the flow run training
    it (so that an automation's ``cancel-flow-run`` with ``source: inferred`` stops that run), as
    related ones."""
    from prefect.events import emit_event

    related = [{"prefect.resource.id": f"vt.study.{name}", "prefect.resource.role": "study"}]
    if flow_run:
        related.append({"prefect.resource.id": f"prefect.flow-run.{flow_run}", "prefect.resource.role": "flow-run"})
    emit_event(event=EVENT_NAMES[e["kind"]], id=event_id(study, e["key"]),
               resource={"prefect.resource.id": f"vt.study.{name}.seed.{e['seed']}", "vt.study": study,
                         "vt.seed": str(e["seed"]), "vt.step": str(e["step"]), "vt.state": str(e["state"])},
               related=related, payload={k: e[k] for k in ("key", "seed", "step", "state", "probability")})


class _Tail:
    """Reads ``live.json`` about once a second; shows each seed's state and each new event."""

    def __init__(self, study: str, name: str, flow_run: str | None):
        self.study, self.name, self.flow_run = study, name, flow_run
        self.seen: set[str] = set()
        self.updated = None
        self.stop = threading.Event()

    def once(self) -> None:
        try:
            doc = read_live(self.study)
        except Exception as err:  # noqa: BLE001 - a half-written or damaged file: the next read
            log.debug("live.json not readable yet: %s", err)
            return
        if not doc or doc.get("updated") == self.updated:
            return
        self.updated = doc.get("updated")
        for seed, entry in doc.get("seeds", {}).items():
            publish({"kind": "live", "seed": int(seed), "state": entry["state"], "probability": entry["probability"],
                     "text": describe(int(seed), entry)})
        for e in doc.get("events", []):
            if e["key"] in self.seen:
                continue
            self.seen.add(e["key"])
            publish({"kind": "note", "text": describe_event(e)})
            try:
                emit(self.study, self.name, e, self.flow_run)
            except Exception as err:  # noqa: BLE001 - no Prefect API here: the terminal still shows it
                log.debug("event %s not sent to Prefect: %s", e["key"], err)

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self.once()
        self.once()


def print_live_status(console, study) -> None:
    """`vt status`: each seed's live state, when a live run decoded any."""
    doc = read_live(study)
    if doc and doc.get("seeds"):
        console.print(f"live states under {doc['reference']}'s model (k = {doc['k']}, {doc.get('status')}):",
                      soft_wrap=True, markup=False, highlight=False)
        for seed, entry in sorted(doc["seeds"].items(), key=lambda kv: int(kv[0])):
            console.print(f"  {describe(int(seed), entry)}", soft_wrap=True, markup=False, highlight=False)


def announce_reference(console, config, given: str | None) -> str | None:
    """`vt run`: the reference (``--reference``, else ``live.reference``) checked, and said, before
    anything is written; its URL, or None for no live states."""
    from rich.markup import escape

    from vt_core.config.usercode import load_user_code
    from vt_core.stages.live import check_reference, live_reference

    reference = live_reference(config, given)
    if reference is None:
        return None
    ref = check_reference(load_user_code(config), reference, "--reference" if given is not None else "live.reference")
    console.print(f"live states under {escape(reference)}'s model (k = {ref.k}, {ref.status}; detour states: "
                  f"{sorted(ref.detour_states) or 'none'})", soft_wrap=True, highlight=False)
    beyond = config.live.stop_if_predicted_beyond
    if beyond is not None:
        console.print(f"a seed predicted to converge after step {beyond:,} stops early (live.stop_if_predicted_beyond)",
                      soft_wrap=True, highlight=False)
        steps = sorted(c for c in ref.convergence.values() if c is not None)
        if steps and beyond < statistics.median(steps):
            console.print(f"warning: the reference's seeds converged at steps {steps[0]:,}-{steps[-1]:,} (median "
                          f"{statistics.median(steps):,.0f}): below that, a seed is predicted past {beyond:,} from "
                          f"its first checkpoints, and every seed will stop there", style="yellow", soft_wrap=True,
                          highlight=False)
    if ref.status != "decided":
        console.print(f"warning: the reference did not decide its number of states: its k = {ref.k} is one "
                      f"reading of several, and so are the states decoded under it", style="yellow",
                      soft_wrap=True, highlight=False)
    return reference


@contextlib.contextmanager
def live_states(study: str, name: str, reference: str | None) -> Iterator[None]:
    """While training runs: the watcher process (niced) and the tail thread; at the end, the
    watcher decodes the last commits and stops, and the last events are shown and sent."""
    if reference is None:
        yield
        return
    from vt_core.stages.live import watcher_command

    errors = tempfile.TemporaryFile(mode="w+")  # its one line when it stops on an error (no traceback)
    proc = subprocess.Popen(watcher_command(study, reference), stdin=subprocess.PIPE, stderr=errors)
    from prefect.runtime import flow_run


    tail = _Tail(study, name, flow_run.id)  # read here: the tail's thread does not see the run's context
    thread = threading.Thread(target=tail.run, name="vt-live", daemon=True)
    thread.start()
    try:
        yield
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # training has ended: decode what is committed, then stop
        try:
            proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.returncode:
            errors.seek(0)
            said = [line for line in errors.read().splitlines() if line.startswith("live states stopped")]
            log.warning("%s", said[-1] if said else f"live states stopped (the watcher's exit code {proc.returncode})")
        errors.close()
        tail.stop.set()
        thread.join()
