"""Retrying transient storage failures, and saying plainly what failed."""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from retouch.lib.errors import RetouchError, StorageError
from retouch.lib.settings import get_settings
from retouch.lib.storage.remote import HTTP_PROTOCOLS
from retouch.lib.storage.uris import redact, redact_text

T = TypeVar("T")

# Errno values that mean "try again later" rather than "this will never work". s3fs maps
# S3 InternalError/500 to EREMOTEIO, SlowDown/ServiceUnavailable/503 to EBUSY and unknown
# server answers to EIO.
_TRANSIENT_ERRNOS = {
    errno.EIO,
    errno.EBUSY,
    errno.EAGAIN,
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EPIPE,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    getattr(errno, "EREMOTEIO", 121),
}

# Exception class names (matched along the MRO, so botocore/aiohttp need not be imported)
# that are network hiccups worth retrying.
_TRANSIENT_NAMES = {
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "HTTPClientError",
    "ResponseStreamingError",
    "IncompleteReadError",
    "IncompleteRead",
    "ClientConnectionError",
    "ClientPayloadError",
    "ServerDisconnectedError",
    "ServerTimeoutError",
    "ProtocolError",
    "ChunkedEncodingError",
}

# Exceptions raised by storage libraries that are not OSErrors but still mean "storage
# failed" (no credentials, corrupt archive...). They are reported as StorageError.
_STORAGE_MODULES = {"botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec", "urllib3", "zipfile"}

_sleep = time.sleep  # tests replace this to run without waiting


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` looks like a temporary storage failure worth retrying.

    Connection errors, timeouts and 5xx answers are transient; missing files, permission
    problems and every 4xx answer are not.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (FileNotFoundError, PermissionError, IsADirectoryError)):
            return False
        if isinstance(current, (NotADirectoryError, FileExistsError, RetouchError)):
            return False
        if isinstance(current, (ConnectionError, TimeoutError)):
            return True
        if _names(current) & _TRANSIENT_NAMES:
            return True
        status = _http_status(current)
        if status is not None:
            return status >= 500 or status in (408, 429)
        if isinstance(current, OSError) and current.errno in _TRANSIENT_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_storage_exc(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return True
    if isinstance(exc, ValueError) and "support range requests" in str(exc):
        return True  # fsspec's HTTP files, reading part of a file the server sends whole
    return any(cls.__module__.split(".")[0] in _STORAGE_MODULES for cls in type(exc).__mro__)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


_HTTP_REASONS = {
    408: "Request Timeout",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _plain_reason(exc: BaseException, uri: str) -> str | None:
    """What went wrong in the user's words, for the failures whose library text is obscure
    (a timeout, a refused connection, an HTTP status), or None."""
    if not any(p in uri.lower() for p in HTTP_PROTOCOLS):
        return None  # botocore's own messages say what happened and name the endpoint
    for current in _chain(exc):
        names = _names(current)
        if names & {"ServerTimeoutError", "ConnectionTimeoutError", "SocketTimeoutError"}:
            seconds = get_settings().remote_timeout_s
            return (
                f"no answer from the server within {seconds:g} s "
                "(RETOUCH_REMOTE_TIMEOUT_S sets how long to wait)"
            )
        if "ClientConnectorError" in names:
            host = f"{getattr(current, 'host', '?')}:{getattr(current, 'port', '?')}"
            if isinstance(getattr(current, "os_error", None), ConnectionRefusedError):
                return f"connection refused by {host} (no server is listening there)"
            why = getattr(getattr(current, "os_error", None), "strerror", None) or str(current)
            return f"cannot connect to {host} ({why})"
        if "ServerDisconnectedError" in names:
            return "the server closed the connection without answering"
        if "ClientPayloadError" in names:
            return "the server broke off the answer before it was complete"
        if "ClientResponseError" in names and isinstance(_http_status(current), int):
            status = _http_status(current)
            reason = getattr(current, "message", None) or _HTTP_REASONS.get(status or 0, "")
            return f"the server answered {status} {reason}".rstrip()
        if isinstance(current, ValueError) and "support range requests" in str(current):
            return (
                "the server does not answer range requests, which reading part of a file "
                "(a member of a remote ZIP archive) needs"
            )
    return None


def _describe(exc: BaseException, uri: str) -> str:
    plain = _plain_reason(exc, uri)
    if plain is not None:
        return redact_text(plain, uri)
    text = str(exc) or type(exc).__name__
    return redact_text(f"{type(exc).__name__}: {text}", uri)


def retrying(
    fn: Callable[[], T],
    *,
    what: str,
    uri: str,
    retries: int | None = None,
    base_delay: float = 0.25,
    max_delay: float = 8.0,
) -> T:
    """Call ``fn()``, retrying transient storage failures with exponential backoff.

    ``what`` names the operation ("read", "write"...) and ``uri`` the thing concerned, for
    the error message. ``retries`` defaults to ``settings.storage_retries`` (so a value of 3
    means up to 4 attempts). Delays grow ``base_delay * 2**n`` up to ``max_delay``, each
    scaled by a random factor in [0.5, 1.5) so that parallel workers do not retry in step.

    Raises:
        StorageError: "not found" at once for a missing file; at once for permission and
            other permanent storage errors; after the last attempt for transient ones.
            Exceptions that are not storage errors (bugs) propagate unchanged.
    """
    if retries is None:
        retries = get_settings().storage_retries
    attempt = 0
    while True:
        try:
            return fn()
        except RetouchError:
            raise
        except FileNotFoundError as exc:
            raise StorageError(f"{redact(uri)}: not found ({what})") from _cause(exc, uri)
        except PermissionError as exc:
            raise StorageError(
                f"{what} {redact(uri)}: permission denied ({_describe(exc, uri)}); "
                "check the credentials and the access rights of this location"
            ) from _cause(exc, uri)
        except Exception as exc:
            if not _is_storage_exc(exc):
                raise
            if not is_transient(exc):
                raise StorageError(
                    f"{what} {redact(uri)} failed: {_describe(exc, uri)}"
                ) from _cause(exc, uri)
            if attempt >= retries:
                partial = "Nothing was left half-written. " if what == "write" else ""
                raise StorageError(
                    f"{what} {redact(uri)} failed after {attempt + 1} attempt(s): {_describe(exc, uri)}. "
                    f"{partial}Re-running the same command resumes where it stopped."
                ) from _cause(exc, uri)
            delay = min(max_delay, base_delay * (2**attempt)) * random.uniform(0.5, 1.5)
            attempt += 1
            _sleep(delay)


def _cause(exc: BaseException, uri: str) -> BaseException | None:
    # Chaining the original keeps tracebacks useful, but a library's message could hold
    # a signed URL; only chain when its text is already clean.
    return exc if redact_text(str(exc), uri) == str(exc) else None
