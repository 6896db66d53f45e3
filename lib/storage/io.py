"""Storage operations on any URI: atomic writes and uploads, bounded reads, look-ups."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

from retouch.lib.errors import InvalidImageError, StorageError
from retouch.lib.storage.atomic import atomic_local_file
from retouch.lib.storage.remote import filesystem, is_http, protocols
from retouch.lib.storage.retry import retrying
from retouch.lib.storage.uris import OBJECT_STORES, local_path, redact

_READ_BLOCK = 8 << 20


def too_large(
    uri: str, max_bytes: int, setting: str = "RETOUCH_MAX_FILE_BYTES"
) -> InvalidImageError:
    return InvalidImageError(
        redact(uri),
        f"file is larger than the limit of {max_bytes} bytes (raise {setting} to accept it)",
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
            raise too_large(uri, max_bytes)
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
            if is_http(uri):
                return dict(_http_call(uri, _http_head))
            fs, path = filesystem(uri)
            if not protocols(fs) & {"file", "local"}:
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
        if is_http(uri):
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
                raise too_large(uri, max_bytes)
            while left > 0:
                block = fh.read(min(left, _READ_BLOCK))
                if not block:
                    break
                parts.append(block)
                left -= len(block)
        return b"".join(parts)

    data = retrying(read, what="read", uri=uri)
    if max_bytes is not None and len(data) > max_bytes:
        raise too_large(uri, max_bytes)
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
    if is_http(uri):
        return info(uri) is not None

    def check() -> bool:
        fs, path = filesystem(uri)
        if not protocols(fs) & {"file", "local"}:
            # Another process may have written it since this instance listed the folder.
            fs.invalidate_cache(path)
        return bool(fs.exists(path))

    return retrying(check, what="check", uri=uri)


def size(uri: str) -> int:
    """The size of the file at ``uri`` in bytes.

    Raises:
        StorageError: "not found" when it does not exist.
    """
    if is_http(uri):
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
        if not protocols(fs) & {"file", "local"}:
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
    if protocols(fs) & OBJECT_STORES:
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
