"""Packing results into ZIPs and checking them afterwards.

An archive is built in a local temporary file, member by member (never the whole archive
in memory), then moved into place atomically: renamed when the destination is local,
uploaded in one piece (:func:`retouch.lib.storage.put_file`) otherwise. JPEG and WebP are
stored as they are (deflating them again costs time and saves nothing); PNG, TIFF and other
formats are deflated.

A delivery can be split into several ZIPs under a size limit (:func:`plan_parts`). Each
part is a complete archive of its own that any unzip tool opens alone; nothing is spanned
across parts, so a file larger than the limit gets a part to itself.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from typing import IO, Any, Literal

from retouch.lib import storage
from retouch.lib.delivery.naming import is_safe_name
from retouch.lib.errors import StorageError

STORED_EXTENSIONS = frozenset({"jpg", "jpeg", "jpe", "webp", "gif", "zip", "gz", "mp4"})
"""Extensions written with ZIP_STORED under ``compression="auto"``: their content is already
compressed with a method deflate cannot improve on."""

Compression = Literal["auto", "stored", "deflate"]

# Bytes a member adds besides its data: local header (30) + central entry (46) + both
# copies of the name + ZIP64 extras (up to 28 + 32) + a data descriptor (24).
_MEMBER_OVERHEAD = 30 + 46 + 28 + 32 + 24
_END_OVERHEAD = 22 + 56 + 20  # end of central directory, with the ZIP64 records

_CHUNK = 1 << 20


def _sha256_stream(fh: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: fh.read(_CHUNK), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str) -> str:
    """The hex sha256 of a local file, read in 1 MiB blocks."""
    with open(path, "rb") as fh:
        return _sha256_stream(fh)


def compression_for(arcname: str, compression: Compression = "auto") -> int:
    """The ZIP method of a member: ``auto`` stores already-compressed formats (JPEG, WebP,
    by extension) and deflates the rest; ``stored`` and ``deflate`` apply to every member."""
    if compression == "stored":
        return zipfile.ZIP_STORED
    if compression == "deflate":
        return zipfile.ZIP_DEFLATED
    ext = arcname.rsplit(".", 1)[-1].lower() if "." in arcname else ""
    return zipfile.ZIP_STORED if ext in STORED_EXTENSIONS else zipfile.ZIP_DEFLATED


def member_cost(arcname: str, size: int) -> int:
    """An upper bound of the bytes a member of ``size`` bytes adds to a ZIP.

    Deflate can make incompressible data slightly larger (5 bytes per 16 KiB block plus a
    little), so the bound holds whatever the compression.
    """
    return size + size // 1000 + 64 + _MEMBER_OVERHEAD + 2 * len(arcname.encode("utf-8"))


def plan_parts(members: list[tuple[str, int]], max_bytes: int) -> list[list[int]]:
    """Split members into parts whose ZIP stays under ``max_bytes``, keeping their order.

    Args:
        members: ``(arcname, size in bytes)`` in archive order.
        max_bytes: the largest archive wanted.

    Returns:
        The member positions of each part. A member that cannot fit under the limit even
        alone gets a part to itself (the caller reports it); no part is ever empty.
    """
    parts: list[list[int]] = []
    current: list[int] = []
    used = _END_OVERHEAD
    for i, (arcname, size) in enumerate(members):
        cost = member_cost(arcname, size)
        if current and used + cost > max_bytes:
            parts.append(current)
            current, used = [], _END_OVERHEAD
        current.append(i)
        used += cost
    if current:
        parts.append(current)
    return parts


def part_name(zip_name: str, number: int, count: int) -> str:
    """``results.zip`` -> ``results-part01.zip`` (digits enough for ``count``, at least 2)."""
    stem = zip_name[: -len(".zip")] if zip_name.lower().endswith(".zip") else zip_name
    width = max(2, len(str(count)))
    return f"{stem}-part{number:0{width}d}.zip"


def _check_members(members: list[tuple[str, str]], dest_uri: str) -> None:
    seen: set[str] = set()
    where = storage.redact(dest_uri)
    for arcname, path in members:
        if not is_safe_name(arcname):
            raise StorageError(
                f"{where}: refusing ZIP member name {arcname!r}: not a safe relative path "
                "(names come from retouch.lib.delivery.naming.render_names)"
            )
        if arcname.casefold() in seen:
            raise StorageError(
                f"{where}: ZIP member name {arcname!r} appears twice (ignoring case)"
            )
        seen.add(arcname.casefold())
        if not os.path.isfile(path):
            raise StorageError(f"{path}: not found (ZIP member {arcname!r} of {where})")


def _build(
    members: list[tuple[str, str]], target: str, compresslevel: int, compression: Compression
) -> dict[str, str]:
    hashes: dict[str, str] = {}
    # strict_timestamps=False: files dated before 1980 (cameras with an unset clock)
    # are stored with the earliest ZIP date instead of failing the archive.
    with zipfile.ZipFile(target, "w", allowZip64=True, strict_timestamps=False) as zf:
        for arcname, path in members:
            hashes[arcname] = sha256_file(path)
            method = compression_for(arcname, compression)
            zf.write(
                path,
                arcname,
                compress_type=method,
                compresslevel=compresslevel if method == zipfile.ZIP_DEFLATED else None,
            )
    return hashes


def write_zip(
    members: list[tuple[str, str]],
    dest_uri: str,
    *,
    compresslevel: int = 6,
    compression: Compression = "auto",
) -> dict[str, Any]:
    """Write a ZIP of local files to ``dest_uri`` atomically.

    Args:
        members: ``(arcname, local file path)`` pairs, in archive order. Arcnames must be
            safe relative names (as :func:`retouch.lib.delivery.naming.render_names` makes them) and
            unique ignoring case.
        dest_uri: local path or fsspec URL of the archive; any existing file is replaced.
        compresslevel: deflate level (0-9) for deflated members.
        compression: ``auto`` (JPEG/WebP stored, the rest deflated), ``stored`` or ``deflate``.

    Returns:
        ``{"uri", "size", "sha256", "count", "members"}``: the archive's URI, size in bytes and
        sha256, the member count, and ``{arcname: sha256 of the member}``.

    Raises:
        StorageError: an unsafe or duplicate name, a missing member file, or a failed write.
    """
    if not 0 <= compresslevel <= 9:
        raise StorageError(
            f"{storage.redact(dest_uri)}: compresslevel must be 0-9, not {compresslevel}"
        )
    _check_members(members, dest_uri)
    local = storage.local_path(dest_uri)
    if local is not None:
        try:
            with storage.atomic_local_file(local) as tmp:
                hashes = _build(members, tmp, compresslevel, compression)
                digest = sha256_file(tmp)
                size = os.path.getsize(tmp)
        except OSError as exc:
            raise StorageError(f"write {local} failed: {exc}") from exc
    else:
        with tempfile.TemporaryDirectory(prefix="retouch-zip-") as folder:
            tmp = os.path.join(folder, "archive.zip")
            hashes = _build(members, tmp, compresslevel, compression)
            digest = sha256_file(tmp)
            size = os.path.getsize(tmp)
            storage.put_file(tmp, dest_uri)
    return {
        "uri": dest_uri,
        "size": size,
        "sha256": digest,
        "count": len(members),
        "members": hashes,
    }


def verify_zip(uri: str, expected: dict[str, str]) -> list[str]:
    """Re-read the ZIP at ``uri`` and compare it with ``expected`` (``{arcname: sha256}``).

    Every member is decompressed (so CRCs are checked) and hashed. Returns a list of
    problems in plain words: missing or unexpected members, wrong content, unsafe names,
    an unreadable archive. An empty list means the archive is exactly as expected.

    Raises:
        StorageError: reading failed after retries (a missing archive is a problem, not
            an error).
    """

    def check() -> list[str]:
        fs, path = storage.filesystem(uri)
        with fs.open(path, "rb") as fh:
            return _check_archive(fh, expected)

    where = storage.redact(uri)
    try:
        problems = storage.retrying(check, what="verify", uri=uri)
    except StorageError as exc:
        if "not found" in str(exc):
            return [f"{where}: archive not found"]
        raise
    return [f"{where}: {p}" for p in problems]


def _check_archive(fh: IO[bytes], expected: dict[str, str]) -> list[str]:
    problems: list[str] = []
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        return [f"not a readable ZIP archive ({exc})"]
    with zf:
        names = [info.filename for info in zf.infolist()]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                problems.append(f"member {name!r} appears twice")
            seen.add(name)
            if not is_safe_name(name):
                problems.append(f"member name {name!r} is not a safe relative path")
        for name in sorted(set(expected) - seen):
            problems.append(f"member {name!r} is missing")
        for name in sorted(seen - set(expected)):
            problems.append(f"unexpected member {name!r}")
        for name in sorted(seen & set(expected)):
            try:
                with zf.open(name) as member:
                    actual = _sha256_stream(member)
            except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:
                problems.append(f"member {name!r} cannot be read ({exc})")
                continue
            if actual != expected[name]:
                problems.append(
                    f"member {name!r} has sha256 {actual[:12]}..., expected {expected[name][:12]}..."
                )
    return problems
