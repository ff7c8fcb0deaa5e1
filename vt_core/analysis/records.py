"""The records the analysis writes, typed: ``hmm/selection.json`` (:class:`Selection`, with its
:class:`Bootstrap` summary) and ``analysis.json`` (:class:`Analysis`), and their readers.

Every reader of these files (narrative, report, dashboard, figures, datasets) takes these types, so
mypy checks each key a reader asks for against what the writer (:mod:`vt_core.analysis.states`,
:mod:`vt_core.analysis.selection`, :mod:`vt_core.analysis.compare`) puts there. The files stay
plain JSON (``total=False``: a record written by an older vt may lack a key; readers say what is
missing rather than fail)."""

from __future__ import annotations

from typing import Any, TypedDict

from vt_core.analysis.phases import Phases
from vt_core.errors import VtError
from vt_core.storage.layout import layout
from vt_core.storage.location import Location, location, read_json

_FIX = "`vt analyze STUDY` recomputes it"


class Bootstrap(TypedDict, total=False):
    """The bootstrap over seeds of the choice of k."""
    n: int                                  # resamples (0: hmm.bootstrap = 0)
    k_distribution: dict[str, float]        # k -> share of resamples choosing it
    chosen_k_support: float | None          # share choosing the chosen k
    k_interval: list[int] | None            # 95% range of the resamples' k
    state_stability: list[float | None]     # selection.json only: per state, agreement under resampling
    unusable_fits: int
    start: str                              # warm (from the main fit at each k) or cold (hmm.bootstrap_start)


class SelectionRow(TypedDict, total=False):
    """One k of the model-selection table (best restart of the main fits, plus cross-validation)."""
    k: int
    status: str                             # ok | failed | infeasible
    n_ok: int
    n_failed: int
    failures: list[str]
    restart: int
    random_state: int
    train_ll: float
    heldout_ll: float | None
    aic: float
    bic: float
    n_params: int
    params_path: str
    bic_min: float
    bic_max: float
    aic_min: float
    aic_max: float
    heldout_ll_min: float | None
    heldout_ll_max: float | None
    bic_weight: float
    cv_ll: float
    cv_ll_sd: float
    cv_folds: int
    cv_fold_ll: list[float | None]          # each fold's held-out log-likelihood per observation (fold order)


class Selection(TypedDict, total=False):
    """``hmm/selection.json``: the choice of k and the evidence for it."""
    criterion: str
    chosen_k: int
    status: str                             # decided | undetermined
    reasons: list[str]
    table: list[SelectionRow]
    runner_up_k: int | None
    bic_gap_to_next: float | None
    bic_weight: float
    cv_best_k: int | None
    cv_k: int | None                        # the smallest k within one standard error of cv_best_k (paired)
    cv_supported: list[int]                 # every k within one standard error of cv_best_k (paired)
    criteria: dict[str, int | None]         # the k each criterion gives: bic, cv, bootstrap
    density: list[dict[str, Any]]           # k by BIC on all the data and on less (hmm.density_check)
    paper: dict[str, Any]                   # the paper's own selection (vt_core.analysis.paper_criterion)
    change: dict[str, Any]                  # the states of change (vt_core.analysis.change_model)
    bic_k: int                              # BIC's k when another criterion chose (hmm.criterion = "paper")
    k_tried: list[int]
    k_infeasible: list[int]
    k_failed: list[int]
    bootstrap: Bootstrap
    standardize: str
    covariance: str
    n_seeds: int
    n_train_seeds: int


#: what analysis.json keeps of selection.json, beside ``why_not`` and ``bootstrap``
SUMMARY_KEYS = ("status", "reasons", "bic_weight", "bic_gap_to_next", "runner_up_k", "cv_best_k", "cv_k",
                "cv_supported", "criteria", "density", "bic_k", "change", "k_tried", "k_infeasible", "k_failed",
                "standardize", "covariance", "n_seeds", "n_train_seeds")


