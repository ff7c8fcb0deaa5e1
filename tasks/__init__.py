"""Prefect task wrappers: each calls one vt_core function and passes paths / small JSON values.

Importing this package switches Prefect's analytics off unless the user set them, so that an
embedded (ephemeral) run never reaches for the internet.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
