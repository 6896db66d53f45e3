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

Layout: :mod:`.uris` (path and URL forms, redaction), :mod:`.remote` (fsspec filesystems,
S3 endpoint, HTTP timeouts), :mod:`.retry` (transient failures, retries, plain reasons),
:mod:`.atomic` (local files replaced by rename), :mod:`.io` (the operations on any URI).
"""

from retouch.lib.storage.atomic import (
    NAME_MAX,
    TEMP_MARKER,
    atomic_local_file,
    fsync_dir,
    temp_name,
)
from retouch.lib.storage.io import (
    exists,
    info,
    makedirs,
    put_file,
    read_bytes,
    remove,
    size,
    too_large,
    write_bytes,
)
from retouch.lib.storage.remote import filesystem, reset_filesystems, s3_endpoint_url
from retouch.lib.storage.retry import is_transient, retrying
from retouch.lib.storage.uris import (
    check_no_inline_credentials,
    is_chained,
    is_local,
    join,
    local_path,
    redact,
    redact_text,
    redact_tree,
    uri_secrets,
)

__all__ = [
    "NAME_MAX",
    "TEMP_MARKER",
    "atomic_local_file",
    "check_no_inline_credentials",
    "exists",
    "filesystem",
    "fsync_dir",
    "info",
    "is_chained",
    "is_local",
    "is_transient",
    "join",
    "local_path",
    "makedirs",
    "put_file",
    "read_bytes",
    "redact",
    "redact_text",
    "redact_tree",
    "remove",
    "reset_filesystems",
    "retrying",
    "s3_endpoint_url",
    "size",
    "temp_name",
    "too_large",
    "uri_secrets",
    "write_bytes",
]
