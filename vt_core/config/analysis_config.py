"""The ``hooks``, ``metrics``, ``hmm`` and ``live`` sections of a study config: what is recorded, what
is computed from it, how states are fitted, and how they are decoded while seeds train (re-exported
by :mod:`vt_core.config.study_config`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vt_core.names import PAPER_METRICS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class HooksConfig(_Strict):
    activations: list[str] = Field(default_factory=list, description="hookpoint names or globs")
    capture: Literal["output", "input", "both"] = "output"
    weights: list[str] = Field(default_factory=lambda: ["*"], description="parameter globs to store")
    probe_size: int = Field(32, gt=0, le=100_000, description="examples in the fixed probe batch")
    per_example_loss: int = Field(0, ge=0, le=100_000, description="N: the loss of N fixed training and N held-out "
                                  "examples at every checkpoint (0: off); their PCs are HMM features function_pc1, ...")


class MetricsConfig(_Strict):
    plugins: list[str] = Field(default_factory=list, description="modules that register extra metrics")
    names: list[str] = Field(default_factory=lambda: list(PAPER_METRICS), min_length=1)
    exclude: list[str] = Field(
        default_factory=list,
        description="parameter globs left out of the weight metrics, besides those the module rules leave "
                    "out (embeddings, normalisation layers; see `vt hooks CONFIG`)",
    )
    convention: Literal["paper_code", "paper_text"] = Field(
        "paper_code", description="paper_code: as michahu/modeling-training computes (Bessel variances, lower "
        "median, NaN variance of one singular value dropped); paper_text: population variances, midpoint median")
    dormant_threshold: float = Field(0.025, ge=0.0, le=1e6, description="tau of dormant_fraction")

    @model_validator(mode="after")
    def _known(self) -> MetricsConfig:
        """Built-in names are checked here; names that plugins register are checked by
        :func:`vt_core.config.usercode.load_user_code`, which imports the plugins (parsing runs no user code)."""
        from vt_core.metrics.registry import unknown_metrics

        if len(set(self.names)) != len(self.names):
            raise ValueError("metric names must be unique")
        unknown = unknown_metrics(self.names)
        if unknown and not self.plugins:
            raise ValueError(f"unknown metric(s) {unknown}; `vt metrics` lists them")
        return self


class HMMConfig(_Strict):
    max_states: int = Field(8, gt=0, le=64, description="fit k = 1..max_states (extended while BIC keeps "
                            "falling at the largest k, up to twice this)")
    extend: bool = Field(True, description="extend the grid while BIC is lowest at its largest k")
    restarts: int = Field(5, gt=0, le=100)
    cv_folds: int = Field(5, ge=0, le=100, description="folds over the training seeds for the cross-validated "
                          "held-out log-likelihood (0: off)")
    cv_restarts: int | None = Field(None, gt=0, le=100, description="restarts per k and fold (default: "
                                    "hmm.restarts, as the main fits; with one, a local optimum at the true k made the "
                                    "held-out likelihood favour larger k)")
    bootstrap: int = Field(20, ge=0, le=1000, description="resamples of the seeds (80%, without replacement), each "
                           "choosing its own k (0: off): the distribution of k and the stability of each state")
    bootstrap_restarts: int | None = Field(None, gt=0, le=100, description="default: 1 warm, hmm.restarts cold")
    bootstrap_start: Literal["warm", "cold"] = Field("warm", description="warm: each resample starts from the main "
                                                     "fit at its k; cold: from k-means, as the main fits")
    covariance: Literal["full", "diag", "spherical", "tied"] = "full"
    holdout_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    n_iter: int = Field(200, gt=0, le=100_000, description="EM iterations; a fit that has not converged is excluded")
    tol: float = Field(1e-3, gt=0.0, le=1e6)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    standardize: Literal["seed", "global"] = Field(
        "global", description="global: z-score with the mean and sd of all seeds together (recovers planted "
        "states when seeds spend different times in them); seed: each seed on its own, as the paper does")
    pca_components: int | None = Field(None, gt=0, le=10_000, description="project the features on this many PCs first")
    features: list[str] | None = Field(
        None, description="default: the metrics' names; 'metric@layer' picks one layer's or hook's value")
    convergence_threshold: float = Field(0.9, gt=0.0, le=1.0, description="held-out accuracy")
    criterion: Literal["bic", "paper"] = Field("bic", description="bic: vt's (checked by cross-validation and the "
                                               "bootstrap); paper: the paper's procedure (always reported beside)")
    paper_n_iter: int = Field(10, gt=0, le=100_000, description="EM iterations of the paper's procedure")
    density_check: bool = Field(False, description="also choose k on every 2nd/4th checkpoint and half the seeds")
    change_model: bool = Field(False, description="also fit states of change (an HMM on first differences)")


class LiveConfig(_Strict):
    """Live states while seeds train (`vt run`; issue 32). Not part of what a seed stores: changing it
    retrains nothing."""

    reference: str | None = Field(None, min_length=1, description="a study vt analysed (a path relative to the "
                                  "working dir, or an fsspec URL) whose model decodes each seed's state as its "
                                  "checkpoints commit; `vt run --reference` overrides it")
    stop_if_predicted_beyond: int | None = Field(
        None, gt=0, le=10**12, description="stop a seed (status stopped-early, resumable) at the first checkpoint "
        "where the reference's precedents put its convergence (their median) past this step; a run without this "
        "key resumes such seeds")
