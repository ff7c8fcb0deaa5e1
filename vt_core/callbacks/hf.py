"""The Hugging Face ``Trainer`` callback, at its documented import path; it lives in
:mod:`vt_core.external.callbacks.hf`."""

from vt_core.external.callbacks.hf import VtTrainerCallback  # noqa: F401
