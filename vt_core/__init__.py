"""vt core library: training, Zarr stores, lazy metrics, HMMs, analysis and dashboards.

This package never imports Prefect; ``tasks/`` and ``flows/`` wrap it. Its public faces are
:func:`open_study` and :class:`Recorder` (imported on first use) and :mod:`vt_core.errors`.

The wings, top to bottom. A module imports from its own wing, from the wings below it and from the
leaves, never upwards, function-level imports included (``tests/meta/test_layers.py`` reads this
map and enforces it; ``docs/architecture.md`` says more)::

    public      vt_core itself and the documented import paths hooks, trajectories, callbacks
    stages      the pipeline: one module per stage, one function per Prefect task (tasks/ mirrors it)
    report      what people see: narrative, markdown, closing lines, dashboard/, figures/, open_study, export
    analysis    HMMs, choosing k, states, transitions, detours, comparisons, analysis.json and its readers
    external    runs vt did not train: Recorder, framework callbacks, checkpoint files, their study.json
    training    the training loop, seed groups, checkpoint records, position, interrupt, preflight checks
    metrics     the registry, kernels, lazy computation, the function's trajectory, the metrics.zarr store
    models      built-in models and hookpoints; a user's model factory
    data        tasks and datasets: generated, shipped in a package, or read from a local root
    storage     location, layout, study directory, run stores, chunks, resume files, integrity, writer
    config      pydantic models of a study config; validation without side effects
    ground errors names runtime progress  the ground: imports nothing of vt but the ground

Leaves, importable from every wing (they import only the ground): ``metrics.registry`` (the names of
metrics a config may ask for) and ``storage.location`` (what a study's address may be).
"""

from vt_core.names import VERSION as __version__  # noqa: F401  (vt_core.__version__)

__all__ = ["Recorder", "open_study"]


def __getattr__(name: str):
    """``open_study`` and ``Recorder`` on first use: importing vt_core (as the writer process
    does) stays light."""
    if name == "open_study":
        from vt_core.report.datatree import open_study

        return open_study
    if name == "Recorder":
        from vt_core.external.recorder import Recorder

        return Recorder
    raise AttributeError(f"module 'vt_core' has no attribute {name!r}")
