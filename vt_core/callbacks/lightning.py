"""The PyTorch Lightning callback, at its documented import path; it lives in
:mod:`vt_core.external.callbacks.lightning`."""

from vt_core.external.callbacks.lightning import VtCallback  # noqa: F401
