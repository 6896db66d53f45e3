"""How flow runs started from the command line (``retouch run``, ``regenerate``, the web
front door's batches) differ from served deployment runs."""

from __future__ import annotations

import atexit
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
"""After SIGTERM or SIGHUP, how long the process may take to unwind (the chunk in progress
may finish, the flow run's end is recorded) before it stops its child processes and exits at
once with 128 + the signal number: a task thread in a long model call cannot be interrupted,
and a crash report to a Prefect server that went down with the same signal retries for
minutes. What was not finished is recomputed by the next run (results are kept per image)."""

_grace_s = TERMINATE_GRACE_S
_terminating = threading.Event()  # our handler saw a signal (a second one exits at once)
_deadline_lock = threading.Lock()
_deadline: threading.Thread | None = None
_watching = False
_stop_hint = ""


def set_termination_grace(seconds: float | None = None, *, hint: str | None = None) -> None:
    """How long this process may take to stop after SIGTERM or SIGHUP (default
    :data:`TERMINATE_GRACE_S`), for a command whose orderly stop takes longer: ``retouch web``
    waits for its batches' processes, ``retouch serve`` hands its runs back. ``hint``: what
    the user can do next, said when the deadline stops the process."""
    global _grace_s, _stop_hint
    if seconds is not None:
        _grace_s = seconds
    if hint is not None:
        _stop_hint = hint


def stop_embedded_servers() -> None:
    """Stop every Prefect server this process started (terminate, then kill after 5 s)."""
    module = sys.modules.get("prefect.server.api.server")
    servers = getattr(getattr(module, "SubprocessASGIServer", None), "_instances", {})
    for server in list(servers.values()):
        with suppress(Exception):
            server.stop()


