"""A tiny in-process event hub: tasks report per-image progress, the CLI draws bars.

Listeners run in the reporting thread and must be quick. When nobody listens (a worker
process, a deployment), emitting costs a lock and an empty loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Listener = Callable[[dict[str, Any]], None]

_lock = threading.Lock()
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> Callable[[], None]:
    """Register a listener; returns a function that unregisters it."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def emit(event: str, **fields: Any) -> None:
    """Send ``{"event": event, **fields}`` to every listener; a failing listener is dropped."""
    with _lock:
        listeners = list(_listeners)
    payload = {"event": event, **fields}
    for listener in listeners:
        try:
            listener(payload)
        except Exception:  # a broken progress bar must never fail a batch
            with _lock:
                if listener in _listeners:
                    _listeners.remove(listener)
