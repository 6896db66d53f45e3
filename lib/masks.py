"""Inpainting masks matched to images by file stem, from a folder on any fsspec storage."""

from __future__ import annotations

import threading
from pathlib import PurePosixPath

import numpy as np

from . import storage
from .imageio import decode


class MaskSource:
    """Looks up ``<folder>/<stem>.<image ext>``; the folder is listed once, on first use.

    Calling it returns the mask as HxW uint8 (255 = fill; colour masks are reduced by their
    brightest channel) or None when the folder has no mask for that stem.
    """

    def __init__(self, folder: str, pixel_limit: int):
        self.folder = folder
        self.pixel_limit = pixel_limit
        self._lock = threading.Lock()
        self._index: dict[str, str] | None = None

    def _build_index(self) -> dict[str, str]:
        from .sources import discover

        return {PurePosixPath(item.name).stem: item.uri for item in discover(self.folder).items}

    def __call__(self, stem: str) -> np.ndarray | None:
        with self._lock:
            if self._index is None:
                self._index = self._build_index()
        uri = self._index.get(stem)
        if uri is None:
            return None
        mask = decode(storage.read_bytes(uri), uri, pixel_limit=self.pixel_limit)
        gray = mask.to_uint8()[:, :, 0] if mask.is_gray else mask.to_uint8().max(axis=2)
        return np.ascontiguousarray(gray)


_sources: dict[tuple[str, int], MaskSource] = {}
_sources_lock = threading.Lock()


def mask_source(folder: str, pixel_limit: int) -> MaskSource:
    """One shared source per folder in this process (so the folder is listed once)."""
    with _sources_lock:
        key = (folder, pixel_limit)
        if key not in _sources:
            _sources[key] = MaskSource(folder, pixel_limit)
        return _sources[key]
