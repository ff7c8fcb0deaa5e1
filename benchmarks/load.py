"""CPU-bound processes run beside a benchmark: the shared machine of issue 21 (load average 2-3 on 2 cores)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

_SPIN = "while True: pass"


@contextlib.contextmanager
def cpu_load(n: int) -> Iterator[None]:
    """``n`` processes that each keep one core busy (at the default priority) while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()
