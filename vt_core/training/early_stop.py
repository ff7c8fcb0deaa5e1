"""A seed stopped early by the live policy (``live.stop_if_predicted_beyond``, issue 32).

The live watcher (:mod:`vt_core.stages.live`), which decodes each seed's state as its checkpoints
commit, writes ``runs/seed=NNNN.stop.json`` (:func:`request`) at the first checkpoint where the
reference's precedents put the seed's convergence past the policy's step. Training looks for it
after each checkpoint it hands to its writer (:class:`EarlyStop`: one stat of a small file, and only
under the policy): the seed then ends ``stopped-early`` with everything written committed and its
resume state kept, as an interrupted seed does. A run under the same policy leaves it stopped
(:func:`vt_core.storage.study.needs_no_training`); a run without the policy resumes it and drops the
request. A request names the training run it is for (``run_id``): a seed retrained from scratch is
not stopped by its predecessor's request. A damaged request is named and ignored: the seed trains on.
"""

from __future__ import annotations

import logging

from vt_core.errors import VtError
from vt_core.progress import note
from vt_core.storage.layout import layout, stop_request_path
from vt_core.storage.location import DamagedFileError, Location, read_json, remove_tree, write_json_atomic

log = logging.getLogger("vt")

STATUS = "stopped-early"


class StoppedEarly(VtError, RuntimeError):
    """Training of one seed stopped at a checkpoint because the live policy asked."""


def request(study: str | Location, seed: int, run_id: int | None, step: int, reason: str, **detail) -> None:
    """Ask the seed's training run ``run_id`` to stop at its next checkpoint (the watcher's side)."""
    write_json_atomic(layout(study).stop_request(seed),
                      {"seed": seed, "run_id": run_id, "step": step, "reason": reason, **detail})


def requested(study: str | Location, seed: int) -> dict | None:
    """The seed's stop request, or None (none, or damaged: named in the log and ignored)."""
    path = layout(study).stop_request(seed)
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except DamagedFileError as err:
        log.warning("%s; ignored (seed %d trains on)", err, seed)
        return None


def clear(study: str | Location, seed: int) -> None:
    remove_tree(layout(study).stop_request(seed))


class EarlyStop:
    """Training's look, after each checkpoint, for a stop request addressed to its own run."""

    def __init__(self, store_path: str | Location, run_id: int | None, seed: int | None = None):
        self.path, self.run_id, self.seed = stop_request_path(store_path), run_id, seed
        self.damaged = False
        self.best = -float("inf")  # the highest held-out accuracy seen at a checkpoint so far
        self.declined: int | None = None  # the step of a request declined because the seed had converged

    def check(self, step: int, accuracy: float | None = None) -> None:
        """Raise :class:`StoppedEarly` when the watcher asked this run to stop (at ``step``, the
        checkpoint just handed to the writer: the watcher decodes committed checkpoints, so it may
        have asked a few checkpoints earlier). A seed whose held-out ``accuracy`` has reached the
        threshold the request names, at this checkpoint or an earlier one, is not stopped: it
        converged while the watcher caught up."""
        if accuracy is not None and accuracy == accuracy:  # not NaN
            self.best = max(self.best, float(accuracy))
        if not self.path.is_file():
            return
        try:
            req = read_json(self.path)
        except DamagedFileError as err:
            if not self.damaged:  # said once, not at every checkpoint
                log.warning("%s; ignored (the seed trains on)", err)
            self.damaged = True
            return
        if req.get("run_id") != self.run_id:
            return
        threshold = req.get("threshold")
        asked = req.get("step")
        at = f"{asked:,}" if isinstance(asked, int) else repr(asked)
        if isinstance(threshold, (int, float)) and self.best >= threshold:
            if self.declined != asked:  # said once per request
                self.declined = asked
                note(f"seed {self.seed}: not stopped early: the live policy asked at step {at}, but by step "
                     f"{step:,} it had converged (held-out accuracy {self.best:.3g} >= {threshold}); training on")
            return
        reason = str(req.get("reason") or f"stopped early by the live policy (asked at step {at})")
        raise StoppedEarly(reason if asked == step else f"{reason}; it stopped at step {step:,}")