class SelectionSummary(TypedDict, total=False):
    """What ``analysis.json`` keeps of the selection (no table; the reasons a k was not fitted)."""
    status: str
    reasons: list[str]
    bic_weight: float
    bic_gap_to_next: float | None
    runner_up_k: int | None
    cv_best_k: int | None
    cv_k: int | None
    cv_supported: list[int]
    criteria: dict[str, int | None]
    density: list[dict[str, Any]]
    bic_k: int | None
    change: dict[str, Any] | None
    k_tried: list[int]
    k_infeasible: list[int]
    k_failed: list[int]
    standardize: str
    covariance: str
    n_seeds: int
    n_train_seeds: int
    why_not: dict[str, str]
    bootstrap: Bootstrap


class StateSummary(TypedDict, total=False):
    state: int
    occupancy: float
    seeds: list[int]
    first_step_mean: float | None           # None: a state no seed visits
    step_min: int | None
    step_max: int | None
    means: dict[str, float]
    detour: bool
    coefficient: float | None
    interval: list[float] | None
    stability: float | None


class FeatureChange(TypedDict, total=False):
    feature: str
    mean_abs_gradient: float
    z_mean_change: float
    sd_change: float
    raw_mean_change: float


# "from" is a keyword: the functional form
Transition = TypedDict("Transition", {
    "from": int, "to": int, "prob": float, "n_seeds": int, "seeds": list[int],
    "mean_abs_gradient": dict[str, float], "top_features": list[FeatureChange],
    "top_by_sd_change": list[FeatureChange], "first_step": dict[str, int],
}, total=False)


class Regression(TypedDict, total=False):
    """The detour regression (:func:`vt_core.analysis.detours.detour_regression`)."""
    model: str
    seeds: list[int]
    n: int
    states: list[int]
    coefficients: dict[str, float | None]
    intervals: dict[str, list[float] | None]
    intercept: float | None
    r2: float | None
    determined: bool
    detours: list[int]
    conclusion: str
    visits: dict[str, int]


class Analysis(TypedDict, total=False):
    """``analysis.json``: states, graph, transitions, convergence, detours, dissimilarity."""
    study: str
    chosen_k: int
    features: list[str]
    raw_features: list[str]
    states: list[StateSummary]
    graph: dict[str, Any]                   # networkx node-link data
    transitions: list[Transition]
    convergence_step: dict[str, int | None]
    convergence_threshold: float
    accuracy_unrecorded: list[int]
    time_in_states: dict[str, list[float]]
    regression: Regression
    detour_states: list[int]
    trajectory_dissimilarity: float | None
    seed_dissimilarity: dict[str, float]
    unusual_seeds: list[int]
    selection: SelectionSummary
    phases: Phases                          # the phase timeline when the states are one ordered progression
    fingerprint: str                        # a study's (vt_core.stages.explain)
    comparison: dict[str, Any]              # a comparison's (vt_core.analysis.compare.summarise)
    comparison_notes: list[str]
    seed_labels: dict[str, Any]             # a table's runs named by labels (vt states): seed number -> label
    compared: list[dict[str, Any]]


def selection_summary(sel: Selection) -> SelectionSummary:
    """What ``analysis.json`` keeps of ``selection.json``: the evidence on k without the table
    (a key the selection lacks is None), the reason each k that is not ``ok`` was not used, and the
    bootstrap's distribution of k."""
    boot = sel.get("bootstrap") or {}
    out = {key: sel.get(key) for key in SUMMARY_KEYS}
    out["why_not"] = {str(t["k"]): "; ".join(t["failures"]) for t in sel["table"] if t["status"] != "ok"}
    out["bootstrap"] = {key: boot.get(key) for key in ("n", "k_distribution", "chosen_k_support", "k_interval", "start")}
    return out  # type: ignore[return-value]


class AnalysisMissingError(VtError, FileNotFoundError):
    """The study has not been analysed yet."""


def load_analysis(study: str | Location) -> Analysis:
    """``analysis.json`` as :func:`vt_core.analysis.states.explain` writes it."""
    path = layout(location(study)).analysis
    if not path.is_file():
        raise AnalysisMissingError(f"{path} not found: the study has not been analysed; run `vt analyze {study}`")
    return read_json(path, f"`vt analyze {study}` recomputes it")  # type: ignore[return-value]


def load_selection(study: str | Location) -> Selection:
    """``hmm/selection.json`` as :func:`vt_core.analysis.states.finalize` writes it."""
    return read_json(layout(location(study)).selection, _FIX)  # type: ignore[return-value]
