"""Progress of a run as events, for whoever shows them (the `vt` command's live view).

Training, the metric tasks and the HMM fits :func:`publish` small dicts; a display
:func:`subscribe`-s. Nothing is shown when nobody listens (a deployment's worker logs to Prefect
instead). Events: ``{"kind": "seed", "seed", "epoch", "epochs", "step", "train_accuracy",
"test_accuracy", ...}`` at each checkpoint; ``{"kind": "seed_end", "seed", "status"}``;
``{"kind": "note", "text"}`` (a seed resuming, a repair); ``{"kind": "stage", "stage", "total"}``
when a stage starts and ``{"kind": "advance", "stage"}`` as its items finish.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Listener = Callable[[dict], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def subscribe(listener: Listener) -> Callable[[], None]:
    """Start sending events to ``listener``; returns the function that stops it."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def publish(event: dict) -> None:
    """Hand ``event`` to every listener (a failing display never fails a run)."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception:  # noqa: BLE001, S110 - the display is best effort
            pass


def note(text: str) -> None:
    publish({"kind": "note", "text": text})
