"""Prefect task wrappers: each calls one vt_core function and passes paths / small JSON values.

Importing this package switches Prefect's analytics off unless the user set them, so that an
embedded (ephemeral) run never reaches for the internet.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


def quiet_prefect(verbose: bool = False) -> None:
    """Prefect's own log lines go to its API (the UI) and, with ``vt -v``, to the terminal; the
    default terminal view is vt's own (its live display and closing summary). Called by the `vt`
    command before Prefect is imported; a value the user set wins."""
    if verbose:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "INFO"
    else:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
