"""Prefect task wrappers: each calls one vt_core function and passes paths / small JSON values.

Importing this package sets vt's Prefect defaults unless the user set them: analytics off, so that
an embedded (ephemeral) run never reaches for the internet; and two minutes, not Prefect's 20 s,
for the temporary server to start, so that a busy machine does not fail a run.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def quiet_prefect(verbose: bool = False) -> None:
    """Prefect's own log lines go to its API (the UI) and, with ``vt -v``, to the terminal; the
    default terminal view is vt's own (its live display and closing summary). Called by the `vt`
    command before Prefect is imported; a value the user set wins."""
    if verbose:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "INFO"
    else:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
