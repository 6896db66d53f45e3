"""Listing a source: local folders, remote folders and prefixes, globs and single files;
list files and archives are read by :mod:`retouch.lib.sources.containers`."""

from __future__ import annotations

import glob as globmod
import os
import posixpath
import re
import threading
from typing import Any

from retouch.lib import storage
from retouch.lib.errors import SourceError
from retouch.lib.sources.containers import from_list, from_zip
from retouch.lib.sources.items import (
    ARCHIVE_EXTENSIONS,
    IMAGE_EXTENSIONS,
    JUNK_FOLDERS,
    LIST_EXTENSIONS,
    Discovery,
    SourceItem,
    extension,
    extension_reason,
    hidden_reason,
    missing_source,
    path_part,
)
from retouch.lib.video import VIDEO_EXTENSIONS

_GLOB_CHARS = re.compile(r"[*?\[]")


# Listings handed from a caller that already made one (``retouch run`` lists the source to
# check it before Prefect starts) to the run that follows in the same process, so a run
# lists its source once. Each is taken once: any later listing of the source is fresh.
_handed: dict[tuple[str, bool, bool], Discovery] = {}
_handed_lock = threading.Lock()


def hand_over(
    source: str, found: Discovery, *, follow_symlinks: bool = False, recursive: bool = True
) -> None:
    """Let the next :func:`discover` of ``source`` with the same options in this process
    return ``found`` instead of listing the source again."""
    with _handed_lock:
        _handed[(os.fspath(source), follow_symlinks, recursive)] = found


def discover(source: str, *, follow_symlinks: bool = False, recursive: bool = True) -> Discovery:
    """List the images of ``source`` (see :mod:`retouch.lib.sources` for the kinds accepted).

    Args:
        source: local path, glob, fsspec URL, list file or ZIP archive.
        follow_symlinks: include symlinks (files and folders) pointing outside a local
            source folder; by default they are skipped with a reason.
        recursive: descend into sub-folders (folders, prefixes and archives).

    Returns:
        The items sorted by name (then URI) and the skipped ``(uri, reason)`` pairs. An
        existing source holding no image gives empty ``items``; the caller decides whether
        that is an error.

    Raises:
        SourceError: the source does not exist, or is an unreadable list or archive.
        StorageError: listing failed after retries.
    """
    source = os.fspath(source)
    with _handed_lock:
        handed = _handed.pop((source, follow_symlinks, recursive), None)
    if handed is not None:
        return handed
    if not source.strip():
        raise SourceError("the source is empty: give a folder, file, glob, list file, .zip or URL")
    # A path that exists is taken as it is, even when its name has glob characters
    # ("[2024] wedding/" is a folder, not a character class).
    is_glob = "::" not in source and _GLOB_CHARS.search(path_part(source))
    if is_glob and not storage.exists(source):
        found = _from_glob(source, follow_symlinks)
    else:
        path = storage.local_path(source)
        found = (
            _from_local(source, path, follow_symlinks, recursive)
            if path is not None
            else _from_remote(source, recursive)
        )
    found.items.sort(key=lambda item: (item.name, item.uri))
    return found


# -- single files ------------------------------------------------------------------------------


def _from_file(uri: str, name: str, size: int | None, recursive: bool) -> Discovery:
    ext = extension(name)
    if ext in IMAGE_EXTENSIONS or ext in VIDEO_EXTENSIONS:
        return Discovery([SourceItem(uri, name, size)], [])
    if ext in LIST_EXTENSIONS:
        return from_list(uri)
    if ext in ARCHIVE_EXTENSIONS:
        return from_zip(uri, recursive)
    return Discovery(
        [],
        [
            (
                uri,
                f"{extension_reason(name)}: a source is a folder, image, video, list file "
                "(.txt, .lst, .list) or .zip",
            )
        ],
    )


# -- local folders -------------------------------------------------------------------------------


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def _from_local(source: str, path: str, follow: bool, recursive: bool) -> Discovery:
    abspath = os.path.abspath(path)
    if os.path.isdir(abspath):
        return _walk_local(abspath, follow, recursive)
    if os.path.isfile(abspath):
        return _from_file(abspath, os.path.basename(abspath), os.path.getsize(abspath), recursive)
    if os.path.lexists(abspath):
        raise SourceError(f"{source}: is a broken symlink or not a regular file")
    raise missing_source(source)


def _local_file_reason(full: str, real_root: str, follow: bool) -> str | None:
    if os.path.islink(full):
        if not os.path.exists(full):
            return "broken symlink"
        if not follow and not _inside(os.path.realpath(full), real_root):
            return (
                "symlink to a file outside the source folder (pass follow_symlinks to include it)"
            )
    if not os.path.isfile(full):
        return "not a regular file"
    return None


