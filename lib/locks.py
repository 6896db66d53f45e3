"""Exclusive locks between retouch processes on one machine: a destination being delivered
to, the embedded Prefect server's database while it starts.

A lock is an ``flock`` on a small file, so it is released when its process ends however it
ends (a killed run never leaves a stale lock). The file says who holds it (pid, what, since
when), for the message another process gives when it finds the lock taken.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from retouch.lib.errors import RetouchError


class LockedError(RetouchError):
    """Another retouch process holds the lock. ``holder`` is what that process wrote."""

    def __init__(self, message: str, holder: dict[str, Any]):
        self.holder = holder
        super().__init__(message)


class Lock:
    """An exclusive lock on ``path`` (created with its parent folders)."""

    def __init__(self, path: str | Path, what: str):
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    def acquire(self, *, wait: bool = False) -> bool:
        """Take the lock; returns False when another process holds it (unless ``wait``)."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        info = {"pid": os.getpid(), "what": self.what, "since": time.strftime("%H:%M:%S")}
        with suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        return True

    def holder(self) -> dict[str, Any]:
        """What the process holding the lock wrote (empty when unreadable)."""
        try:
            value = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def release(self) -> None:
        if self._fd is not None:
            with suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def destination_lock(dest: str, lock_dir: str | Path) -> Lock:
    """The lock of delivering to ``dest`` (a local path or URL), a file in ``lock_dir``.

    Local destinations are named by their real path, so ``out`` and ``./out/`` are one.
    """
    from retouch.lib import storage

    local = storage.local_path(dest)
    key = os.path.realpath(local) if local is not None else storage.redact(dest).rstrip("/")
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return Lock(Path(lock_dir) / f"dest-{digest}.lock", what=key)


def lock_destination(dest: str, lock_dir: str | Path) -> Lock:
    """Take :func:`destination_lock` of ``dest`` or refuse.

    Raises:
        LockedError: another retouch process is delivering to ``dest``; the message names
            it and says what to do.
    """
    from retouch.lib import storage

    lock = destination_lock(dest, lock_dir)
    if not lock.acquire():
        holder = lock.holder()
        who = f"process {holder['pid']}, since {holder.get('since', '?')}" if holder else ""
        raise LockedError(
            f"{storage.redact(dest)}: another retouch run is delivering there"
            + (f" ({who})" if who else "")
            + "; wait for it to finish or choose another --out (two runs into one "
            "destination would replace each other's results)",
            holder,
        )
    return lock
