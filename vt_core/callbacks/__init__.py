"""Framework callbacks, at their documented import path (``vt_core.callbacks.lightning``,
``vt_core.callbacks.hf``); they live in :mod:`vt_core.external.callbacks`."""

from vt_core.external.callbacks import HF_SCALARS, LIGHTNING_SCALARS, pick  # noqa: F401
