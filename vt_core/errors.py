"""The one base class of every error vt reports to a person.

Each module defines its own specific errors (``ConfigError``, ``StoreError``, ...) as subclasses of
:class:`VtError` and of the stdlib class that fits (ValueError, RuntimeError, FileNotFoundError,
OSError), so that callers may catch either. The CLI catches :class:`VtError` once and prints its
message as one line; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class VtError(Exception):
    """An error whose message names what is wrong and how to fix it."""
