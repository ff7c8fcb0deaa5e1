"""vt core library: training, Zarr stores, lazy metrics, HMMs, analysis and dashboards.

This package never imports Prefect; ``tasks/`` and ``flows/`` wrap it.
"""

__version__ = "0.1.0"
