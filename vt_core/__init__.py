"""vt core library: training, Zarr stores, lazy metrics, HMMs, analysis and dashboards.

This package never imports Prefect; ``tasks/`` and ``flows/`` wrap it.
"""

__version__ = "0.1.0"

__all__ = ["open_study"]


def __getattr__(name: str):
    """``open_study`` on first use: importing vt_core (as the writer process does) stays light."""
    if name == "open_study":
        from vt_core.dataset import open_study

        return open_study
    raise AttributeError(f"module 'vt_core' has no attribute {name!r}")
