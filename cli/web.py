"""``retouch web``: the page and REST API for people who don't use the command line."""

from __future__ import annotations

import os
import socket
import threading
from typing import Annotated, Any

import typer
from rich.markup import escape

from retouch.cli.common import console, fail, reported


def page_url(host: str, port: int, token: str | None) -> str:
    """The address to open: loopback shown as localhost, IPv6 in brackets, the token
    URL-encoded (it may hold '&', '#', '+'...)."""
    from urllib.parse import quote

    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/" + (f"?token={quote(token, safe='')}" if token else "")


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _prefect_server() -> tuple[str, Any]:
    """The Prefect API for the batches: PREFECT_API_URL when set, else the background server
    the commands share (or, with RETOUCH_SERVER_IDLE_S=0, one started here and stopped at
    exit): each batch then starts in seconds instead of starting its own."""
    from prefect.settings import PREFECT_API_URL

    from retouch.flows.background import local_api

    configured = PREFECT_API_URL.value()
    if configured:
        return configured, None

    def announce(line: str) -> None:
        console.print(escape(line), highlight=False, soft_wrap=True)

    api_url, server = local_api(
        timeout=180,
        announce=announce,
        embedded_line="starting a local Prefect server for the batches…",
    )
    assert api_url is not None
    return api_url, server


@reported()
def web(
    host: Annotated[
        str, typer.Option(help="Address to listen on (beyond loopback a token is required)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on")] = 8765,
    token: Annotated[
        str | None,
        typer.Option(
            help="Require this token on every API call (default RETOUCH_WEB_TOKEN; prefer the "
            "setting: other users of this machine can read a command line)"
        ),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the page in the default browser")
    ] = False,
) -> None:
    """Serve the web page and REST API: upload a batch, follow each image, review, download.

    Batches run as `retouch run` processes (RETOUCH_WEB_MAX_RUNNING at once) against
    PREFECT_API_URL, or a Prefect server started here. Uploads are limited by
    RETOUCH_WEB_MAX_FILES, RETOUCH_WEB_MAX_FILE_BYTES and RETOUCH_WEB_MAX_BATCH_BYTES.
    The API is described at /openapi.json.

    SIGTERM (or SIGHUP) stops the server: each running batch's process is stopped with it
    (SIGTERM, SIGKILL after 8 s) and its batch runs again at the next start, reusing the
    images finished before the stop; exit status 143 (128 + the signal).

    Examples:
      retouch web
      retouch web --host 0.0.0.0 --port 8080 --token "$(openssl rand -hex 16)"
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from retouch.lib.settings import get_settings
    from retouch.web.security import is_loopback_host

    token = token or get_settings().web_token
    if not token and not is_loopback_host(host.strip("[]").lower()):
        raise fail(
            f"listening on {host} (beyond this machine) needs a token: give --token TOKEN or "
            "set RETOUCH_WEB_TOKEN"
        )
    if not _port_free(host, port):
        raise fail(f"{host}:{port} is in use: choose another --port")

    import uvicorn

    from retouch.flows.runtime import set_termination_grace
    from retouch.web.app import create_app
    from retouch.web.runner import KILL_GRACE_S

    # On SIGTERM the batches' processes get KILL_GRACE_S to stop before they are killed, then
    # the Prefect server stops: the deadline after which everything is killed comes later.
    set_termination_grace(KILL_GRACE_S + 10)

    server = None
    try:
        try:
            api_url, server = _prefect_server()
        except Exception as exc:  # the server's own errors vary; the message says what failed
            raise fail(f"could not start a Prefect server: {exc}") from None
        app = create_app(token=token, prefect_api_url=api_url)
        url = page_url(host, port, token)
        console.print(f"retouch web: {escape(url)}  (Prefect API {escape(api_url)})")
        if open_browser:
            import webbrowser

            threading.Timer(1.0, webbrowser.open, args=(url,)).start()
        # On SIGTERM uvicorn shuts down, then raises the signal again: the handler of
        # `retouch` (runtime.handle_termination) turns it into an exception that ends here.
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        if server is not None:
            server.stop()


def register(app: typer.Typer) -> None:
    """Add ``web`` to the ``retouch`` command line."""
    app.command()(web)
