"""Inpainting masks matched to images: a folder (or one file) on any fsspec storage, or
files kept beside the images.

Every lookup returns HxW uint8 with 255 = fill (0 = keep), or None when there is no mask:

- A mask with an alpha channel that is not all opaque is its alpha (an RGBA PNG drawn as
  "transparent = keep, painted = remove"); otherwise its brightest channel (colour, gray,
  palette and 16-bit masks alike, 16 bits reduced to 8).
- The operation resizes the mask to its image (nearest neighbour) and thresholds it
  (> 127 = fill).

A mask that is a video (by its extension, e.g. ``masks/party.mp4`` for ``shoot/party.mp4``)
gives each frame of a clip its own mask (:mod:`retouch.lib.video.masks`); it is found the
same way, and given to an image it is an error (:func:`video_mask_for_image`).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import PurePosixPath

import numpy as np

from retouch.lib import storage
from retouch.lib.errors import InvalidImageError, OperationError
from retouch.lib.imageio import decode
from retouch.lib.sources.items import is_video_name

BESIDE_SUFFIX = "_mask"
"""A file ``<stem>_mask*.png`` beside the image ``<stem>.<ext>`` is that image's mask."""


def video_mask_for_image(name: str, uri: str) -> OperationError:
    """The error of an image whose mask is a video."""
    return OperationError(
        f"{name}: its inpaint mask {uri} is a video; a mask video masks the frames of a "
        "video clip, an image needs a mask image (PNG, white = remove)"
    )


def mask_plane(data: bytes, uri: str, pixel_limit: int) -> np.ndarray:
    """The mask in the file bytes ``data`` as HxW uint8 (255 = fill); see the module
    docstring. Raises OperationError naming ``uri`` when the file is not a usable image."""
    try:
        mask = decode(data, uri, pixel_limit=pixel_limit)
    except InvalidImageError as exc:
        raise OperationError(f"inpaint mask {uri} is unreadable: {exc.reason}") from None
    if mask.alpha is not None:
        alpha = mask.alpha
        top = 65535 if alpha.dtype == np.uint16 else 255
        if int(alpha.min()) < top:
            if alpha.dtype == np.uint16:
                alpha = (alpha >> 8).astype(np.uint8)
            return np.ascontiguousarray(alpha)
    gray = mask.to_uint8()[:, :, 0] if mask.is_gray else mask.to_uint8().max(axis=2)
    return np.ascontiguousarray(gray)


class MaskSource:
    """Finds the mask of an image in ``folder``, listing the folder once (on first use).

    An image ``shoot/a/x.jpg`` (its name relative to the source) takes the mask
    ``shoot/a/x.<any image extension>`` when the folder mirrors the source tree, else the
    mask whose file stem is ``x``. When ``folder`` is one image file, that file is the mask
    of every image. Masks come back as HxW uint8 (255 = fill; see :func:`mask_plane`), or
    None when there is none. Make one per run, so that masks added between runs are seen.
    """

    def __init__(self, folder: str, pixel_limit: int):
        self.folder = folder
        self.pixel_limit = pixel_limit
        self._lock = threading.Lock()
        self._by_path: dict[str, str] | None = None
        self._by_stem: dict[str, str] = {}
        self._single: str | None = None
        self._digests: dict[str, str] = {}

    def _is_file(self) -> bool:
        local = storage.local_path(self.folder)
        if local is not None:
            return os.path.isfile(local)
        found = storage.info(self.folder)
        return found is not None and found.get("type") == "file"

    def _index(self) -> dict[str, str]:
        from retouch.lib.sources import discover

        with self._lock:
            if self._by_path is None:
                by_path: dict[str, str] = {}
                found = discover(self.folder)
                if self._is_file() and len(found.items) == 1:
                    self._single = found.items[0].uri
                for item in found.items:  # sorted: the first of equal stems wins
                    rel = PurePosixPath(item.name)
                    by_path.setdefault(str(rel.with_suffix("")), item.uri)
                    self._by_stem.setdefault(rel.stem, item.uri)
                self._by_path = by_path
            return self._by_path

    def uri_for(self, name: str) -> str | None:
        """The mask URI for the image named ``name`` (relative path or bare stem), or None."""
        rel = PurePosixPath(name)
        by_path = self._index()
        if self._single is not None:
            return self._single
        return by_path.get(str(rel.with_suffix(""))) or self._by_stem.get(rel.stem)

    def __call__(self, name: str) -> np.ndarray | None:
        """The mask image of the image ``name``; raises OperationError when its mask is a
        video (read those with :class:`retouch.lib.video.masks.MaskVideo`)."""
        uri = self.uri_for(name)
        if uri is None:
            return None
        if is_video_name(uri):
            raise video_mask_for_image(name, uri)
        return mask_plane(storage.read_bytes(uri), uri, self.pixel_limit)

    def digest(self, uri: str) -> str:
        """The sha256 of the mask file at ``uri``, read once per instance (a mask video's
        identity in a clip's result keys)."""
        from retouch.lib.settings import get_settings
        from retouch.lib.video.masks import video_sha256

        with self._lock:
            known = self._digests.get(uri)
        if known is None:
            known = video_sha256(uri, get_settings().max_video_bytes)
            with self._lock:
                self._digests[uri] = known
        return known


