"""Prefect task wrappers: each calls one vt_core function and passes paths / small JSON values.

Importing this package sets vt's Prefect defaults unless the user set them: analytics off, so that
an embedded (ephemeral) run never reaches for the internet; and two minutes, not Prefect's 20 s,
for the temporary server to start, so that a busy machine does not fail a run.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
