"""A Prefect server in the background, shared by the ``retouch`` commands of one user.

Without ``PREFECT_API_URL`` a command needs a local Prefect server, and starting one costs
5-10 s (importing the server, migrating its database), more than a small run's own work. So
the first command that needs one starts it detached (its own session, parented to init: it
outlives the command, and a signal to the command or its process group does not reach it),
and later commands (``retouch run``, ``retouch web``) find it and use it
(:func:`local_api`). It stops itself after ``RETOUCH_SERVER_IDLE_S`` seconds (900) in which it
answered no request, held no connection, had no command using it and no flow run running.
``RETOUCH_SERVER_IDLE_S=0`` keeps the former way: a server per command, stopped at its exit.

Where it is: a small state file (:data:`STATE_NAME`) next to the database the embedded server
would use (``PREFECT_HOME`` with the default SQLite database), written atomically, read and
replaced under :func:`retouch.flows.runtime.server_lock_path` (so two commands starting at
once end with one server, and a starting server never migrates the database beside another).
A record is used only when its process is alive, is this module's server, and answers
``/api/health`` with its own pid (:data:`PID_HEADER`); otherwise it is replaced. A command
using the server holds a lease (an ``flock`` on a file in :data:`LEASES_NAME`, released when
the process ends however it ends), which the server counts as use.

The server's API asks for a password (``PREFECT_SERVER_API_AUTH_STRING``, made at its
start, kept in the state file, which only its user can read): it outlives the command, and
other users of the machine must not use it meanwhile. :func:`local_api` passes it on as
``PREFECT_API_AUTH_STRING``.

The server process itself is :mod:`retouch.cli.background_server` (an entry point: it runs
uvicorn); this module is what the commands use, and imports Prefect only when called.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retouch.lib.errors import RetouchError

STATE_NAME = "retouch-server.json"
"""The state file: where the background server listens, its pid, when it started."""
LEASES_NAME = "retouch-server-leases"
"""The folder of the commands' leases (one locked file per process using the server)."""
LOG_NAME = "retouch-server.log"
"""The server's own output (replaced at each start)."""
PID_HEADER = "x-retouch-server"
"""Response header carrying the server's pid: a port answering without it is not ours."""
WATCHDOG_HEADER = "x-retouch-watchdog"
"""Request header of the server's own queries, which are not use."""
STATUS_PATH = "/retouch/status"
"""The server's status (pid, idle time, connections, leases) as JSON, for its password;
not counted as use."""
MODULE = "retouch.cli.background_server"
"""The server process's module (``python -m MODULE serve ...``)."""
RUNNING_RUN_WINDOW_S = 3600.0
"""A flow run in state Running counts as use only this long after its start: one left
Running by a process that was killed (nothing marks it crashed without heartbeats) would
otherwise keep the server for ever. A command holds a lease for its whole run anyway."""
HEALTH_TIMEOUT_S = 3.0
DEFAULT_START_TIMEOUT_S = 120.0


class ServerError(RetouchError):
    """The background Prefect server could not be started, reached or stopped."""


@dataclass(frozen=True)
class Place:
    """Where the background server of the current Prefect settings keeps its state."""

    folder: Path
    """Next to the database (``PREFECT_HOME`` when the database is not a local SQLite file)."""
    database: str
    """A digest of the database URL (the URL itself may carry a password)."""

    @property
    def state(self) -> Path:
        return self.folder / STATE_NAME

    @property
    def leases(self) -> Path:
        return self.folder / LEASES_NAME

    @property
    def log(self) -> Path:
        return self.folder / LOG_NAME


