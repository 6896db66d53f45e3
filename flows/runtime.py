"""How flow runs started from the command line (``retouch run``, ``regenerate``, the web
front door's batches) differ from served deployment runs."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

HEARTBEAT_VARS = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")

_ad_hoc = 0


def release_memory_after_run() -> None:
    """At the end of a flow run: give freed memory back to the system
    (:func:`retouch.lib.perf.release_memory`), which a long-running worker needs to stay flat
    batch after batch. Not in a command-line run (:func:`ad_hoc_run`): its process exits
    right after, and the full garbage collection costs ~0.3 s with the model stack loaded."""
    if _ad_hoc:
        return
    from retouch.lib import perf

    perf.release_memory()


@contextmanager
def ad_hoc_run() -> Iterator[None]:
    """Run a flow in this process without Prefect's flow-run heartbeat thread, unless the
    user set a heartbeat frequency.

    The heartbeat tells a server that a run's process is alive. A command-line run is watched
    by whoever started it (the terminal, or the web front door, which reports a vanished
    process itself), and the thread costs about a second at the end of every run: it sleeps in
    one-second steps and the flow engine joins it before the run counts as finished.
    Nor does the run give memory back at its end (:func:`release_memory_after_run`).
    """
    global _ad_hoc
    _ad_hoc += 1
    try:
        if any(os.environ.get(name) for name in HEARTBEAT_VARS):
            yield
            return
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield
    finally:
        _ad_hoc -= 1


# -- exits: signals, the embedded Prefect server, a quiet console -------------------------------


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM or SIGHUP (a service manager or container stopping
    the process): the run unwinds as for Ctrl-C, its exit handlers stop an embedded server.
    A BaseException, so that no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by signal {signum}")


TERMINATE_GRACE_S = 10.0
"""After SIGTERM, how long the process may take to unwind before it stops its embedded
Prefect server and exits at once (a task thread in a long model call cannot be interrupted)."""

_terminating = threading.Event()


def stop_embedded_servers() -> None:
    """Stop every Prefect server this process started (terminate, then kill after 5 s)."""
    module = sys.modules.get("prefect.server.api.server")
    servers = getattr(getattr(module, "SubprocessASGIServer", None), "_instances", {})
    for server in list(servers.values()):
        with suppress(Exception):
            server.stop()


def _force_exit(status: int) -> None:
    stop_embedded_servers()
    with suppress(Exception):
        sys.stderr.flush()
    os._exit(status)


def _on_signal(signum: int, _frame: Any) -> None:
    status = 128 + signum
    if _terminating.is_set():  # a second signal: stop now
        _force_exit(status)
    _terminating.set()

    def deadline() -> None:
        time.sleep(TERMINATE_GRACE_S)
        _force_exit(status)

    threading.Thread(target=deadline, name="retouch-terminate", daemon=True).start()
    raise Terminated(signum)


def handle_termination() -> None:
    """On SIGTERM and SIGHUP, raise :class:`Terminated` in the main thread (and exit within
    :data:`TERMINATE_GRACE_S` whatever happens), instead of dying at once and leaving an
    embedded Prefect server behind with no parent. Only from the main thread."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)


def server_lock_path() -> Path:
    """The lock file guarding the embedded Prefect server's database (in PREFECT_HOME)."""
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()) / "retouch-server.lock"


def start_embedded_server(timeout: int | None = None) -> Any:
    """Start the local Prefect server this process uses when PREFECT_API_URL is unset (the
    one Prefect would start at the first API call), holding :func:`server_lock_path` while
    it starts: two processes starting servers on one database at once race on its
    migration. Returns the server, or None when PREFECT_API_URL is set. It is stopped at
    exit, by :func:`stop_embedded_servers` after a signal."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer

    from retouch.lib.locks import Lock

    lock = Lock(server_lock_path(), what="starting the embedded Prefect server")
    lock.acquire(wait=True)
    try:
        server = SubprocessASGIServer()
        server.start(timeout=timeout)
    finally:
        lock.release()
    return server


class _NoTraceback(logging.Formatter):
    """Formats a record as ``inner`` does, without its traceback."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        bare = logging.makeLogRecord(record.__dict__)
        bare.exc_info = bare.exc_text = bare.stack_info = None
        return self.inner.format(bare)


def _said_elsewhere(record: logging.LogRecord) -> bool:
    """A failure the command reports itself, in one line: a retouch error (the command's
    error line, or the failed-images table), and the failed states that follow it."""
    from retouch.lib.errors import RetouchError

    if record.levelno < logging.ERROR:
        return False
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, RetouchError):
        return True
    return record.getMessage().startswith("Finished in state Failed")


class _Tidy(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _said_elsewhere(record)


def tidy_console() -> None:
    """Prefect's console output without tracebacks (``-v`` shows them), and without its
    lines about failures the command reports itself. Only the terminal's handler changes:
    the logs sent to the Prefect server keep every traceback."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not getattr(
                handler, "_retouch_tidy", False
            ):
                handler.setFormatter(_NoTraceback(handler.formatter or logging.Formatter()))
                handler.addFilter(_Tidy())
                handler._retouch_tidy = True  # type: ignore[attr-defined]
