"""Mirroring a delivery to a second storage, and share links (presigned URLs).

The mirror keeps an index object, ``.retouch-sync.json``, mapping every file it holds to
its sha256 and size. A sync compares the files to deliver with that index and uploads only
the new and changed ones, then writes the index last (a sync cut short re-uploads at most
what it had not recorded). Without an index (a mirror filled by hand, or a lost index) a
file whose size and S3 ETag (the MD5 of a single-part upload) match is taken as unchanged.

Versioning ``prefix`` copies a file about to be replaced to
``versions/<stamp>/<path>`` first (a server-side copy on S3); ``bucket`` leaves old
versions to the bucket's own versioning; ``off`` overwrites.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from retouch.lib import storage
from retouch.lib.delivery.archive import sha256_file
from retouch.lib.errors import StorageError

INDEX_NAME = ".retouch-sync.json"
VERSIONS_PREFIX = "versions"

Versioning = Literal["prefix", "bucket", "off"]


def read_index(dest: str) -> dict[str, dict[str, Any]]:
    """The mirror's index ``{path: {"sha256", "size"}}``; empty when there is none yet.

    Raises:
        StorageError: the index exists but cannot be read.
    """
    uri = storage.join(dest, INDEX_NAME)
    if not storage.exists(uri):
        return {}
    try:
        data = json.loads(storage.read_bytes(uri))
        files = data["files"]
        return {str(k): dict(v) for k, v in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        # A damaged index only costs re-uploads; never a failed delivery.
        return {}


def _md5_file(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _same_remote(uri: str, local: str, size: int) -> bool:
    """True when the object at ``uri`` already holds ``local``'s bytes (no index entry)."""
    fs, path = storage.filesystem(uri)
    try:
        info = fs.info(path)
    except (FileNotFoundError, OSError):
        return False
    if int(info.get("size") or -1) != size:
        return False
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    if etag and "-" not in etag:
        return etag == _md5_file(local)
    if storage.is_local(uri):
        return sha256_file(storage.local_path(uri) or "") == sha256_file(local)
    return False


def sync_files(
    files: list[tuple[str, str]],
    dest: str,
    *,
    versioning: Versioning = "prefix",
    stamp: str | None = None,
) -> dict[str, Any]:
    """Mirror local files to ``dest``, uploading only those that changed.

    Args:
        files: ``(relative path at the mirror, local file)`` pairs; paths are safe relative
            names (``/``-separated).
        dest: folder or fsspec URL of the mirror.
        versioning: ``prefix``, ``bucket`` or ``off`` (see the module docstring).
        stamp: the folder name under ``versions/`` for replaced files (default: now, UTC).

    Returns:
        ``{"dest", "uploaded", "unchanged", "versioned", "index"}``: the mirror (redacted),
        the paths uploaded, the paths already up to date, where replaced versions were kept
        (``{path: versions/... path}``), and the index URI.

    Raises:
        StorageError: an upload, a copy or the index write failed after retries.
    """
    stamp = stamp or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    index = read_index(dest)
    uploaded: list[str] = []
    unchanged: list[str] = []
    versioned: dict[str, str] = {}
    for rel, local in files:
        if rel == INDEX_NAME or rel.split("/", 1)[0] == VERSIONS_PREFIX:
            raise StorageError(
                f"{storage.redact(dest)}: refusing to sync {rel!r}: the name is reserved for "
                "the mirror's index and versions"
            )
        size = os.path.getsize(local)
        digest = sha256_file(local)
        uri = storage.join(dest, rel)
        known = index.get(rel)
        if known is not None:
            if known.get("sha256") == digest and known.get("size") == size:
                unchanged.append(rel)
                continue
        elif _same_remote(uri, local, size):
            index[rel] = {"sha256": digest, "size": size}
            unchanged.append(rel)
            continue
        if versioning == "prefix" and storage.exists(uri):
            kept = "/".join((VERSIONS_PREFIX, stamp, rel))
            _copy(uri, storage.join(dest, kept))
            versioned[rel] = kept
        storage.put_file(local, uri)
        index[rel] = {"sha256": digest, "size": size}
        uploaded.append(rel)
    index_uri = storage.join(dest, INDEX_NAME)
    body = {"updated": datetime.now(UTC).isoformat(timespec="seconds"), "files": index}
    storage.write_bytes(index_uri, json.dumps(body, indent=1, sort_keys=True).encode())
    return {
        "dest": storage.redact(dest),
        "uploaded": uploaded,
        "unchanged": unchanged,
        "versioned": versioned,
        "index": storage.redact(index_uri),
    }


def _copy(src: str, dst: str) -> None:
    fs, src_path = storage.filesystem(src)
    _, dst_path = storage.filesystem(dst)

    def copy() -> None:
        if storage.is_local(dst):
            os.makedirs(os.path.dirname(dst_path), exist_ok=True)
        fs.copy(src_path, dst_path)

    storage.retrying(copy, what="copy", uri=src)


def share_link(uri: str, expiry_s: int) -> str | None:
    """A presigned URL that downloads ``uri`` for ``expiry_s`` seconds, or ``None`` where the
    storage cannot sign (local folders, most non-S3 stores). Signing happens locally, with
    the credentials in the environment; nothing is sent to the store."""
    if storage.is_local(uri):
        return None
    fs, path = storage.filesystem(uri)
    try:
        url = fs.sign(path, expiration=int(expiry_s))
    except NotImplementedError:
        return None
    except Exception as exc:  # noqa: BLE001 - the provider's own error type varies
        raise StorageError(
            f"{storage.redact(uri)}: cannot make a share link ({storage.redact_text(str(exc))})"
        ) from None
    return str(url)


def expiry_time(expiry_s: int) -> str:
    """When links made now with ``expiry_s`` stop working (UTC, ISO 8601)."""
    return (datetime.now(UTC) + timedelta(seconds=expiry_s)).isoformat(timespec="seconds")
