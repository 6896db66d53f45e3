"""Reading and writing files wherever they live: local paths or fsspec URLs.

A URI is either a plain local path (``photos/a.jpg``, ``/data/out``) or an fsspec URL
(``file://``, ``s3://bucket/key``, ``memory://x``, chained ``zip://member::s3://b/a.zip``).

Guarantees other code relies on:

- Writes are atomic. Local files are written under a temporary name in the same folder,
  fsynced and renamed over the final name, so a reader never sees half a file under the
  final name. S3 objects are written by one PUT (or a multipart upload), which only becomes
  visible when complete.
- Transient failures (dropped connections, timeouts, 5xx answers) are retried with
  exponential backoff and jitter, ``settings.storage_retries`` times, then reported as a
  :class:`StorageError` that names the URI and the operation. A missing file is reported at
  once as "not found"; permission errors are never retried.
- Messages never contain credentials: :func:`redact` strips user info and query strings.
- ``http(s)://`` reads never wait forever: a server gets ``settings.remote_timeout_s`` to
  accept the connection and to send each next part of its answer; a timeout, a refused
  connection or a 5xx answer is retried like any transient failure and reported in plain
  words ("no answer from the server within 10 s"), never as "not found". Bodies are
  streamed and stopped at the size limit (a declared ``Content-Length`` over it is refused
  before anything is read); range requests are never needed.

S3 endpoint: ``RETOUCH_S3_ENDPOINT_URL``, else ``AWS_ENDPOINT_URL_S3``, else
``AWS_ENDPOINT_URL`` (for MinIO, moto, Ceph...). It is read on every call and passed to
s3fs explicitly so that fsspec's instance cache, keyed by arguments, never hands back a
filesystem bound to a previous endpoint.
"""

from __future__ import annotations

import errno
import os
import random
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar
from urllib.parse import unquote

import fsspec

from retouch.lib.errors import InvalidImageError, RetouchError, StorageError
from retouch.lib.settings import get_settings

T = TypeVar("T")

TEMP_MARKER = ".retouch-tmp-"
NAME_MAX = 255  # bytes in one file name on Linux and macOS file systems
"""Part of every temporary file name; such files are never results and may be deleted."""

# Object stores have no real folders: creating one is either a no-op or (for a bare
# bucket name) would create a bucket, which retouch must never do behind the user's back.
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "abfs", "az", "adl", "oss", "r2"}

_S3_PROTOCOLS = ("s3://", "s3a://")
_HTTP_PROTOCOLS = ("http://", "https://")

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

_READ_BLOCK = 8 << 20


# -- URIs ------------------------------------------------------------------------------------


def is_chained(uri: str) -> bool:
    """Whether ``uri`` is a chained fsspec URL (``zip://a.jpg::s3://b/x.zip``,
    ``simplecache::s3://b/k``): some part beyond the first ``::`` is a URL, or the first part
    names a protocol. A local file may have ``::`` in its name (``m_a::b.jpg``): a path."""
    if "::" not in uri or uri.startswith("file://"):  # a file:// URL is always the last link
        return False
    parts = uri.split("::")
    return any("://" in part for part in parts) or parts[0] in fsspec.available_protocols()


def _has_protocol(uri: str) -> bool:
    return "://" in uri or is_chained(uri)


def local_path(uri: str) -> str | None:
    """The local filesystem path ``uri`` names, or ``None`` when it is not local.

    Plain paths (``~`` expanded, ``::`` in a name included) and ``file://`` URLs are local;
    every other URL, chained ones included, is not.
    """
    uri = os.fspath(uri)
    if is_chained(uri):
        return None
    if uri.startswith("file://"):
        return unquote(uri[len("file://") :]) or "/"
    if "://" in uri:
        return None
    return os.path.expanduser(uri)