def beside_pattern(stem: str) -> re.Pattern[str]:
    """File names that are the mask of the image with stem ``stem`` in the same folder."""
    return re.compile(re.escape(stem + BESIDE_SUFFIX) + r".*\.png", re.IGNORECASE)


def _split_uri(uri: str) -> tuple[str, str] | None:
    """(folder, file name) of an image URI, or None where masks cannot sit beside it
    (a member of an archive, an HTTP URL)."""
    if storage.is_chained(uri) or uri.startswith(("http://", "https://")):
        return None
    local = storage.local_path(uri)
    if local is not None:
        return os.path.dirname(local) or ".", os.path.basename(local)
    folder, _, base = uri.rpartition("/")
    return (folder, base) if folder and base else None


class BesideMasks:
    """Finds masks kept beside their images: ``<stem>_mask*.png`` in the image's folder
    (the first in name order when there are several). Each folder is listed once per
    instance (make one per run). Called with the image's URI; same return as
    :class:`MaskSource`."""

    def __init__(self, pixel_limit: int):
        self.pixel_limit = pixel_limit
        self._lock = threading.Lock()
        self._folders: dict[str, list[str]] = {}

    def _names(self, folder: str) -> list[str]:
        with self._lock:
            known = self._folders.get(folder)
            if known is not None:
                return known
            local = storage.local_path(folder)
            if local is not None:
                try:
                    names = sorted(os.listdir(local))
                except OSError:
                    names = []
            else:
                fs, path = storage.filesystem(folder)
                listed = storage.retrying(
                    lambda: fs.ls(path, detail=False), what="list", uri=folder
                )
                names = sorted(PurePosixPath(str(p)).name for p in listed)
            self._folders[folder] = names
            return names

    def uri_for(self, image_uri: str) -> str | None:
        """The URI of the mask beside the image at ``image_uri``, or None."""
        split = _split_uri(image_uri)
        if split is None:
            return None
        folder, base = split
        pattern = beside_pattern(PurePosixPath(base).stem)
        for name in self._names(folder):
            if name != base and pattern.fullmatch(name):
                local = storage.local_path(folder)
                return os.path.join(local, name) if local is not None else f"{folder}/{name}"
        return None

    def __call__(self, image_uri: str) -> np.ndarray | None:
        uri = self.uri_for(image_uri)
        if uri is None:
            return None
        return mask_plane(storage.read_bytes(uri), uri, self.pixel_limit)


def masks_beside(names: list[str]) -> dict[str, str]:
    """Which of the source's relative ``names`` are masks kept beside another of them:
    ``{mask name: image name}`` (``a/x_mask.png`` when ``a/x.jpg`` is listed too)."""
    by_folder: dict[str, dict[str, str]] = {}
    for name in names:
        rel = PurePosixPath(name)
        by_folder.setdefault(str(rel.parent), {}).setdefault(rel.stem, name)
    out: dict[str, str] = {}
    for name in names:
        rel = PurePosixPath(name)
        low = rel.name.lower()
        if BESIDE_SUFFIX not in low or not low.endswith(".png"):
            continue
        stems = by_folder.get(str(rel.parent), {})
        cut = rel.name.lower().rfind(BESIDE_SUFFIX)
        while cut > 0:
            image = stems.get(rel.name[:cut])
            if image is not None and image != name:
                out[name] = image
                break
            cut = rel.name.lower().rfind(BESIDE_SUFFIX, 0, cut)
    return out
