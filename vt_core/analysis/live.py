"""Live states (issue 32, the decoding core): a finished study's fitted HMM as a reference, and the
forward filter that updates a running seed's state posterior as each checkpoint's metrics arrive.

:func:`load_reference` reads what the filter needs from a finished study, verified and nothing
unpickled: the chosen model (``hmm/model.npz``), how its inputs were made (``hmm/split.json``,
``hmm/input.npz``: the features, the global standardisation's mean and standard deviation
recomputed from the stored raw values exactly as the analysis computed them, the principal
components and their centre) and the detour states (``analysis.json``). A reference analysed with
``hmm.standardize = "seed"`` is refused: a seed standardised on its own needs its whole run.

:class:`OnlineFilter` is the forward algorithm one observation at a time, in log space and
normalised at every step: after ``t`` checkpoints its posterior is P(state_t | x_1..x_t), the
*filtered* posterior (not the smoothed one, which needs the future), equal to the offline forward
pass over the same prefix (``tests/analysis/test_live.py``: 1e-10). :func:`events` turns two
successive posteriors into the events a researcher (or a Prefect automation) acts on, each keyed
by seed, step and kind so that a resumed run neither loses nor repeats one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vt_core.errors import VtError
from vt_core.storage.layout import layout
from vt_core.storage.location import Location, load_npz, read_json


class ReferenceError(VtError, ValueError):
    """A study that cannot serve as a live reference."""


@dataclass
class Reference:
    """What live decoding needs from a finished study."""

    features: list[str]            # raw metric names, in the order the model reads them
    mu: np.ndarray                 # global standardisation
    sd: np.ndarray
    params: dict[str, np.ndarray]  # the chosen model (states in the study's canonical order)
    pca_mu: np.ndarray | None = None
    components: np.ndarray | None = None
    detour_states: set[int] = field(default_factory=set)
    status: str = "unknown"        # the reference's choice of k: decided, or undetermined (hmm/selection.json)
    # per reference seed: the step it first entered each state (Viterbi path) and its convergence step
    entries: dict[int, dict[int, int]] = field(default_factory=dict)
    convergence: dict[int, int | None] = field(default_factory=dict)
    # a detour state's delay per step spent there, with its 95% interval (the reference's regression)
    delays: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    threshold: float | None = None  # the held-out accuracy at which the reference's seeds converged

    @property
    def k(self) -> int:
        return int(self.params["means"].shape[0])

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Raw metric rows (n, F) as the model reads them."""
        z = (np.asarray(raw, dtype=np.float64) - self.mu) / np.where(self.sd > 0, self.sd, 1.0)
        if self.components is not None:
            z = (z - self.pca_mu) @ self.components.T
        return z


def load_reference(study: str | Location) -> Reference:
    files = layout(study)
    if not files.model.is_file():
        raise ReferenceError(f"{study} has no fitted model (hmm/model.npz); analyse it first (`vt analyze {study}`)")
    split = read_json(files.hmm_split, fix=f"`vt analyze {study}` rewrites it")
    if split.get("standardize") != "global":
        raise ReferenceError(f"{study} was analysed with hmm.standardize = {split.get('standardize')!r}: a seed "
                             f"standardised on its own needs its whole run; analyse the reference with 'global'")
    d = load_npz(files.hmm_input)
    raw = d["raw"].astype(np.float64)
    mu, sd = raw.mean(axis=0), raw.std(axis=0)
    ref = Reference(features=[str(f) for f in d["raw_features"]], mu=mu, sd=sd,
                    params=dict(load_npz(files.model)))
    pca = split.get("pca") or {}
    if pca:
        cut = np.cumsum(d["lengths"])[:-1]
        seeds = [int(s) for s in d["seeds"]]
        z = np.split((raw - mu) / np.where(sd > 0, sd, 1.0), cut)
        train = np.concatenate([z[seeds.index(s)] for s in split["train"]])
        ref.pca_mu, ref.components = train.mean(axis=0), np.asarray(pca["components"], dtype=np.float64)
    if files.selection.is_file():
        ref.status = str(read_json(files.selection, fix=f"`vt analyze {study}` rewrites it").get("status", "unknown"))
    analysis = read_json(files.analysis) if files.analysis.is_file() else {}
    ref.detour_states = {int(s) for s in analysis.get("detour_states", [])}
    if analysis.get("convergence_threshold") is not None:
        ref.threshold = float(analysis["convergence_threshold"])
    reg = analysis.get("regression") or {}
    for s, c in (reg.get("coefficients") or {}).items():
        lo, hi = reg.get("intervals", {}).get(s, [np.nan, np.nan])
        if int(s) in ref.detour_states:
            ref.delays[int(s)] = (float(c), float(lo), float(hi))
    ref.convergence = {int(s): (None if c is None else int(c)) for s, c in analysis.get("convergence_step", {}).items()}
    if files.paths.is_file():
        for seed, p in read_json(files.paths).items():
            if seed.isdigit():
                first: dict[int, int] = {}
                for step, state in zip(p["steps"], p["states"]):
                    first.setdefault(int(state), int(step))
                ref.entries[int(seed)] = first
    return ref


