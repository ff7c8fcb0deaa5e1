"""Every path under a study directory, in one place.

::

    STUDY/
      study.json                     resolved config, training hash, versions, times
      .vt.lock                       while a run holds the study: its host and pid
      runs/seed=0003.zarr            one Zarr v3 store per seed
      runs/seed=0003.resume.pt       model + optimizer + RNG state of its last commit
      runs/seed=0003.stop.json       the live policy's request that the seed stop early (live.stop_if_predicted_beyond)
      metrics.zarr                   (seed, step, metric[, layer]); metrics.zarr.new while rebuilt
      hmm/input.npz, hmm/split.json  the HMM input: standardised features, seeds split
      hmm/fits/NAME.json|.npz        one fit per (kind, k, restart, fold or resample)
      hmm/selection.json, hmm/model.npz, hmm/paths.json
      function.npz                   PCA of the per-example losses (hooks.per_example_loss): the function
      analysis.json                  states, graph, explanations, regression
      live.json                      live states while seeds train (`vt run --reference`): posteriors, events
      dashboard/index.html           standalone Bokeh page; dashboard/live.html while seeds train (live states)
      .vt.serving                    while `vt dashboard --serve` serves it: its URL, host and pid
      figures/NAME.pdf|svg|png       `vt figures`: static figures for papers
      report.md                      `vt report`
      export/checkpoints.parquet     `vt export`: one row per (seed, step); export/states.parquet
      .prefect/results/              (older vt only) Prefect result files: never read, `vt validate` names them

A comparison directory (`vt compare A B`; default ``compare-A-vs-B`` beside study A) has the
analysis part of that layout (``hmm/``, ``analysis.json``, ``dashboard/``, ``report.md``) for the
joint HMM of the studies' seeds, plus ``comparison.json`` (the studies, their seeds, the settings).

No other module spells these names: each asks :func:`layout` for the path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vt_core.storage.location import Location, Opened, location

#: the run stores' directory; also the name of their node in :func:`vt_core.report.datatree.open_study`'s tree
RUNS = "runs"


@dataclass(frozen=True)
class Layout:
    root: Location

    # -- the study --------------------------------------------------------------------------------
    @property
    def study_json(self) -> Location:
        return self.root / "study.json"

    @property
    def lock(self) -> Location:
        return self.root / ".vt.lock"

    # -- training -----------------------------------------------------------------------------------
    @property
    def runs(self) -> Location:
        return self.root / RUNS

    def run(self, seed: int) -> Location:
        return self.runs / f"seed={seed:04d}.zarr"

    def resume(self, seed: int) -> Location:
        return resume_path(self.run(seed))

    def verified(self, seed: int) -> Location:
        return verified_path(self.run(seed))

    def stop_request(self, seed: int) -> Location:
        """``runs/seed=NNNN.stop.json``: the live watcher's request that the seed stop at its next
        checkpoint (:mod:`vt_core.training.early_stop`)."""
        return stop_request_path(self.run(seed))

    @property
    def task_results(self) -> Location:
        return self.root / ".prefect" / "results"

    # -- metrics ------------------------------------------------------------------------------------
    @property
    def metrics(self) -> Location:
        return self.root / "metrics.zarr"

    @property
    def metrics_rebuild(self) -> Location:
        return self.root / "metrics.zarr.new"

    # -- HMM ----------------------------------------------------------------------------------------
    @property
    def hmm(self) -> Location:
        return self.root / "hmm"

    @property
    def hmm_input(self) -> Location:
        return self.hmm / "input.npz"

    @property
    def hmm_split(self) -> Location:
        return self.hmm / "split.json"

    def fit(self, name: str, suffix: str) -> Location:
        """``hmm/fits/NAME.json`` (the row) or ``.npz`` (the parameters); NAME from
        :func:`vt_core.analysis.selection.job_name` (``main-k=03-r=01``, ``cv2-...``, ``boot11-...``)."""
        return self.hmm / "fits" / f"{name}.{suffix}"

    @property
    def selection(self) -> Location:
        return self.hmm / "selection.json"

    @property
    def model(self) -> Location:
        return self.hmm / "model.npz"

    @property
    def paths(self) -> Location:
        return self.hmm / "paths.json"

    @property
    def function(self) -> Location:
        """``function.npz``: the PCA of the per-example losses over every seed and checkpoint."""
        return self.root / "function.npz"

    @property
    def live(self) -> Location:
        """``live.json``: each training seed's state posterior under a reference study's model, and
        the events decoded so far (:mod:`vt_core.stages.live`)."""
        return self.root / "live.json"

    # -- what people read ---------------------------------------------------------------------------
    @property
    def analysis(self) -> Location:
        return self.root / "analysis.json"

    @property
    def dashboard(self) -> Location:
        return self.root / "dashboard" / "index.html"

    @property
    def live_page(self) -> Location:
        """``dashboard/live.html``: live states as seeds train (:mod:`vt_core.report.live_page`)."""
        return self.root / "dashboard" / "live.html"

    @property
    def dashboard_served(self) -> Location:
        """Where ``vt dashboard --serve`` says it serves the dashboard (for the flow's link to it)."""
        return self.root / ".vt.serving"

    @property
    def figures(self) -> Location:
        return self.root / "figures"

    @property
    def report(self) -> Location:
        return self.root / "report.md"

    @property
    def exports(self) -> Location:
        """``vt export``'s default directory."""
        return self.root / "export"

    # -- a comparison of studies (`vt compare`) -----------------------------------------------------
    @property
    def comparison(self) -> Location:
        """``comparison.json``: the studies compared, the joint seeds, the HMM settings."""
        return self.root / "comparison.json"


def comparison_dir(first_study: str | os.PathLike | Location, names: list[str]) -> Location:
    """The default directory of a comparison: ``compare-A-vs-B`` beside the first study."""
    return location(first_study).parent / ("compare-" + "-vs-".join(names))


def export_table(directory: Location, table: str, extension: str) -> Location:
    """``DIR/checkpoints.parquet``, ``DIR/states.csv``, ...: one table that ``vt export`` writes."""
    return directory / f"{table}.{extension}"


def layout(study: str | os.PathLike | Location) -> Layout:
    """The paths of the study at ``study`` (a path, an fsspec URL, or an opened study's own)."""
    if isinstance(study, Layout):
        return study
    own = getattr(study, "layout", None) if isinstance(study, Opened) else None
    return own if isinstance(own, Layout) else Layout(location(study))


def resume_path(store_path: str | Location) -> Location:
    """The resume file beside a run store (``seed=0003.zarr`` -> ``seed=0003.resume.pt``): a
    foreign file inside the store would make zarr and xarray warn."""
    p = location(store_path)
    return p.with_name(p.name.removesuffix(".zarr") + ".resume.pt")


def verified_path(store_path: str | Location) -> Location:
    """The manifest of a run store's verified chunk files (``seed=0003.zarr`` ->
    ``seed=0003.verified.json``; :mod:`vt_core.storage.verified`)."""
    p = location(store_path)
    return p.with_name(p.name.removesuffix(".zarr") + ".verified.json")


def stop_request_path(store_path: str | Location) -> Location:
    """The live policy's stop request beside a run store (``seed=0003.zarr`` -> ``seed=0003.stop.json``)."""
    p = location(store_path)
    return p.with_name(p.name.removesuffix(".zarr") + ".stop.json")
