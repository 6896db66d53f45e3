"""The workspace: content-addressed results and per-run records, on any fsspec storage.

Layout under the workspace root::

    results/<k[:2]>/<key>.png    result pixels (lossless PNG: 16-bit, alpha and gray kept)
    results/<k[:2]>/<key>.mp4    a video result (the encoded file; .mov/.mkv/.webm too),
                                 named by the sidecar's ``media``
    results/<k[:2]>/<key>.json   metadata sidecar, written last: its presence commits the result;
                                 it also holds ``created`` and ``last_used`` (epoch seconds)
    versions/<image-id>/...      version history of one image (see ``lib/versions/``)
    runs/<run_id>/...            records, thumbnails, export staging, report of one run

A result is only visible once its sidecar exists and names the pixel file's size, and both
are written atomically (without fsync: they can be recomputed), so neither a crash nor a power
cut leaves something that looks like a finished result. Results are keyed per step
prefix (see ``phases.keys.step_keys``): the final result of a recipe and the intermediate after
each of its steps are all stored the same way, and ``lib/cache.py`` bounds their total size.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from retouch.lib import storage
from retouch.lib.errors import RetouchError
from retouch.lib.image import Image
from retouch.lib.imageio import decode, encode

RESULT_LAYOUT_VERSION = "1"
RESULT_MEDIA = ("mp4", "mov", "mkv", "webm")
"""Containers of video results (``lib/video``), stored beside the PNGs of images."""
# A reuse rewrites the sidecar's last-use time at most this often (LRU needs no finer grain,
# and a cache hit should not cost a write every time).
TOUCH_EVERY_S = 60.0


class Workspace:
    """A workspace rooted at a local path or fsspec URL."""

    def __init__(self, root: str):
        self.root = root.rstrip("/") if "://" in root else root

    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    # -- results -------------------------------------------------------------------------
    def _result(self, key: str, suffix: str) -> str:
        return self.path("results", key[:2], key + suffix)

    def _media_suffix(self, meta: Any) -> str:
        media = meta.get("media") if isinstance(meta, dict) else None
        return f".{media}" if media in RESULT_MEDIA else ".png"

    def result_file(self, key: str) -> str:
        """The URI of the file holding ``key``'s result (PNG, or a video's container)."""
        return self._result(key, self._media_suffix(self.result_meta(key)))

    def save_result_file(self, key: str, local: str, media: str, meta: dict[str, Any]) -> None:
        """Store the local file ``local`` (a video result, container ``media``) under
        ``key``: the file first, then the sidecar (with ``meta``) that commits it."""
        if media not in RESULT_MEDIA:
            raise RetouchError(f"result {key[:12]}: unknown result file type {media!r}")
        import os

        storage.put_file(local, self._result(key, f".{media}"))
        sidecar = {
            **meta,
            "layout": RESULT_LAYOUT_VERSION,
            "media": media,
            "bytes": os.path.getsize(local),
            "created": round(time.time(), 3),
            "last_used": round(time.time(), 3),
        }
        storage.write_bytes(self._result(key, ".json"), json.dumps(sidecar).encode(), durable=False)

    def has_result(self, key: str) -> bool:
        """True when ``key``'s sidecar and pixels are both there and agree on the size.

        Results are written without fsync (they can always be recomputed), so after a power
        cut a sidecar may name a truncated or empty pixel file: that counts as missing.
        """
        try:
            meta = self.result_meta(key)
        except (RetouchError, ValueError):  # absent, unreadable or torn sidecar
            return False
        expected = meta.get("bytes") if isinstance(meta, dict) else None
        pixels = self._result(key, self._media_suffix(meta))
        try:
            if expected is None:
                return storage.exists(pixels)
            return storage.size(pixels) == int(expected)
        except RetouchError:
            return False

    def save_result(self, key: str, image: Image) -> None:
        """Store ``image`` (pixels HxWx3 BGR uint8|uint16, alpha kept) under ``key``: pixels
        first, then the sidecar that commits them."""
        # Results are intermediates read back once or twice: fast compression beats small files.
        data = encode(image, "png", keep_metadata=False, png_compression=1)
        storage.write_bytes(self._result(key, ".png"), data, durable=False)
        meta = {
            "layout": RESULT_LAYOUT_VERSION,
            "is_gray": image.is_gray,
            "info": _encode_info(image.info),
            "width": image.width,
            "height": image.height,
            "bit_depth": image.bit_depth,
            "alpha": image.alpha is not None,
            "bytes": len(data),
            "created": round(time.time(), 3),
            "last_used": round(time.time(), 3),
        }
        storage.write_bytes(self._result(key, ".json"), json.dumps(meta).encode(), durable=False)

    def touch_result(self, key: str, meta: dict[str, Any] | None = None) -> None:
        """Record that ``key`` was just used (for least-recently-used eviction).

        Rewrites the sidecar with a new ``last_used`` unless it was touched within
        ``TOUCH_EVERY_S``. Losing a race with another toucher is harmless: both write a recent
        time. A failure to touch never fails the image; the entry just looks older.
        """
        try:
            meta = dict(meta) if meta is not None else self.result_meta(key)
            now = time.time()
            if now - float(meta.get("last_used") or 0) < TOUCH_EVERY_S:
                return
            if not storage.exists(self._result(key, self._media_suffix(meta))):
                return  # evicted meanwhile: don't resurrect a sidecar without pixels
            meta["last_used"] = round(now, 3)
            storage.write_bytes(
                self._result(key, ".json"), json.dumps(meta).encode(), durable=False
            )
        except RetouchError:
            pass

    def remove_result(self, key: str) -> None:
        """Delete a result: sidecar first (so it stops counting as present), then pixels
        (or the video file the sidecar names; every video suffix when it is unreadable)."""
        try:
            suffixes = [self._media_suffix(self.result_meta(key))]
        except (RetouchError, ValueError):
            suffixes = [".png"] + [f".{m}" for m in RESULT_MEDIA]
        storage.remove(self._result(key, ".json"))
        for suffix in suffixes:
            storage.remove(self._result(key, suffix))

    def list_tree(self, *parts: str) -> dict[str, int]:
        """Every file below ``parts`` as ``{path relative to that folder: size in bytes}``.

        Temporary files of interrupted writes are left out. A missing folder is empty.
        """
        uri = self.path(*parts)
        fs, base = storage.filesystem(uri)
        base = base.rstrip("/")

        def find() -> dict[str, Any]:
            fs.invalidate_cache(base)  # another process may have written since the last listing
            try:
                found = fs.find(base, detail=True)
            except FileNotFoundError:
                return {}
            return found if isinstance(found, dict) else {}

        out: dict[str, int] = {}
        for path, info in storage.retrying(find, what="list", uri=uri).items():
            rel = str(path)[len(base) :].lstrip("/")
            name = rel.rsplit("/", 1)[-1]
            if not rel or name.startswith(".") or info.get("type") == "directory":
                continue
            out[rel] = int(info.get("size") or 0)
        return out

    def load_result(self, key: str, *, pixel_limit: int | None = None) -> Image:
        meta = json.loads(storage.read_bytes(self._result(key, ".json")))
        data = storage.read_bytes(self._result(key, ".png"))
        image = decode(data, f"result {key[:12]}", pixel_limit=pixel_limit or 1 << 62)
        image.is_gray = bool(meta.get("is_gray", image.is_gray))
        image.info = _decode_info(meta.get("info", {}))
        return image

    def result_meta(self, key: str) -> dict[str, Any]:
        return json.loads(storage.read_bytes(self._result(key, ".json")))

    # -- runs ----------------------------------------------------------------------------
    def run_path(self, run_id: str, *parts: str) -> str:
        return self.path("runs", run_id, *parts)

    def write_json(self, uri: str, obj: Any) -> None:
        storage.write_bytes(
            uri, json.dumps(obj, indent=2, ensure_ascii=False, default=str).encode()
        )

    def read_json(self, uri: str) -> Any:
        return json.loads(storage.read_bytes(uri))


def _encode_info(info: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, bytes):
            out[key] = {"b64": base64.b64encode(value).decode()}
        elif isinstance(value, tuple):
            out[key] = {"tuple": list(value)}
        elif isinstance(value, str | int | float | bool) or value is None:
            out[key] = value
    return out


def _decode_info(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and "b64" in value:
            out[key] = base64.b64decode(value["b64"])
        elif isinstance(value, dict) and "tuple" in value:
            out[key] = tuple(value["tuple"])
        else:
            out[key] = value
    return out
