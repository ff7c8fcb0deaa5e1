"""Prefect flows and the `vt` command. Importing ``tasks`` first switches analytics off."""

import tasks  # noqa: F401  (sets PREFECT_SERVER_ANALYTICS_ENABLED=false, DO_NOT_TRACK=1 by default)
