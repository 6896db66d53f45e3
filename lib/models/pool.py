"""A per-process pool of loaded models.

Loading a model costs seconds (and GPU memory), so each worker process builds each model once
and keeps it. ``RealESRGANer`` and ``GFPGANer`` keep per-call state on the instance (the padded
input, the detected faces), so :meth:`ModelPool.use` also hands out a per-instance lock: two
threads can share a process and a model, but not run the same instance at the same time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

PoolKey = tuple[Hashable, ...]
"""(model name, device, precision, extra config tuple)."""

PoolEntry = tuple[PoolKey, Callable[[], Any]]
"""A model as an operation takes it from the pool: its key and the factory that builds it
(see ``Operation.pool_entries``)."""


class _Entry:
    __slots__ = ("build_lock", "use_lock", "value", "built")

    def __init__(self) -> None:
        self.build_lock = threading.Lock()
        self.use_lock = threading.RLock()
        self.value: Any = None
        self.built = False


class ModelPool:
    """Lazily built, process-wide models keyed by (name, device, precision, extra config).

    Attributes:
        loads: key -> number of times the factory ran (tests and benchmarks read it; a key
            above 1 means the model was rebuilt, e.g. after :meth:`clear`).
        load_seconds: total seconds spent building models in this process (a task reads it
            before and after its work to report its own model loading).
        ahead_seconds: the part of ``load_seconds`` built ahead of the work that uses the
            models (``get(..., ahead=True)``: a command's preload thread); each such build is
            reported once, by the first task that asks (:meth:`take_ahead`).
    """

    def __init__(self) -> None:
        self._entries: dict[PoolKey, _Entry] = {}
        self._guard = threading.Lock()
        self.loads: dict[PoolKey, int] = {}
        self.load_seconds = 0.0
        self.ahead_seconds = 0.0
        self._ahead_unreported = 0.0

    def _entry(self, key: PoolKey) -> _Entry:
        with self._guard:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
            return entry

    def _built(self, key: PoolKey, factory: Callable[[], Any], ahead: bool = False) -> _Entry:
        entry = self._entry(key)
        if entry.built:
            return entry
        with entry.build_lock:
            if not entry.built:
                started = time.perf_counter()
                value = factory()
                with self._guard:
                    seconds = time.perf_counter() - started
                    self.loads[key] = self.loads.get(key, 0) + 1
                    self.load_seconds += seconds
                    if ahead:
                        self.ahead_seconds += seconds
                        self._ahead_unreported += seconds
                entry.value = value
                entry.built = True
        return entry

    def get(self, key: PoolKey, factory: Callable[[], Any], *, ahead: bool = False) -> Any:
        """The model for ``key``, built by ``factory()`` on first use only (``ahead``: built
        before the work that will use it, see ``ahead_seconds``).

        Two threads asking for a new key at once build it once: the second waits for the
        first. A factory that raises leaves nothing behind, so the next call tries again.
        """
        return self._built(key, factory, ahead).value

    def take_ahead(self) -> float:
        """Seconds of builds made ahead (``get(..., ahead=True)``) not reported yet; each is
        returned once."""
        with self._guard:
            seconds, self._ahead_unreported = self._ahead_unreported, 0.0
        return seconds

    @contextmanager
    def use(self, key: PoolKey, factory: Callable[[], Any]) -> Iterator[Any]:
        """Context manager: the model for ``key``, held exclusively for the ``with`` block."""
        entry = self._built(key, factory)
        with entry.use_lock:
            yield entry.value

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple):
            return False
        with self._guard:
            entry = self._entries.get(key)
        return entry is not None and entry.built

    def clear(self) -> None:
        """Forget every model (the next ``get`` builds again; ``loads`` keeps counting)."""
        with self._guard:
            self._entries.clear()


_DEFAULT: ModelPool | None = None
_DEFAULT_LOCK = threading.Lock()


def default_pool() -> ModelPool:
    """The process-wide pool (one per worker process)."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = ModelPool()
    return _DEFAULT
