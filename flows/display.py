"""The live view of `vt run` / `vt analyze`: a rich progress view on a terminal (a bar per running
seed with epoch, accuracies and ETA; then the metric, HMM and bootstrap stages), plain lines at a
sensible rate otherwise (CI, a Prefect worker, ``--quiet``). It listens to :mod:`vt_core.progress`."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vt_core import progress
from vt_core.report.narrative import num

_STAGES = {"metrics": "metrics (seeds)", "hmm": "HMM fits", "bootstrap": "bootstrap fits", "import": "checkpoints in"}
_PLAIN_EVERY_S = 15.0


def _acc(e: dict) -> str:
    return f"train acc {num(e.get('train_accuracy'))}  held-out {num(e.get('test_accuracy'))}"


class Display:
    """Use as a context manager around a flow call."""

    def __init__(self, console: Console, live: bool):
        self.console, self.live = console, live and console.is_terminal
        self.lock = threading.Lock()
        self.tasks: dict[Any, Any] = {}
        self.last: dict[Any, float] = {}
        self.states: dict[int, str] = {}  # each seed's live state (`vt run --reference`)
        self.bars = Progress(TextColumn("{task.description:<16}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console,
                             transient=False, refresh_per_second=4)

    def __enter__(self) -> Display:
        if self.live:
            self.bars.start()
        self._stop = progress.subscribe(self.on_event)
        return self

    def __exit__(self, *exc) -> None:
        self._stop()
        if self.live:
            self.bars.stop()

    def line(self, text: str) -> None:
        (self.bars.console if self.live else self.console).print(text, soft_wrap=True, markup=False,
                                                                  highlight=False)

    def on_event(self, e: dict) -> None:
        with self.lock:
            kind = e.get("kind")
            if kind == "note":
                self.line(e["text"])
            elif kind == "seed":
                self._seed(e)
            elif kind == "seed_end":
                self._seed_end(e)
            elif kind == "stage":
                self._stage(e)
            elif kind == "advance":
                self._advance(e)
            elif kind == "live":
                self._live(e)

    def _seed(self, e: dict) -> None:
        key = ("seed", e["seed"])
        if self.live:
            if key not in self.tasks:
                self.tasks[key] = self.bars.add_task(f"seed {e['seed']}", total=e["epochs"], info="")
            self.bars.update(self.tasks[key], completed=e["epoch"], info=_acc(e) + self.states.get(e["seed"], ""))
            return
        now = time.monotonic()
        if now - self.last.get(key, -1e9) >= _PLAIN_EVERY_S or e["epoch"] >= e["epochs"]:
            self.last[key] = now
            self.line(f"seed {e['seed']}: epoch {num(e['epoch'])}/{e['epochs']}  {_acc(e)}")

    def _live(self, e: dict) -> None:
        """A seed's state decoded live (`vt run --reference`), beside its bar; the events that change
        it come as notes (lines), on a terminal or not."""
        self.states[e["seed"]] = f"  state {e['state']} (p {e['probability']:.2f})"
        key = ("seed", e["seed"])
        if self.live and key in self.tasks:
            info = self.bars.tasks[self.tasks[key]].fields.get("info", "").split("  state")[0]
            self.bars.update(self.tasks[key], info=info + self.states[e["seed"]])

    def _seed_end(self, e: dict) -> None:
        key = ("seed", e["seed"])
        if self.live and key in self.tasks:
            self.bars.update(self.tasks[key], info=e["status"])
            self.bars.stop_task(self.tasks[key])
        elif not self.live:
            self.line(f"seed {e['seed']}: {e['status']}")

    def _stage(self, e: dict) -> None:
        key = ("stage", e["stage"])
        name = _STAGES.get(e["stage"], e["stage"])
        if self.live:
            if key in self.tasks:
                self.bars.update(self.tasks[key], total=self.bars.tasks[self.tasks[key]].total + e["total"])
            else:
                self.tasks[key] = self.bars.add_task(name, total=e["total"], info="")
        else:
            self.line(f"{name}: {e['total']} to do")

    def _advance(self, e: dict) -> None:
        key = ("stage", e["stage"])
        if self.live and key in self.tasks:
            self.bars.advance(self.tasks[key])