MIN_PRECEDENTS = 3  # reference seeds that entered the state, below which no convergence step is predicted


def predict_convergence(ref: Reference, state: int, entered: int, now: int) -> dict:
    """When a seed that entered ``state`` at step ``entered`` and is in it at ``now`` will converge,
    from the reference seeds that entered the same state before converging: each gives its own
    steps from that entry to its convergence, added to ``entered`` (and not before ``now``). The
    median and the range of those precedents, with their number and how many of the seeds that
    entered the state never converged; fewer than :data:`MIN_PRECEDENTS`: no prediction, said."""
    after, never, before = [], 0, 0
    for seed, first in ref.entries.items():
        if state not in first:
            continue
        conv = ref.convergence.get(seed)
        if conv is None:
            never += 1
        elif first[state] <= conv:
            after.append(conv - first[state])
        else:
            before += 1
    out: dict = {"state": state, "precedents": len(after), "never_converged": never, "converged_before": before}
    if len(after) < MIN_PRECEDENTS:
        return out | {"predicted": None}
    steps = np.maximum(entered + np.asarray(after, dtype=np.int64), now)
    return out | {"predicted": int(np.median(steps)), "low": int(steps.min()), "high": int(steps.max())}


def describe_prediction(p: dict) -> str:
    """``converges near step 1,200 [900, 1,500] (7 reference seeds that entered state 3; 1 never converged)``."""
    never = f"; {p['never_converged']} never converged" if p["never_converged"] else ""
    if p["predicted"] is None and p.get("converged_before") and not p["precedents"]:
        return (f"the reference's seeds entered state {p['state']} after converging ({p['converged_before']} "
                f"seed(s){never})")
    if p["predicted"] is None:
        return (f"no convergence predicted: {p['precedents']} reference seed(s) converged after entering state "
                f"{p['state']} (at least {MIN_PRECEDENTS} needed{never})")
    return (f"converges near step {p['predicted']:,} [{p['low']:,}, {p['high']:,}] ({p['precedents']} reference "
            f"seeds that entered state {p['state']}{never})")


def model_covars(params: dict[str, np.ndarray]) -> np.ndarray:
    """A stored model's covariances as hmmlearn's ``GaussianHMM`` holds them (``_covars_``), which
    :func:`vt_core.analysis.hmm.load_model` sets: spherical ones one per state, full and tied ones
    exactly symmetric."""
    cov = str(np.asarray(params["covariance_type"]))
    covars = np.asarray(params["covars"])
    if cov == "spherical" and covars.ndim == 2:  # stored per feature (all equal): the setter takes one per state
        covars = covars[:, 0]
    if cov in ("full", "tied"):  # symmetric up to rounding after EM: make it exactly so for the validator
        covars = (covars + np.swapaxes(covars, -1, -2)) / 2
    return np.array(covars, copy=True)


def _logsumexp(a: np.ndarray) -> np.ndarray:
    """log(sum(exp(a))) over the first axis, as scipy's ``logsumexp`` (its array-API layer cost
    a tenth of a look of the live watcher): -inf where every term is."""
    m = a.max(axis=0)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(a - m).sum(axis=0)) + m