def _walk_local(root: str, follow: bool, recursive: bool) -> Discovery:
    out = Discovery()
    real_root = os.path.realpath(root)
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            # A followed symlink leading back to a folder already listed (a loop or a
            # second route): listing it again would duplicate every image under it.
            out.skipped.append((dirpath, "folder already listed through another path"))
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        kept = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if d.startswith("."):
                out.skipped.append((full, "hidden folder"))
            elif os.path.islink(full) and not follow:
                out.skipped.append(
                    (full, "symlinked folder not followed (pass follow_symlinks to include it)")
                )
            else:
                kept.append(d)
        dirnames[:] = kept if recursive else []
        for f in sorted(filenames):
            full = os.path.join(dirpath, f)
            if f.startswith("."):
                out.skipped.append((full, "hidden file"))
                continue
            reason = extension_reason(f) or _local_file_reason(full, real_root, follow)
            if reason:
                out.skipped.append((full, reason))
                continue
            name = os.path.relpath(full, root).replace(os.sep, "/")
            out.items.append(SourceItem(full, name, os.path.getsize(full)))
    return out


# -- remote folders and single remote files --------------------------------------------------------


def _info_or_none(uri: str) -> dict[str, Any] | None:
    return storage.info(uri)


def _from_remote(source: str, recursive: bool) -> Discovery:
    info = _info_or_none(source)
    if info is None:
        raise missing_source(source)
    if info.get("type") != "directory":
        name = posixpath.basename(path_part(source.split("::", 1)[0]).rstrip("/"))
        return _from_file(source, name, info.get("size"), recursive)

    def listing() -> tuple[Any, str, dict[str, dict[str, Any]]]:
        fs, path = storage.filesystem(source)
        if recursive:
            entries = fs.find(path, detail=True, withdirs=False)
        else:
            entries = {e["name"]: e for e in fs.ls(path, detail=True)}
        return fs, path, entries

    fs, root, entries = storage.retrying(listing, what="list", uri=source)
    out = Discovery()
    hidden_reported: set[str] = set()
    prefix = root.rstrip("/") + "/"
    for path in sorted(entries):
        entry = entries[path]
        if entry.get("type") != "file" or not path.startswith(prefix):
            continue
        rel = path[len(prefix) :]
        parts = rel.split("/")
        hidden = hidden_reason(parts)
        if hidden:
            cut = next(i for i, p in enumerate(parts) if p.startswith(".") or p in JUNK_FOLDERS)
            key = prefix + "/".join(parts[: cut + 1])
            if key not in hidden_reported:
                hidden_reported.add(key)
                out.skipped.append((fs.unstrip_protocol(key), hidden))
            continue
        uri = fs.unstrip_protocol(path)
        reason = extension_reason(rel)
        if reason:
            out.skipped.append((uri, reason))
            continue
        out.items.append(SourceItem(uri, rel, entry.get("size")))
    return out


# -- globs ---------------------------------------------------------------------------------------


def _glob_root(path: str) -> str:
    parts = path.split("/")
    fixed = []
    for part in parts:
        if _GLOB_CHARS.search(part):
            break
        fixed.append(part)
    return "/".join(fixed)


def _from_glob(source: str, follow: bool) -> Discovery:
    out = Discovery()
    local = storage.local_path(source)
    if local is not None:
        pattern = os.path.abspath(local)
        root = _glob_root(pattern.replace(os.sep, "/")) or "/"
        if not os.path.isdir(root):
            raise missing_source(source)
        real_root = os.path.realpath(root)
        for full in sorted(globmod.glob(pattern, recursive=True)):
            if os.path.isdir(full):
                continue
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            reason = (
                hidden_reason(rel.split("/"))
                or extension_reason(rel)
                or _local_file_reason(full, real_root, follow)
            )
            if reason:
                out.skipped.append((full, reason))
            else:
                out.items.append(SourceItem(full, rel, os.path.getsize(full)))
        return out

    def matches() -> tuple[Any, str, dict[str, dict[str, Any]]]:
        fs, path = storage.filesystem(source)
        root = _glob_root(path)
        fs.invalidate_cache(root)
        return fs, root, fs.glob(path, detail=True)

    fs, root, found = storage.retrying(matches, what="list", uri=source)
    if not found and _info_or_none(fs.unstrip_protocol(root)) is None:
        raise missing_source(source)
    prefix = root.rstrip("/") + "/" if root else ""
    for path in sorted(found):
        if found[path].get("type") != "file":
            continue
        rel = path[len(prefix) :] if path.startswith(prefix) else posixpath.basename(path)
        uri = fs.unstrip_protocol(path)
        reason = hidden_reason(rel.split("/")) or extension_reason(rel)
        if reason:
            out.skipped.append((uri, reason))
        else:
            out.items.append(SourceItem(uri, rel, found[path].get("size")))
    return out