def _proc_stat(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def descendants(pid: int | None = None) -> list[int]:
    """The live processes below ``pid`` (default: this one), parents before their children,
    from ``/proc`` (empty where there is none). Whatever session or process group they put
    themselves in (a web batch's process, the embedded server), they are still below."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields is not None and fields[0] not in ("Z", "X"):
                children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def _alive(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def stop_children(grace_s: float = 3.0) -> list[int]:
    """Stop every process below this one: SIGTERM, then SIGKILL for those still there after
    ``grace_s``. The tree is read once, before any signal (a killed parent's children would
    be handed to init and lost from view). Returns the pids that had to be killed."""
    tree = descendants()
    for pid in tree:
        with suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while time.monotonic() < end and any(_alive(pid) for pid in tree):
        time.sleep(0.05)
    killed = [pid for pid in tree if _alive(pid)]
    for pid in killed:
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return killed


def _force_exit(status: int) -> None:
    # The polite stop logs through Prefect; a thread of its own, so that a logging lock held
    # by a stuck thread cannot keep this process alive. Then whatever is left below us goes.
    polite = threading.Thread(target=stop_embedded_servers, name="retouch-stop", daemon=True)
    polite.start()
    polite.join(6.0)
    with suppress(Exception):
        stop_children()
    with suppress(Exception):
        sys.stderr.flush()
    os._exit(status)


def _start_deadline(signum: int) -> None:
    """Exit with 128 + ``signum`` at the latest :data:`_grace_s` from now (once)."""
    global _deadline
    with _deadline_lock:
        if _deadline is not None:
            return

        def deadline() -> None:
            time.sleep(_grace_s)
            with suppress(Exception):
                name = signal.Signals(signum).name
                note = f"retouch: stopped by {name} (not finished within {_grace_s:g} s)"
                os.write(
                    2, ("\n" + note + (f"; {_stop_hint}" if _stop_hint else "") + "\n").encode()
                )
            _force_exit(128 + signum)

        _deadline = threading.Thread(target=deadline, name="retouch-terminate", daemon=True)
        _deadline.start()


def _on_signal(signum: int, _frame: Any) -> None:
    if _terminating.is_set():  # a second signal: stop now
        _force_exit(128 + signum)
    _terminating.set()
    _start_deadline(signum)
    raise Terminated(signum)


def _watch_wakeup(fd: int) -> None:
    """Start the deadline on every SIGTERM or SIGHUP, whoever handles it: during a flow run
    Prefect's engine replaces our handler with its own (which reports the crash, retrying
    while the server is unreachable, before it hands the signal back to ours)."""
    while True:
        try:
            data = os.read(fd, 512)
        except InterruptedError:
            continue
        except OSError:
            return
        if not data:
            return
        for signum in data:
            if signum in (signal.SIGTERM, signal.SIGHUP):
                _start_deadline(signum)


def _stop_children_after_signal() -> None:
    if _deadline is not None:  # a termination signal arrived: nothing of ours may outlive us
        stop_children()


def handle_termination() -> None:
    """On SIGTERM and SIGHUP, raise :class:`Terminated` in the main thread instead of dying at
    once and leaving an embedded Prefect server behind with no parent; and whoever handles
    the signal, exit within the grace (:func:`set_termination_grace`) with every child
    process stopped. Only from the main thread.

    The deadline is started from Python's signal wakeup file descriptor, which the
    interpreter writes for every caught signal, whichever Python handler is installed."""
    global _watching
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    if _watching:
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (ValueError, OSError):  # not the main thread: the handler alone
        os.close(read_fd)
        os.close(write_fd)
        return
    _watching = True
    threading.Thread(
        target=_watch_wakeup, args=(read_fd,), name="retouch-signals", daemon=True
    ).start()
    atexit.register(_stop_children_after_signal)


def server_lock_path() -> Path:
    """The lock file guarding the local Prefect server's database while a server starts on
    it, and the background server's state file (:mod:`retouch.flows.background`): next to
    the SQLite database (``PREFECT_HOME`` by default), else in ``PREFECT_HOME``."""
    from retouch.flows.background import place

    return place().folder / "retouch-server.lock"


def start_embedded_server(timeout: int | None = None) -> Any:
    """Start the local Prefect server this process uses when PREFECT_API_URL is unset (the
    one Prefect would start at the first API call), holding :func:`server_lock_path` while
    it starts: two processes starting servers on one database at once race on its
    migration. Returns the server, or None when PREFECT_API_URL is set. It is stopped at
    exit, by :func:`stop_embedded_servers` after a signal.

    Commands use it only with ``RETOUCH_SERVER_IDLE_S=0``; otherwise they share a server in
    the background (:func:`retouch.flows.background.local_api`)."""
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


def _server_gone_after_signal(record: logging.LogRecord) -> bool:
    """After a termination signal, Prefect's complaints that it cannot send its events (the
    server may have been stopped by the same signal): a whole event per line, nothing to act
    on; the command says how it stopped."""
    return _deadline is not None and record.name.startswith(
        ("prefect.events", "prefect._internal.concurrency")
    )


class _Tidy(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_said_elsewhere(record) or _server_gone_after_signal(record))


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


# -- serving: `retouch serve` stopped by a service manager ------------------------------------

HANDED_BACK = (
    "handed back: the `retouch serve` running it was stopped ({signal}) before it finished; it "
    "runs again when a `retouch serve` is serving, and the images finished before the stop "
    "are reused"
)
"""The message of the AwaitingRetry state a served run in progress gets on a stop."""


def flow_runs_below(pid: int | None = None) -> dict[str, int]:
    """The flow runs processes below ``pid`` (default: this one) run, by flow run id: Prefect's
    runner starts each as ``python -m prefect.engine`` with ``PREFECT__FLOW_RUN_ID`` set."""
    found: dict[str, int] = {}
    for child in descendants(pid):
        try:
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"PREFECT__FLOW_RUN_ID="):
                found.setdefault(item.split(b"=", 1)[1].decode(), child)
    return found


def serve(*deployments: Any, announce: Any = print) -> None:
    """Serve ``deployments`` from this process (as ``prefect.serve``) until SIGTERM, SIGHUP or
    Ctrl-C, then stop in order: no new run is taken, each run in progress is stopped (its
    flow-run process gets SIGTERM; the chunk it is in may finish within
    :data:`TERMINATE_GRACE_S`, then the process and everything below it is killed) and handed
    back: its state becomes AwaitingRetry (:data:`HANDED_BACK`), so the next ``retouch
    serve`` runs it again, reusing the images finished before the stop (results are kept per
    image). Raises :class:`Terminated` with the signal, for the exit status 128 + signal.

    Prefect's own stop on SIGTERM (3.8) kills such a run's process and leaves the run
    Running for ever."""
    import asyncio

    # The hand-back's own steps are bounded; the process deadline comes after them.
    set_termination_grace(3 * TERMINATE_GRACE_S)
    signum = asyncio.run(_serve(deployments, announce))
    if signum is not None:
        raise Terminated(signum)


async def _serve(deployments: tuple[Any, ...], announce: Any) -> int | None:
    import asyncio

    from prefect.runner import Runner

    runner = Runner(pause_on_shutdown=True)
    for deployment in deployments:
        await runner.aadd_deployment(deployment)
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[int] = loop.create_future()

    def stop_with(signum: int) -> None:
        if not stop.done():
            stop.set_result(signum)

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.done():  # a second signal: stop now
            _force_exit(128 + signum)
        loop.call_soon_threadsafe(stop_with, signum)

    started: asyncio.Future[None] = asyncio.ensure_future(runner.start())
    await asyncio.sleep(0)  # start() sets Prefect's SIGTERM handler before its first await
    signals = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    previous = {signum: signal.signal(signum, on_signal) for signum in signals}
    if announce is not None:
        names = ", ".join(f"{d.flow_name}/{d.name}" for d in deployments)
        announce(f"serving {names}; Ctrl-C or SIGTERM stops, handing back the runs in progress")
    try:
        waiters: list[asyncio.Future[Any]] = [started, stop]
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if started in done:  # the runner ended on its own (an error): say so
            started.result()
            return None
        signum = stop.result()
        await _hand_back(runner, started, signum, announce)
        return signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


async def _hand_back(runner: Any, started: Any, signum: int, announce: Any) -> None:
    import asyncio

    name = signal.Signals(signum).name
    in_flight = flow_runs_below()
    if announce is not None:
        announce(
            f"stopping ({name}): no new runs; handing back {len(in_flight)} run(s) in progress"
        )
    for pid in in_flight.values():  # the run records its crash; its chunk may finish
        with suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + TERMINATE_GRACE_S
    while time.monotonic() < end and any(_alive(p) for p in in_flight.values()):
        await asyncio.sleep(0.1)
    # The runner stops polling and pauses the served deployments' schedules; what is left of
    # the runs' processes (a model call that did not return, a run that started meanwhile)
    # is killed, and handed back too.
    started.cancel()
    with suppress(BaseException):
        await asyncio.wait_for(started, TERMINATE_GRACE_S)
    in_flight |= flow_runs_below()
    stop_children()
    await _reschedule(list(in_flight), name)


async def _reschedule(flow_run_ids: list[str], name: str) -> None:
    """AwaitingRetry, now, for each of ``flow_run_ids`` that did not complete and was not
    cancelled (someone's cancel wins over the hand-back)."""
    from prefect import get_client
    from prefect.states import AwaitingRetry

    async with get_client() as client:
        for ident in flow_run_ids:
            try:
                run = await client.read_flow_run(ident)  # type: ignore[arg-type]
                if run.state is not None and (
                    run.state.is_completed()
                    or run.state.is_cancelled()
                    or run.state.is_cancelling()
                ):
                    continue
                await client.set_flow_run_state(
                    ident,  # type: ignore[arg-type]
                    AwaitingRetry(message=HANDED_BACK.format(signal=name)),
                    force=True,
                )
            except Exception as exc:  # noqa: BLE001 (the others are still handed back)
                logging.getLogger("retouch.serve").warning(
                    "could not hand back flow run %s: %s", ident, exc
                )
