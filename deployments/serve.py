"""Serve the demo study on a schedule from this process (no work pool needed).

    prefect server start                               # another terminal; schedules need a server
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python deployments/serve.py                        # from the repository root
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.study import study_flow  # noqa: E402

DEPLOYMENT = {
    "name": "sparse-parity-nightly-served",
    "cron": "0 3 * * *",
    "parameters": {"config_path": str(ROOT / "examples" / "sparse_parity.toml"),
                   "output_dir": str(ROOT / "studies" / "sparse_parity-{date}")},  # each night its own study
}

if __name__ == "__main__":
    study_flow.serve(**DEPLOYMENT)
