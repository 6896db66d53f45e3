"""A fault-injecting HTTP proxy for storage tests, put in front of the moto S3 server.

:class:`FaultProxy` listens on 127.0.0.1 and forwards every request to ``target`` (keeping
the ``Host`` header, so signed requests stay valid). It can be told to fail for a while:

- ``mode="503"``: answer ``503 ServiceUnavailable`` with an S3-style XML error body;
- ``mode="reset"``: drop the connection without an answer (the client sees a reset);
- ``mode="hang"``: accept the request and never answer (until :meth:`heal` or :meth:`stop`).

A fault window opens at once, or at the first request matching ``trigger`` (a predicate on
method and path, e.g. "the first GET of an image"), and closes after ``seconds`` or after
``requests`` failed requests (whichever is given; neither means "until :meth:`heal`").
Counters say how many requests were forwarded and how many were failed, so a test can
check that a fault really happened.

:func:`file_server` serves a local folder over HTTP (a plain server: no range requests), to
put a proxy in front of when the storage under test is a web server.
"""

from __future__ import annotations

import functools
import http.client
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

Trigger = Callable[[str, str], bool]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
}

_UNAVAILABLE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
    b"<Message>injected fault: storage unavailable</Message></Error>"
)


class FaultProxy:
    """A threaded forwarding proxy with switchable faults (see the module docstring)."""

    def __init__(self, target: str):
        parts = urlsplit(target)
        self.target_host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 80
        self.lock = threading.Lock()
        self.forwarded = 0
        self.failed = 0
        self.log: list[tuple[str, str, str]] = []  # (method, path, "ok"|"503"|"reset"|"hang")
        self._released = threading.Event()  # ends every hanging request
        self._mode: str | None = None
        self._armed: Trigger | None = None
        self._until: float | None = None
        self._left: int | None = None
        self._seconds: float | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # quiet

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._fault_for(self.command, self.path)
                if fault == "hang":
                    proxy._released.wait()
                    self.close_connection = True
                    return
                if fault == "reset":
                    # SO_LINGER 0: close with RST instead of a clean FIN.
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault == "503":
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_UNAVAILABLE)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(_UNAVAILABLE)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy.target_host, proxy.target_port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    # A HEAD answer has no body but must keep the object's Content-Length.
                    keep_length = self.command == "HEAD"
                    for key, value in resp.getheaders():
                        if key.lower() in _HOP_BY_HOP:
                            continue
                        if key.lower() != "content-length" or keep_length:
                            self.send_header(key, value)
                    if not keep_length:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- control -----------------------------------------------------------------------

    def fail(
        self,
        mode: str = "503",
        *,
        seconds: float | None = None,
        requests: int | None = None,
        trigger: Trigger | None = None,
    ) -> None:
        """Fail requests (``mode`` "503", "reset" or "hang") from now, or from the first
        request matching ``trigger``, for ``seconds`` or ``requests`` (neither: until heal())."""
        if mode not in ("503", "reset", "hang"):
            raise ValueError(f"mode must be '503', 'reset' or 'hang', not {mode!r}")
        with self.lock:
            self._released.clear()
            self._mode = mode
            self._left = requests
            self._seconds = seconds
            self._armed = trigger
            self._until = None
            if trigger is None:
                self._open_window()

    def heal(self) -> None:
        """Forward everything again (and let hanging requests go: they are dropped)."""
        with self.lock:
            self._mode = self._armed = self._until = self._left = None
            self._released.set()

    @property
    def failing(self) -> bool:
        with self.lock:
            return self._mode is not None and self._armed is None

    def _open_window(self) -> None:
        self._until = time.monotonic() + self._seconds if self._seconds is not None else None

    def _fault_for(self, method: str, path: str) -> str | None:
        with self.lock:
            if self._mode is not None and self._armed is not None and self._armed(method, path):
                self._armed = None
                self._open_window()
            active = self._mode is not None and self._armed is None
            if active and self._until is not None and time.monotonic() >= self._until:
                active = False
                self._mode = None
            if active and self._left is not None:
                if self._left <= 0:
                    active = False
                    self._mode = None
                else:
                    self._left -= 1
            mode = self._mode if active else None
            if mode:
                self.failed += 1
            else:
                self.forwarded += 1
            self.log.append((method, path, mode or "ok"))
            return mode

    # -- lifetime ----------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def fault_proxy(target: str) -> Iterator[FaultProxy]:
    """A running :class:`FaultProxy` in front of ``target`` for the ``with`` block."""
    proxy = FaultProxy(target).start()
    try:
        yield proxy
    finally:
        proxy.stop()


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextmanager
def file_server(folder: str) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 for the ``with`` block; yields the base URL."""
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(folder))
    )
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def refused_port() -> int:
    """A local port nothing listens on (connecting to it is refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
