"""The destination: checked before a run, written all or nothing, failures said plainly."""

from __future__ import annotations

import errno
import os
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import suppress

from retouch.lib import storage
from retouch.lib.errors import RetouchError, StorageError


class DeliveryError(StorageError):
    """Delivering to the destination failed, or the destination cannot take a delivery.

    The message says what failed and where, what the destination holds now and what to do.
    ``retry`` is True when trying again soon may succeed (storage not answering, a ZIP that
    failed verification), False when it cannot (full disk, read-only, no permission, a path
    under a file).
    """

    def __init__(self, message: str, *, retry: bool = False):
        self.retry = retry
        super().__init__(message)


_NO_SPACE = "free space there or choose another --out, then re-run the same command"
_HINTS = {
    errno.ENOSPC: _NO_SPACE,
    errno.EDQUOT: _NO_SPACE,
    errno.EFBIG: _NO_SPACE,
    errno.EROFS: "it is on a read-only file system: choose another --out or make it writable",
    errno.EACCES: "no permission to write there: choose another --out or fix its access rights",
    errno.EPERM: "no permission to write there: choose another --out or fix its access rights",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another --out",
    errno.EISDIR: "a folder is in the way of a file retouch writes there: move it away",
}


def _os_error(exc: BaseException) -> OSError | None:
    """The first OSError with an errno in ``exc`` and its causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and (current.errno or 0) in _HINTS:
            return current
        current = current.__cause__ or current.__context__
    return None


def worth_retrying(exc: BaseException) -> bool:
    """Whether a delivery that failed with ``exc`` may succeed if tried again soon: not for a
    full disk, a read-only or forbidden destination, a path under a file (the same error
    again, after a wait)."""
    if isinstance(exc, DeliveryError):
        return exc.retry
    if _os_error(exc) is not None:
        return False
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, StorageError):
        return "failed verification" in str(exc) or (
            cause is not None and storage.is_transient(cause)
        )
    return not isinstance(exc, RetouchError)


def _what_failed(exc: BaseException, uri: str, final: str) -> str:
    """``exc`` as one sentence about ``final`` (never the temporary name written first)."""
    os_error = _os_error(exc)
    if os_error is not None:
        reason = os_error.strerror or str(os_error)
        return f"could not write {storage.redact(final)}: {reason}; {_HINTS[os_error.errno or 0]}"
    text = str(exc)
    if uri != final:
        text = text.replace(uri, final).replace(os.path.abspath(uri), final)
    return text.rstrip(". ")


def check_destination(dest: str) -> None:
    """Check that a delivery to ``dest`` can be written, before any image is processed.

    A local destination's folder is created (with its parents) and a small temporary file
    is written and removed there; an object store destination gets a temporary object,
    deleted at once. Nothing else is left behind.

    Raises:
        DeliveryError: what is wrong with ``dest`` and what to do (a path under a file, a
            read-only or full file system, no permission, storage not answering).
    """
    probe_name = f"{storage.TEMP_MARKER.lstrip('.')}check-{secrets.token_hex(4)}"
    local = storage.local_path(dest)
    shown = storage.redact(dest)
    if local is None:
        probe = storage.join(dest, "." + probe_name)
        try:
            storage.write_bytes(probe, b"")
            storage.remove(probe)
        except StorageError as exc:
            raise DeliveryError(
                f"{shown}: the destination cannot be written ({str(exc).rstrip('. ')}); "
                "nothing was processed",
                retry=worth_retrying(exc),
            ) from exc
        return
    path = os.path.abspath(local)
    existing = path
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == path else f"is under {existing}, which is a file"
        raise DeliveryError(f"{dest}: {where}, not a folder: choose another --out")
    probe = os.path.join(path, "." + probe_name)
    try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "xb") as fh:
            fh.write(b"retouch")
            fh.flush()
            os.fsync(fh.fileno())
        os.unlink(probe)
    except OSError as exc:
        with suppress(OSError):
            os.unlink(probe)
        hint = _HINTS.get(exc.errno or 0, "choose another --out")
        raise DeliveryError(
            f"{dest}: cannot write there ({exc.strerror or exc}); {hint}; nothing was processed"
        ) from None


class Outbox:
    """Where :func:`finalize` writes the destination's files, and what it is doing there.

    At a local destination each file is written under a temporary name beside its final one
    and all are renamed into place once every one is written: a failed delivery leaves the
    destination as it was. An object store has no rename: files are written to their final
    names (archives, then sidecars, the report, and manifest.json last), and :meth:`state`
    says which ones a failure left there.

    With ``notify``, a step (one write, one check) still unfinished after ``stall_s``
    seconds is reported, and again each time as long again: a destination that stalls is
    reported while it stalls, not only once the retries are spent.
    """

    def __init__(self, dest: str, notify: Callable[[str], None] | None, stall_s: float):
        self.dest = dest
        self.local = storage.local_path(dest) is not None
        self.staged: list[tuple[str, str, str]] = []  # (name, written to, final URI)
        self.planned: list[str] = []
        self.written: list[str] = []  # names at their final place
        self.lock = threading.Lock()
        self.doing: tuple[str, str, str] = ("writing to", dest, dest)  # (what, URI, final)
        self.since = time.monotonic()
        self.reported = 0
        self.notify = notify
        self.stall_s = stall_s
        self.stopped = threading.Event()
        if notify is not None:
            threading.Thread(target=self._watch, name="retouch-delivery-watch", daemon=True).start()

    def step(self, what: str, uri: str, final: str | None = None) -> None:
        """Say what is being done now (for stall reports and failure messages)."""
        with self.lock:
            self.doing = (what, uri, final or uri)
            self.since = time.monotonic()
            self.reported = 0

    def target(self, name: str) -> str:
        """The URI to write ``name`` to (also the current step)."""
        final = storage.join(self.dest, name)
        self.planned.append(name)
        written_to = final
        if self.local:
            written_to = storage.temp_name(os.path.abspath(final))
            self.staged.append((name, written_to, final))
        self.step("writing", written_to, final)
        return written_to

    def wrote(self, name: str) -> None:
        if not self.local:
            self.written.append(name)

    def commit(self) -> None:
        """Move the staged files into place (a local destination)."""
        self.step("moving the new files into", self.dest)
        for name, temporary, final in self.staged:
            os.replace(temporary, final)
            self.written.append(name)
        if self.staged:
            storage.fsync_dir(os.path.dirname(self.staged[0][2]))
        self.staged = []

    def discard(self) -> None:
        for _name, temporary, _final in self.staged:
            with suppress(OSError):
                os.unlink(temporary)
        self.staged = []

    def state(self) -> str:
        """What the destination holds after a failure, as a sentence."""
        shown = storage.redact(self.dest)
        if not self.written:
            return f"Nothing of this run was delivered: {shown} is as it was."
        missing = [n for n in self.planned if n not in self.written]
        return (
            f"{shown} now holds this run's {', '.join(self.written)}"
            + (f" but not its {', '.join(missing)}" if missing else "")
            + " (a manifest.json there that is not this run's describes an earlier delivery)."
        )

    def _watch(self) -> None:
        while not self.stopped.wait(min(1.0, self.stall_s / 4)):
            message = None
            with self.lock:
                elapsed = time.monotonic() - self.since
                if elapsed >= self.stall_s * (self.reported + 1):
                    self.reported += 1
                    what, _uri, final = self.doing
                    message = (
                        f"still {what} {storage.redact(final)} after {elapsed:.0f} s: the "
                        "destination is slow or not answering; retrying (Ctrl-C stops; the "
                        "same command resumes)"
                    )
            if message and self.notify is not None:
                with suppress(Exception):
                    self.notify(message)

    def close(self) -> None:
        self.stopped.set()

    def failure(self, exc: BaseException) -> DeliveryError:
        """``exc`` as a :class:`DeliveryError`: what failed, where, what the destination
        holds now (the staged files are removed first), what to do."""
        _what, uri, final = self.doing
        self.discard()
        message = _what_failed(exc, uri, final)
        return DeliveryError(f"{message}. {self.state()}", retry=worth_retrying(exc))