def place() -> Place:
    """The state folder for the current Prefect settings: the folder of the SQLite database
    the embedded server would use, else ``PREFECT_HOME``."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    url = settings.server.database.connection_url
    url_text = url.get_secret_value() if url is not None else ""
    folder = Path(settings.home).expanduser()
    if url_text.startswith("sqlite") and ":///" in url_text:
        path = url_text.split(":///", 1)[1].split("?", 1)[0]
        if path and path != ":memory:":
            folder = Path(path).expanduser().resolve().parent
    return Place(folder=folder, database=hashlib.sha256(url_text.encode()).hexdigest()[:16])


def prefect_version() -> str:
    import prefect

    return str(prefect.__version__)


# -- records -----------------------------------------------------------------------------------


def read_record(where: Place) -> dict[str, Any] | None:
    """The state file's record, or None when there is none or it cannot be read."""
    try:
        value = json.loads(where.state.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and isinstance(value.get("pid"), int) else None


def write_record(where: Place, record: dict[str, Any]) -> None:
    where.folder.mkdir(parents=True, exist_ok=True)
    temp = where.state.with_name(f".{STATE_NAME}.{os.getpid()}.tmp")
    # Only this user may read it: it holds the server's password.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(record, indent=1))
    os.replace(temp, where.state)


def remove_record(where: Place, pid: int) -> None:
    """Remove the record if it still names ``pid`` (another server may have replaced it)."""
    record = read_record(where)
    if record is not None and record["pid"] == pid:
        with suppress(OSError):
            where.state.unlink()


def server_lock(where: Place, what: str) -> Any:
    from retouch.flows.runtime import server_lock_path
    from retouch.lib.locks import Lock

    return Lock(server_lock_path(), what=what)


# -- processes ---------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def is_server_process(pid: int) -> bool:
    """Whether ``pid`` is alive and runs this module's server (not a recycled pid)."""
    if pid <= 0 or not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return MODULE.encode() in cmdline and b"serve" in cmdline


def _terminate(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM ``pid`` (a server stops in order: its record goes, its database is closed),
    SIGKILL after ``grace_s``; returns once it is gone."""
    with suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    if _alive(pid):
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < end:
            time.sleep(0.05)


def _http(
    url: str, timeout: float, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET (or POST ``data`` as JSON) ``url`` without any proxy: the server is on loopback."""
    request = urllib.request.Request(
        url, data=data, method="POST" if data is not None else "GET", headers=headers or {}
    )
    if data is not None:
        request.add_header("content-type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, b""


def healthy(url: str, pid: int, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    """Whether the server at ``url`` (an API URL, ``.../api``) answers its health check as the
    server ``pid`` (a port reused by another program, or another server, does not)."""
    try:
        status, headers, _ = _http(url.rstrip("/") + "/health", timeout)
    except (OSError, ValueError):
        return False
    return status == 200 and headers.get(PID_HEADER) == str(pid)


def server_status(url: str, auth: str, timeout: float = HEALTH_TIMEOUT_S) -> dict[str, Any] | None:
    """What the server at ``url`` says of itself (:data:`STATUS_PATH`), None if it does not."""
    base = url.rstrip("/").removesuffix("/api")
    try:
        status, _, body = _http(base + STATUS_PATH, timeout, headers=auth_header(auth))
        value = json.loads(body) if status == 200 else None
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# -- leases ------------------------------------------------------------------------------------


class Lease:
    """This process uses the background server: an ``flock`` on ``LEASES/<pid>.lease``, held
    until :meth:`release` or the end of the process (however it ends)."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{os.getpid()}.lease"
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # The server removes the files of ended processes: if it removed this one between
            # our open and our lock, the lock is on a file nobody sees; take a new one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except OSError:
                same = False
            if same:
                self._fd: int | None = fd
                return
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            with suppress(OSError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None


def held_leases(folder: Path) -> list[int]:
    """The pids whose lease in ``folder`` is held; removes the files of ended processes."""
    held: list[int] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return held
    for path in entries:
        if path.suffix != ".lease":
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with suppress(ValueError):
                held.append(int(path.stem))
        else:
            with suppress(OSError):
                path.unlink()
        finally:
            os.close(fd)
    return held


_lease: Lease | None = None


def _take_lease(where: Place) -> None:
    global _lease
    if _lease is None:
        _lease = Lease(where.leases)


def release_lease() -> None:
    """Stop counting as a user of the background server (the end of the process does it too)."""
    global _lease
    if _lease is not None:
        _lease.release()
        _lease = None


# -- the client side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    url: str
    """The API URL (``http://127.0.0.1:PORT/api``)."""
    pid: int
    started: bool
    """Whether this call started the server (False: it was running)."""
    auth: str = ""
    """The server's password (``PREFECT_API_AUTH_STRING`` for its clients)."""


def _spawn(where: Place, idle_s: float) -> int:
    """Start the server detached; returns its pid (the process that forks it exits at once)."""
    import secrets

    from prefect.settings import get_current_settings

    env = {
        **os.environ,
        **get_current_settings().to_environment_variables(exclude_unset=True),
        # as Prefect runs its embedded server: no UI, the ephemeral set of services
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        # It outlives the command: other users of the machine must not use its API meanwhile.
        "PREFECT_SERVER_API_AUTH_STRING": secrets.token_urlsafe(24),
    }
    for name in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT__FLOW_RUN_ID"):
        env.pop(name, None)
    where.folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            MODULE,
            "serve",
            "--folder",
            str(where.folder),
            "--idle-s",
            repr(float(idle_s)),
            "--detach",
        ],
        env=env,
        cwd=where.folder,  # not the user's folder: a long-lived process should not hold it
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    proc.wait()
    try:
        return int(line)
    except ValueError:
        err = proc.stderr.read().decode(errors="replace").strip()
        raise ServerError(
            f"could not start a background Prefect server (exit {proc.returncode}): "
            f"{err[-600:] or 'no output'}"
        ) from None
    finally:
        proc.stdout.close()
        proc.stderr.close()


def _log_tail(where: Place, lines: int = 8) -> str:
    try:
        text = where.log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _usable(record: dict[str, Any], where: Place) -> bool:
    return (
        record.get("status") == "ready"
        and record.get("database") == where.database
        and record.get("prefect") == prefect_version()
        and isinstance(record.get("url"), str)
        and is_server_process(record["pid"])
    )


def connect(
    *,
    idle_s: float,
    timeout: float | None = None,
    announce: Callable[[str], Any] | None = None,
    where: Place | None = None,
) -> Connection:
    """The background server of the current Prefect settings, started when there is none
    (or its record is stale: its process ended, is not ours, does not answer as itself, or
    runs another Prefect version or database). This process holds a lease on it until it
    ends (:func:`release_lease`).

    Args:
        idle_s: for a server started here, the seconds without use after which it stops.
        timeout: how long to wait for a starting server to answer (default 120 s).
        announce: called with one line when this call starts a server.

    Raises:
        ServerError: the server did not start or answer within ``timeout``; the message
            quotes the end of its log file.
    """
    where = where or place()
    timeout = DEFAULT_START_TIMEOUT_S if timeout is None else timeout
    try:
        where.folder.mkdir(parents=True, exist_ok=True)
        _take_lease(where)  # before looking: a server that answers us cannot stop as idle
    except OSError as exc:
        raise ServerError(
            f"{where.folder}: cannot keep the background Prefect server's state there "
            f"({exc.strerror or exc}); set PREFECT_HOME (or the database URL) to a folder you can write"
        ) from None
    deadline = time.monotonic() + timeout
    while True:
        lock = server_lock(where, "starting the background Prefect server")
        lock.acquire(wait=True)
        try:
            record = read_record(where)
            pid, started = _look(record, where)
            if record is not None and pid == record["pid"] and record.get("status") == "ready":
                return Connection(record["url"], pid, started=False, auth=record.get("auth", ""))
            if pid == 0:
                pid = _spawn(where, idle_s)
                started = True
                write_record(
                    where,
                    {
                        "pid": pid,
                        "status": "starting",
                        "started": time.time(),
                        "idle_s": idle_s,
                        "database": where.database,
                        "prefect": prefect_version(),
                    },
                )
                if announce is not None:
                    announce(_started_line(idle_s))
        finally:
            lock.release()
        found = _wait_ready(where, pid, deadline)
        if found is not None:
            return Connection(found["url"], pid, started=started, auth=found.get("auth", ""))
        if time.monotonic() >= deadline:
            if _alive(pid) and started:
                _terminate(pid)
            tail = _log_tail(where)
            raise ServerError(
                f"the background Prefect server (pid {pid}) did not answer within "
                f"{timeout:g} s; its log {where.log}: {tail or 'empty'}"
            )
        now = read_record(where)
        if started and not _alive(pid) and (now is None or now["pid"] == pid):
            tail = _log_tail(where)
            raise ServerError(
                f"the background Prefect server stopped while starting; its log {where.log}: "
                f"{tail or 'empty'}"
            )
        # the server waited for went away while starting, or gave way to another one
        # (recorded meanwhile): look again


def _look(record: dict[str, Any] | None, where: Place) -> tuple[int, bool]:
    """Under the lock: the pid of the server to use or wait for (0: start one)."""
    if record is None:
        return 0, False
    pid = record["pid"]
    if record.get("status") == "starting":
        age = time.time() - float(record.get("started", 0))
        if is_server_process(pid) and age < 3 * DEFAULT_START_TIMEOUT_S:
            return pid, False
        if is_server_process(pid):
            _terminate(pid)
        return 0, False
    if _usable(record, where):
        # twice: a loaded machine can be slow to answer once
        if healthy(record["url"], pid) or healthy(record["url"], pid, 2 * HEALTH_TIMEOUT_S):
            return pid, False
    if is_server_process(pid):  # alive but unusable: hung, or another version or database
        _terminate(pid)
    return 0, False


def _wait_ready(where: Place, pid: int, deadline: float) -> dict[str, Any] | None:
    """Wait (without the lock) for server ``pid`` to record itself ready and answer; its
    record, or None when it ended or the deadline passed."""
    while time.monotonic() < deadline:
        record = read_record(where)
        if record is not None and record["pid"] == pid and record.get("status") == "ready":
            if healthy(record["url"], pid):
                return record
        elif record is None or record["pid"] != pid:  # it gave up (another one runs) or ended
            return None
        if not _alive(pid):
            return None
        time.sleep(0.05)
    return None


def _started_line(idle_s: float) -> str:
    return (
        "starting a background Prefect server for this and later commands (it stops after "
        f"{_duration(idle_s)} unused; `retouch server stop` stops it now)…"
    )


def _duration(seconds: float) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def local_api(
    *,
    timeout: float | None = None,
    announce: Callable[[str], Any] | None = None,
    embedded_line: str | None = None,
) -> tuple[str | None, Any]:
    """Make this process use a local Prefect server unless ``PREFECT_API_URL`` is set: the
    shared background server (:func:`connect`; ``PREFECT_API_URL`` is set for this process
    and the processes it starts), or, with ``RETOUCH_SERVER_IDLE_S=0``, an embedded server of
    its own, stopped at exit (:func:`retouch.flows.runtime.start_embedded_server`).

    ``announce`` is called with one line when a background server is started here, or with
    ``embedded_line`` (when given) before an embedded one starts. Returns the API URL (None
    when ``PREFECT_API_URL`` was already set) and the embedded server to stop, if one was
    started.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None, None
    from retouch.lib.settings import get_settings

    idle_s = get_settings().server_idle_s
    if idle_s <= 0:
        from retouch.flows.runtime import start_embedded_server

        if announce is not None and embedded_line:
            announce(embedded_line)
        server = start_embedded_server(timeout=None if timeout is None else int(timeout))
        return server.api_url, server
    found = connect(idle_s=idle_s, timeout=timeout, announce=announce)
    os.environ["PREFECT_API_URL"] = found.url
    os.environ["PREFECT_API_AUTH_STRING"] = found.auth
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()
    return found.url, None


def stop(where: Place | None = None, *, force: bool = False) -> dict[str, Any] | None:
    """Stop the background server; returns its record (None when none was running).

    Raises:
        ServerError: commands are using it (their pids are named) and ``force`` is not set.
    """
    where = where or place()
    lock = server_lock(where, "stopping the background Prefect server")
    lock.acquire(wait=True)
    try:
        record = read_record(where)
        if record is None or not is_server_process(record["pid"]):
            with suppress(OSError):
                where.state.unlink()
            return None
        users = [pid for pid in held_leases(where.leases) if pid != os.getpid()]
        if users and not force:
            raise ServerError(
                f"the background Prefect server (pid {record['pid']}) is in use by "
                f"{len(users)} command(s) (pid {', '.join(map(str, sorted(users)))}): wait for "
                "them to finish, or give --force (they then fail)"
            )
        _terminate(record["pid"])
        remove_record(where, record["pid"])
        return record
    finally:
        lock.release()


def auth_header(auth: str) -> dict[str, str]:
    """The Authorization header of a request to the server with password ``auth``."""
    import base64

    return {"authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
