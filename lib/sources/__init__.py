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

Listing lives in :mod:`.discovery` (folders, prefixes, globs, single files), list files and
ZIP archives in :mod:`.containers`, the item types and name rules in :mod:`.items`.
"""

from __future__ import annotations

from retouch.lib.sources.discovery import discover, hand_over
from retouch.lib.sources.items import (
    ARCHIVE_EXTENSIONS,
    IMAGE_EXTENSIONS,
    LIST_EXTENSIONS,
    Discovery,
    SourceItem,
    extension,
    is_image_name,
    is_video_name,
)

__all__ = [
    "ARCHIVE_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "LIST_EXTENSIONS",
    "Discovery",
    "SourceItem",
    "discover",
    "hand_over",
    "extension",
    "is_image_name",
    "is_video_name",
]
