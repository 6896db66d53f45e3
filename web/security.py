"""What a request must be to reach the API: the one loopback rule (the web command and the
server ask it alike), the same-origin check, and the security headers on every response."""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
}
# The review report is one self-contained page (inline style and script, data: images): it
# runs sandboxed in an origin of its own, so nothing in it can call the API.
REPORT_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; sandbox allow-scripts"
)


def _split_host(value: str) -> tuple[str, str]:
    """``host[:port]`` (IPv6 in brackets) as (lower-case host, port or '')."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest.removeprefix(":")
    host, _, port = value.partition(":")
    return host, port


def is_loopback_host(host: str) -> bool:
    """True for names and addresses that can only mean this machine."""
    import ipaddress

    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _same_origin(origin: str, host_header: str, scheme: str) -> bool:
    from urllib.parse import urlsplit

    default = {"http": "80", "https": "443"}
    try:
        parts = urlsplit(origin)
        o_host, o_port = (parts.hostname or ""), str(parts.port or default.get(parts.scheme, ""))
    except ValueError:
        return False
    h_host, h_port = _split_host(host_header)
    return (o_host, o_port) == (h_host, h_port or default.get(scheme, ""))


class Guard:
    """Refuses what a browser may be tricked into sending, and adds the security headers.

    Without a token the server trusts whoever can reach it, which is only this machine, but
    a web page open in this machine's browser can reach it too: a cross-site POST (an upload
    is a "simple" request that needs no CORS preflight) carries an ``Origin`` of another
    site, and a DNS-rebinding page sends its own host name. Both are refused, so only the
    page served here and non-browser clients get through.
    """

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.token = token

    def _refusal(self, scope: Scope) -> str | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if not self.token and not is_loopback_host(_split_host(host)[0]):
            return (
                f"host {host!r} refused: without a token, retouch web answers only requests "
                "addressed to this machine (localhost, 127.0.0.1, ::1); set RETOUCH_WEB_TOKEN "
                "to serve it under other names"
            )
        origin = headers.get("origin")
        if origin is not None and scope["path"].startswith("/api/"):
            if not _same_origin(origin, host, scope.get("scheme", "http")):
                return (
                    f"cross-origin request from {origin!r} refused: the API answers only its "
                    "own page and clients that are not browsers"
                )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            response = JSONResponse({"detail": refusal}, status_code=403)
            await response(scope, receive, self._with_headers(send))
            return
        await self.app(scope, receive, self._with_headers(send))

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    if key not in headers:
                        headers[key] = value
            await send(message)

        return wrapped
