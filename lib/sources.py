"""Finding the images a run works on.

A *source* is one string the user gives. :func:`discover` accepts:

- a local folder (walked recursively; hidden files and folders skipped),
- a glob (``photos/*.jpg``, ``s3://bucket/shoot/**/*.png``),
- a single image or video file (local or a URL),
- an S3 prefix or any fsspec folder URL (``s3://bucket/prefix``, ``memory://in``),
- a list file (``.txt``, ``.lst``, ``.list``): one path or URL per line, ``#`` comments
  and blank lines ignored, relative paths relative to the list file,
- a ``.zip`` archive (local or remote), whose members are read in place through chained
  ``zip://member::<zip uri>`` URLs and never extracted.

Videos (:data:`VIDEO_EXTENSIONS`: mp4, mov, mkv, webm, avi) are found beside images in
every kind of source and become items the same way; the phases tell them apart by name
(:func:`is_video_name`).

Every found image becomes a :class:`SourceItem` whose ``uri`` opens with
:func:`retouch.lib.storage.read_bytes` and whose ``name`` is its path relative to the source
root with ``/`` separators (used for output names and mask lookup). Anything passed over is
listed in :attr:`Discovery.skipped` with the reason, so a user can see why a file was left out.
"""

from __future__ import annotations

import glob as globmod
import os
import posixpath
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any

from retouch.lib import storage
from retouch.lib.errors import SourceError, StorageError
from retouch.lib.settings import get_settings
from retouch.lib.video import VIDEO_EXTENSIONS

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "jpe", "png", "webp", "tif", "tiff", "bmp", "gif"})
LIST_EXTENSIONS = frozenset({"txt", "lst", "list"})
ARCHIVE_EXTENSIONS = frozenset({"zip"})

_GLOB_CHARS = re.compile(r"[*?\[]")
_DRIVE = re.compile(r"^[A-Za-z]:")
# Folders that archivers and operating systems add beside real content.
_JUNK_FOLDERS = {"__MACOSX"}


@dataclass(frozen=True)
class SourceItem:
    """One input image: ``uri`` to read it, ``name`` relative to the source root ('/'-separated),
    ``size`` in bytes when the listing told it."""

    uri: str
    name: str
    size: int | None


@dataclass
class Discovery:
    """The images found (sorted by name) and the ``(uri, reason)`` of everything skipped."""

    items: list[SourceItem] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def extension(name: str) -> str:
    """The lower-case extension of a file name without the dot ('' when there is none)."""
    base = name.rsplit("/", 1)[-1]
    if "." not in base.lstrip("."):
        return ""
    return base.rsplit(".", 1)[-1].lower()


def is_image_name(name: str) -> bool:
    """True when ``name`` has one of the accepted image extensions (case-insensitive)."""
    return extension(name) in IMAGE_EXTENSIONS


def is_video_name(name: str) -> bool:
    """True when ``name`` has one of the accepted video extensions (case-insensitive)."""
    return extension(name) in VIDEO_EXTENSIONS


def _extension_reason(name: str) -> str | None:
    if is_image_name(name) or is_video_name(name):
        return None
    ext = extension(name)
    return f"not an image file extension ({'.' + ext if ext else 'none'})"


def _hidden_reason(parts: list[str]) -> str | None:
    for part in parts:
        if part.startswith("."):
            return "hidden"
        if part in _JUNK_FOLDERS:
            return "archiver metadata folder"
    return None


