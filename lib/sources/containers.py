"""Sources that name other files: list files (one path or URL per line) and ZIP archives,
whose members are read in place and never extracted."""

from __future__ import annotations

import os
import posixpath
import re
import zipfile

from retouch.lib import storage
from retouch.lib.errors import SourceError, StorageError
from retouch.lib.settings import get_settings
from retouch.lib.sources.items import (
    Discovery,
    SourceItem,
    extension_reason,
    hidden_reason,
    path_part,
)

_DRIVE = re.compile(r"^[A-Za-z]:")


# -- list files ------------------------------------------------------------------------------------


def _resolve_entry(entry: str, list_uri: str) -> tuple[str, str]:
    """The URI an entry of a list file names, and its item name."""
    if "://" in entry or storage.is_chained(entry):
        head = path_part(entry.split("::", 1)[0])
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


def from_list(list_uri: str) -> Discovery:
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
        elif reason := extension_reason(name):
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
            full = path_part(head) if "://" in head else head.replace(os.sep, "/")
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


def from_zip(zip_uri: str, recursive: bool) -> Discovery:
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
            reason = hidden_reason(name.split("/"))
        if reason is None and not recursive and "/" in name:
            continue
        if reason is None:
            reason = extension_reason(name)
        if reason is None and name in seen:
            reason = "duplicate member name in the archive"
        if reason:
            out.skipped.append((uri, reason))
            continue
        seen.add(name)
        out.items.append(SourceItem(uri, name, info.file_size))
    return out
