"""What a source yields (:class:`SourceItem`, :class:`Discovery`) and how a found name is
judged: image, video, list or archive extension, hidden or archiver metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

from retouch.lib import storage
from retouch.lib.errors import SourceError
from retouch.lib.video import VIDEO_EXTENSIONS

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "jpe", "png", "webp", "tif", "tiff", "bmp", "gif"})
LIST_EXTENSIONS = frozenset({"txt", "lst", "list"})
ARCHIVE_EXTENSIONS = frozenset({"zip"})

# Folders that archivers and operating systems add beside real content.
JUNK_FOLDERS = {"__MACOSX"}


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


def extension_reason(name: str) -> str | None:
    if is_image_name(name) or is_video_name(name):
        return None
    ext = extension(name)
    return f"not an image file extension ({'.' + ext if ext else 'none'})"


def hidden_reason(parts: list[str]) -> str | None:
    for part in parts:
        if part.startswith("."):
            return "hidden"
        if part in JUNK_FOLDERS:
            return "archiver metadata folder"
    return None


def path_part(uri: str) -> str:
    return uri.split("://", 1)[1] if "://" in uri else uri


def missing_source(source: str) -> SourceError:
    return SourceError(f"{storage.redact(source)}: no such file, folder or prefix")