class OnlineFilter:
    """The forward algorithm under a reference model, one observation at a time. The emissions are
    hmmlearn's own density (``hmmlearn.stats``, which GaussianHMM calls), without importing the model
    classes and scikit-learn: the watcher process starts in a fraction of the time."""

    def __init__(self, ref: Reference):
        self.ref = ref
        self.covariance_type = str(np.asarray(ref.params["covariance_type"]))
        self.means = np.asarray(ref.params["means"], dtype=np.float64)
        self.covars = model_covars(ref.params)
        with np.errstate(divide="ignore"):  # a transition never taken is log 0 = -inf, as in hmmlearn
            self.log_start = np.log(np.asarray(ref.params["startprob"], dtype=np.float64))
            self.log_trans = np.log(np.asarray(ref.params["transmat"], dtype=np.float64))
        self.log_alpha: np.ndarray | None = None  # normalised: log P(state_t | x_1..t)
        self.log_likelihood = 0.0                  # log P(x_1..t)

    def update(self, raw_row: np.ndarray) -> np.ndarray:
        """The posterior over states after this checkpoint's raw metric row (F,)."""
        z = self.ref.transform(np.asarray(raw_row, dtype=np.float64)[None])
        from hmmlearn.stats import log_multivariate_normal_density

        log_b = log_multivariate_normal_density(z, self.means, self.covars, self.covariance_type)[0]
        with np.errstate(divide="ignore"):
            prior = self.log_start if self.log_alpha is None else _logsumexp(self.log_alpha[:, None] + self.log_trans)
        a = prior + log_b
        norm = float(_logsumexp(a[:, None])[0])
        self.log_alpha, self.log_likelihood = a - norm, self.log_likelihood + float(norm)
        return np.exp(self.log_alpha)


def events(seed: int, step: int, before: np.ndarray | None, after: np.ndarray, ref: Reference,
           run: int | None = None) -> list[dict]:
    """What changed at this checkpoint: the most probable state entered (``entered``), and when it is
    one of the reference's detour states, ``detour`` too. Keyed by seed, step and kind (and by the
    training ``run``'s id when given: a seed retrained from scratch is a new run, with its own events)."""
    state = int(np.argmax(after))
    if before is not None and int(np.argmax(before)) == state:
        return []
    prefix = f"{seed}:{step}" if run is None else f"{seed}:{run}:{step}"
    out = [{"key": f"{prefix}:entered", "kind": "entered", "seed": seed, "step": step, "state": state,
            "probability": float(after[state])}]
    if state in ref.detour_states:
        out.append({"key": f"{prefix}:detour", "kind": "detour", "seed": seed, "step": step, "state": state,
                    "probability": float(after[state])})
    return out


def describe(seed: int, entry: dict, detour_states: list[int] | None = None) -> str:
    """``seed 3: state 4 (p 0.93) at step 1,200 — a detour state in the reference``."""
    detour = ", a detour state in the reference" if entry.get("detour") else ""
    said = f"; {describe_prediction(entry['prediction'])}" if entry.get("prediction") else ""
    stopped = ""
    if entry.get("stopped") is not None:  # the step the live policy asked it to stop at
        asked = f"the live policy asked it to stop at step {entry['stopped']:,}"
        status = str(entry.get("status"))
        stopped = {"stopped-early": f"; stopped early ({asked})", "running": f"; {asked}",
                   "complete": f"; {asked}, but it trained on to its end (it had converged meanwhile, or "
                               f"the request came at its last checkpoint)"}.get(
            status, f"; {asked}; its training ended {status}")
    return (f"seed {seed}: state {entry['state']} (p {entry['probability']:.2f}) at step {entry['step']:,}{detour}"
            f"{said}{stopped}")


def describe_event(e: dict) -> str:
    said = f"; {describe_prediction(e['prediction'])}" if e.get("prediction") else ""
    if e["kind"] == "late":
        return (f"seed {e['seed']}: predicted not to converge within training (step {e['budget']:,}): entered "
                f"state {e['state']} at step {e['step']:,}{said}")
    if e["kind"] == "stopped":
        return (f"seed {e['seed']}: asked to stop at its next checkpoint, unless it converges first "
                f"(live.stop_if_predicted_beyond = {e['beyond']:,}): in state {e['state']} since step "
                f"{e['entered']:,}, at step {e['step']:,}{said}")
    if e["kind"] == "detour":
        delay = e.get("delay_per_step")
        by = (f" by {delay[0]:+.2f} steps per step spent in it, 95% interval [{delay[1]:.2f}, {delay[2]:.2f}]"
              if delay else "")
        return (f"seed {e['seed']}: entered state {e['state']} at step {e['step']:,}, a detour state: in the "
                f"reference, visiting it delayed convergence{by}{said}")
    return f"seed {e['seed']}: entered state {e['state']} at step {e['step']:,} (p {e['probability']:.2f}){said}"


def read_live(study: str | Location) -> dict | None:
    """``live.json`` as the watcher last wrote it (None: no live run); damage is named."""
    path = layout(study).live
    return read_json(path, fix="the next `vt run --reference` decodes it again") if path.is_file() else None