def is_local(uri: str) -> bool:
    """True when ``uri`` is a plain path or a ``file://`` URL."""
    return local_path(uri) is not None


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or URL, always staying below ``base``.

    Parts are split on ``/``; leading slashes are dropped so an absolute part cannot
    replace the base, and a ``..`` segment is refused (ValueError). For a chained URL (``zip://a::s3://b/x.zip``) the parts are joined to
    the first (innermost) path.
    """
    head, sep, tail = base.partition("::")
    pieces = [p for part in parts for p in str(part).replace("\\", "/").split("/") if p]
    if ".." in pieces:
        raise ValueError(f"refusing to join {parts!r} onto {redact(base)}: '..' would leave it")
    if not pieces:
        return base
    if "://" in head:
        proto, _, path = head.partition("://")
        joined = path.rstrip("/") + "/" + "/".join(pieces) if path else "/".join(pieces)
        head = f"{proto}://{joined}"
    else:
        head = os.path.join(head, *pieces) if head else os.path.join(*pieces)
    return head + sep + tail


def redact(uri: str) -> str:
    """``uri`` with credentials removed: user info and query strings become ``***``.

    Each part of a chained URL is redacted. Plain local paths are returned unchanged.
    """
    if not _has_protocol(uri):
        return uri
    return "::".join(_redact_one(part) for part in uri.split("::"))


def redact_tree(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings) with credentials removed from every URL in
    it (recipes, run records and manifests name mask folders, sources, destinations)."""
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_tree(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return redact(value)
    return value


def _userinfo_end(rest: str) -> int:
    """Index of the '@' ending ``user[:password]`` in the part after ``scheme://``, or -1."""
    at = rest.rfind("@")
    first_slash = rest.find("/")
    colon = rest.find(":")
    # user[:password]@host: the '@' is in the host part, or a ':' precedes it (a secret
    # key may itself contain '/', which would end the host part early).
    if at >= 0 and (first_slash < 0 or at < first_slash or 0 <= colon < at):
        return at
    return -1


def _redact_one(part: str) -> str:
    if "://" not in part:
        return part
    scheme, _, rest = part.partition("://")
    rest, query, _ = rest.partition("?")
    at = _userinfo_end(rest)
    if at >= 0:
        rest = "***@" + rest[at + 1 :]
    return _mask_env_secrets(f"{scheme}://{rest}" + ("?***" if query else ""))


def uri_secrets(uri: str) -> list[str]:
    """The credential strings inside ``uri`` (user info, its password, query strings).

    A library's error message may quote them without the URL around them (a bucket name
    "KEY:SECRET@bucket"), so :func:`redact_text` masks these wherever they appear.
    """
    found: list[str] = []
    for part in uri.split("::"):
        if "://" not in part:
            continue
        rest, _, query = part.partition("://")[2].partition("?")
        at = _userinfo_end(rest)
        if at >= 0:
            userinfo = rest[:at]
            found += [userinfo, *userinfo.split(":", 1)]
        if query:
            found += [query, *(v for kv in query.split("&") for v in kv.split("=", 1)[1:])]
    # Longest first, so that a whole "user:password" goes before its pieces; very short
    # values would mangle ordinary words.
    return sorted({f for f in found if len(f) >= 4}, key=len, reverse=True)


def check_no_inline_credentials(uri: str) -> None:
    """Refuse object-store URLs carrying credentials (``s3://KEY:SECRET@bucket/...``).

    Such URLs do not work (the object stores take keys from the environment or a profile,
    so the keys would be read as part of the bucket name) and would be recorded wherever
    the URL is. Raises :class:`StorageError` with the URL redacted.
    """
    for part in uri.split("::"):
        scheme, sep, rest = part.partition("://")
        if not sep or scheme.lower() not in _OBJECT_STORES:
            continue
        if _userinfo_end(rest.partition("?")[0]) >= 0:
            raise StorageError(
                f"{redact(uri)}: credentials inside a {scheme}:// URL are not accepted; put "
                "them in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or a "
                "profile and give the URL without them"
            )


def _mask_env_secrets(text: str) -> str:
    # Short values (test keys such as "testing") would mangle ordinary words; real secrets
    # are 40+ characters.
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        value = os.environ.get(var)
        if value and len(value) >= 8:
            text = text.replace(value, "***")
    return text


_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_text(text: str, uri: str | None = None) -> str:
    """Remove credentials from free text (an underlying library's error message).

    URLs in the text are redacted like :func:`redact`, the values of the AWS secret key and
    session token environment variables are masked wherever they appear, and so are the
    credentials of ``uri`` (the URI the message is about), even when quoted on their own.
    """
    text = _URL_IN_TEXT.sub(lambda m: _redact_one(m.group(0)), text)
    for secret in uri_secrets(uri) if uri else ():
        text = text.replace(secret, "***")
    return _mask_env_secrets(text)


# -- filesystems -----------------------------------------------------------------------------


def s3_endpoint_url() -> str | None:
    """The S3 endpoint override from the environment, or ``None`` for AWS itself."""
    for var in ("RETOUCH_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = os.environ.get(var)
        if value:
            return value
    return None


def _is_http(uri: str) -> bool:
    """True for a plain (not chained) ``http://`` or ``https://`` URL."""
    return uri.lower().startswith(_HTTP_PROTOCOLS) and not is_chained(uri)


def _http_timeout() -> Any:
    import aiohttp

    seconds = get_settings().remote_timeout_s
    # No bound on the whole request (a big file on a slow link may take minutes), only on
    # connecting and on each wait for more bytes: a silent server fails, a slow one does not.
    return aiohttp.ClientTimeout(
        total=None, connect=seconds, sock_connect=seconds, sock_read=seconds
    )


def _storage_options(uri: str) -> dict[str, Any]:
    # Keyed by protocol so that fsspec routes each to its layer of a chained URL too.
    # Only protocols the URL uses: fsspec hands the others to the filesystem as arguments.
    options: dict[str, Any] = {}
    schemes = {part.partition("://")[0].lower() for part in uri.split("::") if "://" in part}
    for scheme in schemes & {"http", "https"}:
        options[scheme] = {"client_kwargs": {"timeout": _http_timeout()}}
    endpoint = s3_endpoint_url() if any(p in uri for p in _S3_PROTOCOLS) else None
    if endpoint:
        options["s3"] = {"client_kwargs": {"endpoint_url": endpoint}}
    return options


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem serving ``uri`` and the path within it.

    Local paths map to fsspec's local filesystem. Instances are cached by fsspec (keyed by
    their arguments, which include the S3 endpoint); call :func:`reset_filesystems` after
    changing credentials in the environment.
    """
    uri = os.fspath(uri)
    path = local_path(uri)
    if path is not None:
        fs = fsspec.filesystem("file")
        return fs, fs._strip_protocol(path)
    check_no_inline_credentials(uri)
    return fsspec.core.url_to_fs(uri, **_storage_options(uri))


def reset_filesystems() -> None:
    """Forget every cached filesystem instance (and its listing cache).

    Needed when credentials or endpoints change within one process (tests starting a new
    S3 server, a CLI switching profiles).
    """
    from fsspec import spec

    classes = set(getattr(spec, "_registered_classes", ()))
    classes.add(fsspec.AbstractFileSystem)
    for cls in classes:
        with suppress(Exception):
            cls.clear_instance_cache()


def _protocols(fs: fsspec.AbstractFileSystem) -> set[str]:
    proto = fs.protocol
    return {proto} if isinstance(proto, str) else set(proto)


# -- retries ---------------------------------------------------------------------------------


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
    if not any(p in uri.lower() for p in _HTTP_PROTOCOLS):
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


# -- atomic local files ------------------------------------------------------------------------


def temp_name(path: str) -> str:
    """A temporary file name beside ``path`` that nobody will take for a result."""
    folder, name = os.path.split(path)
    # Never longer than the name allows (255 bytes): a long name is cut, not the user's file.
    room = NAME_MAX - len(TEMP_MARKER) - 9
    short = name.encode()[:room].decode(errors="ignore")
    return os.path.join(folder, f".{short}{TEMP_MARKER}{secrets.token_hex(4)}")


@contextmanager
def atomic_local_file(path: str, *, durable: bool = True) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on
    error it is deleted and ``path`` is left as it was.

    The rename alone makes a killed process harmless (``path`` is the old or the new file,
    never a part). ``durable`` also fsyncs the file and its folder, so the new content
    survives a power cut; files that can be recomputed (cached results, previews) skip it:
    two fsyncs cost more than encoding a small image.
    The parent folder is created if needed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temp_name(os.path.abspath(path))
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    # Makes the rename itself durable; not possible on every platform, never fatal.
    with suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- operations ------------------------------------------------------------------------------


def _too_large(uri: str, max_bytes: int) -> InvalidImageError:
    return InvalidImageError(
        redact(uri),
        f"file is larger than the limit of {max_bytes} bytes "
        "(raise RETOUCH_MAX_FILE_BYTES to accept it)",
    )


def _check_http_status(response: Any, url: str) -> None:
    status = response.status
    if status in (404, 410):
        raise FileNotFoundError(url)
    if status in (401, 403):
        raise PermissionError(f"the server answered {status} {response.reason or ''}".rstrip())
    if status >= 400:
        response.raise_for_status()


def _declared_length(response: Any) -> int | None:
    # A compressed answer declares the compressed length, not what it expands to.
    if response.headers.get("Content-Encoding", "identity").lower() != "identity":
        return None
    length = response.content_length
    return length if isinstance(length, int) else None


async def _http_get(fs: Any, url: str, uri: str, max_bytes: int | None) -> bytes:
    session = await fs.set_session()
    async with session.get(fs.encode_url(url), **fs.kwargs) as response:
        _check_http_status(response, url)
        declared = _declared_length(response)
        if max_bytes is not None and declared is not None and declared > max_bytes:
            raise _too_large(uri, max_bytes)
        parts: list[bytes] = []
        total = 0
        async for block in response.content.iter_chunked(1 << 20):
            parts.append(block)
            total += len(block)
            if max_bytes is not None and total > max_bytes:
                break  # leaving the block closes the connection: the rest is never read
        return b"".join(parts)


async def _http_head(fs: Any, url: str) -> dict[str, Any]:
    session = await fs.set_session()
    async with session.head(fs.encode_url(url), allow_redirects=True, **fs.kwargs) as response:
        if response.status not in (405, 501):  # servers that only answer GET
            _check_http_status(response, url)
        return {"name": url, "size": _declared_length(response), "type": "file"}


def _http_call(uri: str, coro: Callable[..., Any], *args: Any) -> Any:
    from fsspec.asyn import sync

    fs, path = filesystem(uri)
    return sync(fs.loop, coro, fs, path, *args)


def info(uri: str) -> dict[str, Any] | None:
    """What the storage says about ``uri`` (fsspec's ``info``: ``type``, ``size``...), or
    ``None`` when nothing is there. Failures other than "not found" are retried and then
    raised as :class:`StorageError` with the reason (a silent server is not "not found")."""

    def get() -> dict[str, Any] | None:
        try:
            if _is_http(uri):
                return dict(_http_call(uri, _http_head))
            fs, path = filesystem(uri)
            if not _protocols(fs) & {"file", "local"}:
                fs.invalidate_cache(path)  # another process may have written it since
            return dict(fs.info(path))
        except FileNotFoundError:
            return None

    return retrying(get, what="look up", uri=uri)


def read_bytes(uri: str, *, max_bytes: int | None = None) -> bytes:
    """The whole content of ``uri``.

    With ``max_bytes``, a file larger than that is rejected without reading it when its
    size is declared (a local file, a ZIP member, an S3 object, an HTTP ``Content-Length``),
    and otherwise after reading at most ``max_bytes + 1`` bytes (used for inputs, with
    ``settings.max_file_bytes``). ``http(s)://`` URLs are read in one streamed GET.

    Raises:
        StorageError: not found, permission denied, or failed after retries.
        InvalidImageError: the file is larger than ``max_bytes``.
    """

    def read() -> bytes:
        if _is_http(uri):
            return bytes(_http_call(uri, _http_get, uri, max_bytes))
        fs, path = filesystem(uri)
        if max_bytes is None:
            return fs.cat_file(path)
        # Read in blocks: ``read(max_bytes + 1)`` would allocate the whole limit (500 MB by
        # default) up front for every input, however small the file.
        parts: list[bytes] = []
        left = max_bytes + 1
        with fs.open(path, "rb") as fh:
            declared = getattr(fh, "size", None)  # a ZIP member's from the central directory
            if isinstance(declared, int) and declared > max_bytes:
                raise _too_large(uri, max_bytes)
            while left > 0:
                block = fh.read(min(left, _READ_BLOCK))
                if not block:
                    break
                parts.append(block)
                left -= len(block)
        return b"".join(parts)

    data = retrying(read, what="read", uri=uri)
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_large(uri, max_bytes)
    return data


def write_bytes(uri: str, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``uri`` atomically, replacing any existing file.

    Local parent folders are created. On S3 the object is written by a single PUT.
    ``durable=False`` (local files only) skips the fsyncs, for data that can be recomputed
    (see :func:`atomic_local_file`).
    """
    path = local_path(uri)
    if path is not None:

        def write_local() -> None:
            with atomic_local_file(path, durable=durable) as tmp:
                with open(tmp, "wb") as fh:
                    fh.write(data)

        retrying(write_local, what="write", uri=uri)
        return

    def write_remote() -> None:
        fs, rpath = filesystem(uri)
        fs.pipe_file(rpath, bytes(data))

    retrying(write_remote, what="write", uri=uri)


def put_file(local: str, uri: str) -> None:
    """Copy the local file ``local`` to ``uri`` atomically (streaming, any size).

    S3 may use a multipart upload for big files; the object appears only when complete.
    """
    if not os.path.isfile(local):
        raise StorageError(f"{local}: not found (upload source)")
    path = local_path(uri)
    if path is not None:

        def copy_local() -> None:
            with atomic_local_file(path) as tmp:
                shutil.copyfile(local, tmp)

        retrying(copy_local, what="write", uri=uri)
        return

    def upload() -> None:
        fs, rpath = filesystem(uri)
        fs.put_file(local, rpath)

    retrying(upload, what="write", uri=uri)


def exists(uri: str) -> bool:
    """True when ``uri`` names an existing file or folder (prefix)."""
    if _is_http(uri):
        return info(uri) is not None

    def check() -> bool:
        fs, path = filesystem(uri)
        if not _protocols(fs) & {"file", "local"}:
            # Another process may have written it since this instance listed the folder.
            fs.invalidate_cache(path)
        return bool(fs.exists(path))

    return retrying(check, what="check", uri=uri)


def size(uri: str) -> int:
    """The size of the file at ``uri`` in bytes.

    Raises:
        StorageError: "not found" when it does not exist.
    """
    if _is_http(uri):
        found = info(uri)
        if found is None or found.get("size") is None:
            raise StorageError(
                f"{redact(uri)}: not found (size)"
                if found is None
                else f"{redact(uri)}: the server does not tell the size"
            )
        return int(found["size"])

    def get() -> int:
        fs, path = filesystem(uri)
        if not _protocols(fs) & {"file", "local"}:
            fs.invalidate_cache(path)
        value = fs.size(path)
        if value is None:
            raise FileNotFoundError(path)
        return int(value)

    return retrying(get, what="size", uri=uri)


def makedirs(uri: str) -> None:
    """Create the folder ``uri`` and its parents (a no-op on object stores such as S3)."""
    path = local_path(uri)
    if path is not None:
        retrying(lambda: os.makedirs(path, exist_ok=True), what="create folder", uri=uri)
        return
    fs, rpath = filesystem(uri)
    if _protocols(fs) & _OBJECT_STORES:
        return
    retrying(lambda: fs.makedirs(rpath, exist_ok=True), what="create folder", uri=uri)


def remove(uri: str) -> bool:
    """Delete the file at ``uri``; returns False when it did not exist."""

    def rm() -> bool:
        fs, path = filesystem(uri)
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            return False
        return True

    return retrying(rm, what="delete", uri=uri)