def discover(source: str, *, follow_symlinks: bool = False, recursive: bool = True) -> Discovery:
    """List the images of ``source`` (see the module docstring for the kinds accepted).

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
    if not source.strip():
        raise SourceError("the source is empty: give a folder, file, glob, list file, .zip or URL")
    # A path that exists is taken as it is, even when its name has glob characters
    # ("[2024] wedding/" is a folder, not a character class).
    is_glob = "::" not in source and _GLOB_CHARS.search(_path_part(source))
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


def _path_part(uri: str) -> str:
    return uri.split("://", 1)[1] if "://" in uri else uri


def _missing(source: str) -> SourceError:
    return SourceError(f"{storage.redact(source)}: no such file, folder or prefix")


# -- single files ------------------------------------------------------------------------------


def _from_file(uri: str, name: str, size: int | None, recursive: bool) -> Discovery:
    ext = extension(name)
    if ext in IMAGE_EXTENSIONS or ext in VIDEO_EXTENSIONS:
        return Discovery([SourceItem(uri, name, size)], [])
    if ext in LIST_EXTENSIONS:
        return _from_list(uri)
    if ext in ARCHIVE_EXTENSIONS:
        return _from_zip(uri, recursive)
    return Discovery(
        [],
        [
            (
                uri,
                f"{_extension_reason(name)}: a source is a folder, image, video, list file "
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
    raise _missing(source)


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
            reason = _extension_reason(f) or _local_file_reason(full, real_root, follow)
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
        raise _missing(source)
    if info.get("type") != "directory":
        name = posixpath.basename(_path_part(source.split("::", 1)[0]).rstrip("/"))
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
        hidden = _hidden_reason(parts)
        if hidden:
            cut = next(i for i, p in enumerate(parts) if p.startswith(".") or p in _JUNK_FOLDERS)
            key = prefix + "/".join(parts[: cut + 1])
            if key not in hidden_reported:
                hidden_reported.add(key)
                out.skipped.append((fs.unstrip_protocol(key), hidden))
            continue
        uri = fs.unstrip_protocol(path)
        reason = _extension_reason(rel)
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
            raise _missing(source)
        real_root = os.path.realpath(root)
        for full in sorted(globmod.glob(pattern, recursive=True)):
            if os.path.isdir(full):
                continue
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            reason = (
                _hidden_reason(rel.split("/"))
                or _extension_reason(rel)
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
        raise _missing(source)
    prefix = root.rstrip("/") + "/" if root else ""
    for path in sorted(found):
        if found[path].get("type") != "file":
            continue
        rel = path[len(prefix) :] if path.startswith(prefix) else posixpath.basename(path)
        uri = fs.unstrip_protocol(path)
        reason = _hidden_reason(rel.split("/")) or _extension_reason(rel)
        if reason:
            out.skipped.append((uri, reason))
        else:
            out.items.append(SourceItem(uri, rel, found[path].get("size")))
    return out


# -- list files ------------------------------------------------------------------------------------


def _resolve_entry(entry: str, list_uri: str) -> tuple[str, str]:
    """The URI an entry of a list file names, and its item name."""
    if "://" in entry or storage.is_chained(entry):
        head = _path_part(entry.split("::", 1)[0])
        return entry, posixpath.basename(head.rstrip("/"))
    entry = os.path.expanduser(entry)
    list_local = storage.local_path(list_uri)
    if os.path.isabs(entry):
        return os.path.normpath(entry), os.path.basename(entry)
    rel = posixpath.normpath(entry.replace(os.sep, "/"))
    # An entry below the list's folder keeps its relative path as name (so sub-folders
    # survive into output names); one reaching outside it is named by its file name only.
    name = posixpath.basename(rel) if rel == ".." or rel.startswith("../") else rel
    if list_local is not None:
        return os.path.normpath(os.path.join(os.path.dirname(list_local), entry)), name
    head, sep, tail = list_uri.partition("::")
    proto, _, path = head.partition("://")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), rel))
    return f"{proto}://{joined}{sep}{tail}", name


def _from_list(list_uri: str) -> Discovery:
    """The images a list file names.

    Every entry with an image name becomes an item, found or not: a listed image that
    cannot be read is that image's failure (reported with the reason when it is read),
    never a silent skip. Remote entries are not looked up here, so a slow or silent server
    costs its own images' time, once, and not the listing's.
    """
    data = storage.read_bytes(list_uri, max_bytes=get_settings().max_file_bytes)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SourceError(
            f"{storage.redact(list_uri)}: a list file must be UTF-8 text with one path or URL per line"
        ) from None
    out = Discovery()
    seen: dict[str, int] = {}
    label = storage.redact(list_uri)
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        uri, name = _resolve_entry(line, list_uri)
        where = f"line {lineno} of {label}"
        if uri in seen:
            out.skipped.append((uri, f"listed again on {where} (first on line {seen[uri]})"))
            continue
        seen[uri] = lineno
        local = storage.local_path(uri)
        if local is not None and os.path.isdir(local):
            out.skipped.append((uri, f"is a folder; a list file names image files ({where})"))
        elif reason := _extension_reason(name):
            if local is None and _is_remote_folder(uri):
                reason = "is a folder; a list file names image files"
            out.skipped.append((uri, f"{reason} ({where})"))
        else:
            size = os.path.getsize(local) if local is not None and os.path.isfile(local) else None
            out.items.append(SourceItem(uri, name, size))
    _disambiguate(out.items)
    return out


def _is_remote_folder(uri: str) -> bool:
    # Only asked for names that are not images anyway (an S3 prefix listed by mistake), so a
    # failed look-up changes nothing but the wording. HTTP has no folders.
    if storage.is_chained(uri) or uri.lower().startswith(("http://", "https://")):
        return False
    try:
        found = storage.info(uri)
    except StorageError:
        return False
    return found is not None and found.get("type") == "directory"


def _disambiguate(items: list[SourceItem]) -> None:
    # Two listed files with the same name (a/x.jpg and b/x.jpg given by absolute path)
    # would share output names and records; give those the fuller path instead.
    counts: dict[str, int] = {}
    for item in items:
        counts[item.name.casefold()] = counts.get(item.name.casefold(), 0) + 1
    for i, item in enumerate(items):
        if counts[item.name.casefold()] > 1:
            head = item.uri.split("::", 1)[0]
            full = _path_part(head) if "://" in head else head.replace(os.sep, "/")
            items[i] = SourceItem(item.uri, full.strip("/"), item.size)


# -- ZIP archives ------------------------------------------------------------------------------------


def _unsafe_member(name: str) -> str | None:
    if "\x00" in name or any(ord(c) < 32 for c in name):
        return "unsafe member name (control characters): not read"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "unsafe member name (absolute path): not read"
    if "\\" in name:
        return "unsafe member name (backslash): not read"
    if ".." in name.split("/"):
        return "unsafe member name (climbs out with '..'): not read"
    if "::" in name:
        return "member name contains '::', which cannot be addressed: not read"
    return None


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = (info.external_attr >> 16) & 0o170000
    return mode == 0o120000


def _from_zip(zip_uri: str, recursive: bool) -> Discovery:
    def listing() -> list[zipfile.ZipInfo] | str:
        fs, path = storage.filesystem(zip_uri)
        with fs.open(path, "rb") as fh:
            try:
                with zipfile.ZipFile(fh) as zf:
                    return zf.infolist()
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
                return str(exc) or type(exc).__name__

    infos = storage.retrying(listing, what="read archive", uri=zip_uri)
    if isinstance(infos, str):
        raise SourceError(f"{storage.redact(zip_uri)}: not a readable ZIP archive ({infos})")
    out = Discovery()
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        uri = f"zip://{name}::{zip_uri}"
        if info.is_dir():
            continue
        reason = _unsafe_member(name)
        if reason is None and _is_symlink(info):
            reason = "symbolic link inside the archive: not read"
        if reason is None and info.flag_bits & 0x1:
            reason = "encrypted member: not read"
        if reason is None:
            reason = _hidden_reason(name.split("/"))
        if reason is None and not recursive and "/" in name:
            continue
        if reason is None:
            reason = _extension_reason(name)
        if reason is None and name in seen:
            reason = "duplicate member name in the archive"
        if reason:
            out.skipped.append((uri, reason))
            continue
        seen.add(name)
        out.items.append(SourceItem(uri, name, info.file_size))
    return out
