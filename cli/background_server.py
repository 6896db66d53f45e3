"""The background Prefect server's own process: ``python -m retouch.cli.background_server
serve --folder F --idle-s N [--detach]``, started by :func:`retouch.flows.background.connect`.

Prefect's server application as the embedded server runs it (no UI, the ephemeral set of
services), under uvicorn on a free loopback port, behind :class:`IdleWatch` (a small ASGI
layer that timestamps requests, adds the pid to every answer and serves ``/retouch/status``),
with a watchdog thread that stops it once unused for N seconds. It records itself ready in
the state file, and removes its record when it stops.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from retouch.flows.background import (
    LOG_NAME,
    PID_HEADER,
    RUNNING_RUN_WINDOW_S,
    STATUS_PATH,
    WATCHDOG_HEADER,
    Place,
    auth_header,
    held_leases,
    is_server_process,
    place,
    prefect_version,
    read_record,
    remove_record,
    server_lock,
    write_record,
)


class IdleWatch:
    """ASGI layer around Prefect's app: when it was last used, how many requests and
    connections are open, its pid on every HTTP answer, and :data:`STATUS_PATH`."""

    def __init__(self, app: Any, *, idle_limit_s: float, leases: Path, auth: str):
        self.app = app
        self._auth = auth_header(auth)["authorization"].encode()
        self.idle_limit_s = idle_limit_s
        self.leases = leases
        self.open = 0
        self.last = time.monotonic()
        self.started = time.time()
        self.url = ""
        self._pid = str(os.getpid()).encode()

    def touch(self) -> None:
        self.last = time.monotonic()

    def idle_for(self) -> float:
        return 0.0 if self.open else time.monotonic() - self.last

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if kind == "http" and scope.get("path") == STATUS_PATH:
            given = dict(scope.get("headers", [])).get(b"authorization", b"")
            await self._status(send, hmac.compare_digest(given, self._auth))
            return
        ours = any(name == WATCHDOG_HEADER.encode() for name, _ in scope.get("headers", []))

        async def send_with_pid(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (PID_HEADER.encode(), self._pid)]
                message = {**message, "headers": headers}
            await send(message)

        if not ours:
            self.open += 1
            self.touch()
        try:
            await self.app(scope, receive, send_with_pid if kind == "http" else send)
        finally:
            if not ours:
                self.open -= 1
                self.touch()

    async def _status(self, send: Any, allowed: bool) -> None:
        headers = [(b"content-type", b"application/json"), (PID_HEADER.encode(), self._pid)]
        if not allowed:
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": b'{"detail": "Unauthorized"}'})
            return
        body = json.dumps(
            {
                "pid": os.getpid(),
                "url": self.url,
                "started": self.started,
                "idle_s": round(self.idle_for(), 1),
                "idle_limit_s": self.idle_limit_s,
                "open": self.open,
                "users": held_leases(self.leases),
            }
        ).encode()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _running_flow_runs(url: str, auth: str) -> int:
    """Flow runs Running or Pending that started within :data:`RUNNING_RUN_WINDOW_S`."""
    from datetime import UTC, datetime, timedelta

    since = datetime.now(UTC) - timedelta(seconds=RUNNING_RUN_WINDOW_S)
    query = {
        "flow_runs": {
            "state": {"type": {"any_": ["RUNNING", "PENDING"]}},
            "start_time": {"after_": since.isoformat()},
        }
    }
    request = urllib.request.Request(
        url.rstrip("/") + "/flow_runs/count",
        data=json.dumps(query).encode(),
        method="POST",
        headers={"content-type": "application/json", WATCHDOG_HEADER: "1", **auth_header(auth)},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return int(json.loads(response.read()))
    except (OSError, ValueError):
        return 0


def _serve(folder: Path, idle_s: float) -> int:
    import asyncio
    import socket

    import uvicorn
    from prefect.server.api.server import create_app

    where = place()
    if where.folder != folder:  # the settings the command passed on do not say the same
        print(f"state folder {folder} is not the database's ({where.folder})", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # a free port, held from now on: no race for it
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    auth = os.environ.get("PREFECT_SERVER_API_AUTH_STRING", "")
    watch = IdleWatch(create_app(), idle_limit_s=idle_s, leases=where.leases, auth=auth)
    watch.url = url
    config = uvicorn.Config(watch, log_level="error", lifespan="on", timeout_graceful_shutdown=5)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            # The lock while the database is migrated (as the embedded server holds it), and
            # until the record says ready: a command waiting for the lock then finds us.
            lock = server_lock(where, "starting the background Prefect server")
            await asyncio.to_thread(lock.acquire, wait=True)
            try:
                await super().startup(sockets=sockets)
                record = read_record(where)
                if (
                    record is not None
                    and record["pid"] != os.getpid()
                    and is_server_process(record["pid"])
                ):
                    # another command started one meanwhile (ours was orphaned): it wins
                    print(f"server {record['pid']} is recorded: not serving", file=sys.stderr)
                    self.should_exit = True
                    return
                write_record(
                    where,
                    {
                        "pid": os.getpid(),
                        "status": "ready",
                        "url": url,
                        "started": watch.started,
                        "idle_s": idle_s,
                        "database": where.database,
                        "prefect": prefect_version(),
                        "auth": auth,
                    },
                )
            finally:
                lock.release()
            watch.touch()
            threading.Thread(
                target=_watchdog, args=(self, watch, where, url), name="retouch-idle", daemon=True
            ).start()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # Stopped by a signal: the record goes first, so that no command picks a server
            # on its way out. Whoever sent the signal may hold the lock while it waits for us
            # (`retouch server stop`, a command replacing a stale server): it then deals with
            # the record itself, so we try for a moment only.
            lock = server_lock(where, "stopping the background Prefect server")
            for _ in range(40):
                if lock.acquire():
                    try:
                        remove_record(where, os.getpid())
                    finally:
                        lock.release()
                    break
                await asyncio.sleep(0.05)
            await super().shutdown(sockets=sockets)

    Server(config).run(sockets=[sock])
    return 0


def _watchdog(server: Any, watch: IdleWatch, where: Place, url: str) -> None:
    """Stop ``server`` once it has been unused for ``watch.idle_limit_s`` seconds."""
    limit = watch.idle_limit_s
    step = min(max(limit / 10, 0.2), 5.0)
    auth = os.environ.get("PREFECT_SERVER_API_AUTH_STRING", "")
    while not server.should_exit:
        time.sleep(step)
        # In use: the idle time counts from the end of that use.
        if held_leases(where.leases):
            watch.touch()
            continue
        if watch.idle_for() < limit:
            continue
        if _running_flow_runs(url, auth):
            watch.touch()
            continue
        # Decided under the lock, with the record removed there: a command that found the
        # record (its health check counts as use) keeps the server; one that comes after
        # finds no record and starts another.
        lock = server_lock(where, "stopping the background Prefect server")
        lock.acquire(wait=True)
        try:
            if watch.idle_for() >= limit and not held_leases(where.leases):
                remove_record(where, os.getpid())
                print(f"unused for {watch.idle_for():.0f} s: stopping", file=sys.stderr)
                server.should_exit = True
        finally:
            lock.release()


def _detach(log: Path) -> None:
    """Fork; the parent prints the child's pid and exits. The child leaves the session and
    writes its output to ``log``."""
    pid = os.fork()
    if pid:
        print(pid, flush=True)
        os._exit(0)
    os.setsid()
    log.parent.mkdir(parents=True, exist_ok=True)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(null)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retouch.cli.background_server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the background Prefect server")
    serve.add_argument("--folder", type=Path, required=True, help="its state folder")
    serve.add_argument("--idle-s", type=float, required=True, help="stop after this long unused")
    serve.add_argument("--detach", action="store_true", help="fork, print the pid, leave")
    args = parser.parse_args(argv)
    if args.detach:
        _detach(args.folder / LOG_NAME)
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}", file=sys.stderr, flush=True)
    return _serve(args.folder, args.idle_s)


if __name__ == "__main__":
    sys.exit(main())
