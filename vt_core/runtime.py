"""Runtime switches: how vt runs on this machine, never what it computes.

They are read from the environment once, at the edge (the CLI, a flow, a benchmark), into one
:class:`Runtime` that is passed down; nothing below reads the environment itself.

=================  ===========================================================================
``VT_WRITER``      ``process`` (default on Linux): a writer process per seed receives each
                   checkpoint through a pipe; ``thread``: a thread of the training process
                   (the default elsewhere).
``VT_WRITER_NICE`` niceness of writer processes (default 10): checkpoint writing yields the
                   cores to training.
``VT_WRITER_START`` ``fork`` (default): a writer process is a fork of the training process, with
                   the modules already imported; ``exec``: a new interpreter
                   (``python -m vt_core.storage.writer``), ~0.5 s of CPU importing numpy and zarr first.
``VT_GROUP_ASYNC`` ``1``/``0``: a seed group's checkpoint rounds copied to the host on a
                   background thread (default: on for CUDA, off on a CPU).
``RANK``           (set by ``torchrun``) this process's rank in a multi-process job: a
                   :class:`~vt_core.external.recorder.Recorder` writes on rank 0 only (when
                   ``torch.distributed`` is initialised, its rank decides instead).
=================  ===========================================================================
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from vt_core.errors import VtError


class RuntimeSettingError(VtError, ValueError):
    """An environment switch has a value vt does not understand."""


@dataclass(frozen=True)
class Runtime:
    writer: Literal["process", "thread"] = "process" if sys.platform.startswith("linux") else "thread"
    writer_nice: int = 10
    writer_start: Literal["fork", "exec"] = "fork"
    group_async: bool | None = None  # None: decided by the device (on for CUDA)
    rank: int = 0  # this process's rank in a multi-process (DDP) job

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Runtime:
        env = os.environ if env is None else env
        out = cls()
        writer = env.get("VT_WRITER", out.writer)
        if writer not in ("process", "thread"):
            raise RuntimeSettingError(f"VT_WRITER={writer!r}: use 'process' or 'thread'")
        nice = env.get("VT_WRITER_NICE", str(out.writer_nice))
        try:
            writer_nice = int(nice)
        except ValueError:
            raise RuntimeSettingError(f"VT_WRITER_NICE={nice!r}: give an integer niceness (e.g. 10)") from None
        start = env.get("VT_WRITER_START", out.writer_start)
        if start not in ("fork", "exec"):
            raise RuntimeSettingError(f"VT_WRITER_START={start!r}: use 'fork' or 'exec'")
        raw = env.get("VT_GROUP_ASYNC")
        if raw not in (None, "", "0", "1"):
            raise RuntimeSettingError(f"VT_GROUP_ASYNC={raw!r}: use 1 (on) or 0 (off), or leave it unset")
        group_async = None if raw in (None, "") else raw == "1"
        rank_text = env.get("RANK", "0") or "0"
        if not rank_text.isdigit():
            raise RuntimeSettingError(f"RANK={rank_text!r}: a process rank is a non-negative integer")
        return cls(writer=writer, writer_nice=writer_nice, writer_start=start,  # type: ignore[arg-type]
                   group_async=group_async, rank=int(rank_text))


def process_alive(pid: int | None) -> bool:
    """Whether process ``pid`` runs on this machine (one we may not signal counts as running)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
