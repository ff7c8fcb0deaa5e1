"""vt core library: training, Zarr stores, lazy metrics, HMMs, analysis and dashboards.

This package never imports Prefect; ``tasks/`` and ``flows/`` wrap it.
"""

__version__ = "0.1.0"

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
