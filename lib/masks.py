"""Inpainting masks matched to images, from a folder on any fsspec storage."""

from __future__ import annotations

import threading
from pathlib import PurePosixPath

import numpy as np

from . import storage
from .imageio import decode


class MaskSource:
    """Finds the mask of an image in ``folder``, listing the folder once (on first use).

    An image ``shoot/a/x.jpg`` (its name relative to the source) takes the mask
    ``shoot/a/x.<any image extension>`` when the folder mirrors the source tree, else the
    mask whose file stem is ``x``. Masks come back as HxW uint8 (255 = fill; colour masks
    are reduced by their brightest channel), or None when there is none. Make one per run,
    so that masks added between runs are seen.
    """

    def __init__(self, folder: str, pixel_limit: int):
        self.folder = folder
        self.pixel_limit = pixel_limit
        self._lock = threading.Lock()
        self._by_path: dict[str, str] | None = None
        self._by_stem: dict[str, str] = {}

    def _index(self) -> dict[str, str]:
        from .sources import discover

        with self._lock:
            if self._by_path is None:
                by_path: dict[str, str] = {}
                for item in discover(self.folder).items:  # sorted: the first of equal stems wins
                    rel = PurePosixPath(item.name)
                    by_path.setdefault(str(rel.with_suffix("")), item.uri)
                    self._by_stem.setdefault(rel.stem, item.uri)
                self._by_path = by_path
            return self._by_path

    def uri_for(self, name: str) -> str | None:
        """The mask URI for the image named ``name`` (relative path or bare stem), or None."""
        rel = PurePosixPath(name)
        by_path = self._index()
        return by_path.get(str(rel.with_suffix(""))) or self._by_stem.get(rel.stem)

    def __call__(self, name: str) -> np.ndarray | None:
        uri = self.uri_for(name)
        if uri is None:
            return None
        mask = decode(storage.read_bytes(uri), uri, pixel_limit=self.pixel_limit)
        gray = mask.to_uint8()[:, :, 0] if mask.is_gray else mask.to_uint8().max(axis=2)
        return np.ascontiguousarray(gray)
