"""Hookpoints, at their documented import path; they live in :mod:`vt_core.models.hooks`."""

from vt_core.models.hooks import (  # noqa: F401
    INPUT_SUFFIX,
    HookPoint,
    HookpointError,
    array_kinds,
    capture,
    describe_hookpoints,
    hookpoint_names,
    select_hookpoints,
    select_parameters,
)
