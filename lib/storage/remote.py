"""The fsspec filesystems behind URIs: S3 endpoints, HTTP timeouts, the instance cache."""

from __future__ import annotations

import os
from contextlib import suppress
from typing import Any

import fsspec

from retouch.lib.settings import get_settings
from retouch.lib.storage.uris import check_no_inline_credentials, is_chained, local_path

_S3_PROTOCOLS = ("s3://", "s3a://")
HTTP_PROTOCOLS = ("http://", "https://")


def s3_endpoint_url() -> str | None:
    """The S3 endpoint override from the environment, or ``None`` for AWS itself."""
    for var in ("RETOUCH_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = os.environ.get(var)
        if value:
            return value
    return None


def is_http(uri: str) -> bool:
    """True for a plain (not chained) ``http://`` or ``https://`` URL."""
    return uri.lower().startswith(HTTP_PROTOCOLS) and not is_chained(uri)


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


def protocols(fs: fsspec.AbstractFileSystem) -> set[str]:
    proto = fs.protocol
    return {proto} if isinstance(proto, str) else set(proto)
