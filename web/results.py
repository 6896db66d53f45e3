"""A batch's results as the API serves them: downloads with ranges, single files
extracted from the delivered ZIPs, ZIPs of a selection, and the full-size images of the
before/after comparison (converted when browsers cannot show them as they are).

Everything built here lives in the batch's ``cache/`` folder, which a new job clears.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

from fastapi.responses import FileResponse
from starlette.responses import MalformedRangeHeader

from retouch.web.batches import Batch

# ZIPs of selected results kept per batch (the most recently used ones).
MAX_SELECTIONS = 8
# The full-size comparison: images of more pixels than this are not sent to the browser
# (two of them are decoded there at once); the page keeps the preview and says why.
FULL_VIEW_MAX_PIXELS = 100_000_000
# Formats every browser shows as they are (8 bits, one frame); others are converted.
BROWSER_FORMATS = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
FULL_VIEWS = ("before", "after")
# Bytes read to learn an image's format, size and depth (the header; the whole file when
# the header needs more, as a TIFF whose directory is at its end does).
_HEAD_BYTES = 4 * 1024 * 1024
# One conversion at a time: each holds a whole decoded image in memory.
_CONVERTING = threading.BoundedSemaphore(1)


class Download(FileResponse):
    """A file download with ranges for resuming (Starlette's), an ASCII fallback beside the
    UTF-8 file name, and a malformed or foreign-unit Range ignored (RFC 9110 14.2: the whole
    file, 200) instead of answered with 400."""

    def __init__(self, path: Path, media_type: str, filename: str, **kwargs: Any):
        from urllib.parse import quote

        fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in filename)
        disposition = f'attachment; filename="{fallback}"'
        if fallback != filename or quote(filename) != filename:
            disposition += f"; filename*=utf-8''{quote(filename, safe='')}"
        headers = {**kwargs.pop("headers", {}), "content-disposition": disposition}
        super().__init__(path, media_type=media_type, headers=headers, **kwargs)

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []


def _zip_stamp(paths: list[Path]) -> str:
    return "-".join(f"{p.stat().st_mtime_ns:x}{p.stat().st_size:x}" for p in paths)


def extract_result(batch: Batch, member: str) -> Path | None:
    """The delivered file ``member`` (a path in the batch's ZIPs), extracted once into the
    batch's cache so it can be served with ranges; None when no archive holds it."""
    from retouch.lib.delivery.naming import is_safe_name

    archives = batch.archives()
    if not archives or not is_safe_name(member):  # never a path out of the cache
        return None
    target = batch.folder / "cache" / f"results-{_zip_stamp(archives)}" / member
    if target.is_file():
        return target
    for archive in archives:
        with zipfile.ZipFile(archive) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
            with zf.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
            tmp.replace(target)
            return target
    return None


def selection_zip(batch: Batch, members: list[str]) -> Path:
    """A ZIP of only ``members`` (paths in the batch's ZIPs), built once per selection and
    delivery, in the batch's cache."""
    import hashlib

    archives = batch.archives()
    wanted = sorted(set(members))
    key = hashlib.sha256(
        (_zip_stamp(archives) + "\n" + "\n".join(wanted)).encode("utf-8")
    ).hexdigest()[:20]
    target = batch.folder / "cache" / f"selected-{key}.zip"
    if target.is_file():
        # Marked as recently used by its access time: the modification time is part of the
        # ETag that resumed downloads rely on, so it stays.
        os.utime(target, ns=(time.time_ns(), target.stat().st_mtime_ns))
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _drop_old_selections(target.parent, keep=MAX_SELECTIONS - 1)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    left = set(wanted)
    with zipfile.ZipFile(tmp, "w", allowZip64=True) as out:
        for archive in archives:
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if info.filename in left:
                        left.discard(info.filename)
                        with zf.open(info) as src, out.open(info, "w") as dst:
                            shutil.copyfileobj(src, dst, 1024 * 1024)
    tmp.replace(target)
    return target


def _drop_old_selections(cache: Path, keep: int) -> None:
    """Delete all but the ``keep`` most recently used selection ZIPs: each distinct
    selection is a copy of its results, and asking for many must not fill the disk."""
    found = []
    for path in cache.glob("selected-*.zip"):
        try:
            found.append((path.stat().st_atime_ns, path))
        except FileNotFoundError:
            continue
    for _mtime, path in sorted(found, reverse=True)[keep:]:
        path.unlink(missing_ok=True)


# The image files of a delivered sequence (export.video.frames_format), by extension.
FRAME_EXTENSIONS = (".png", ".jpg", ".tif")


def folder_members(members: dict[str, int], folder: str) -> list[str]:
    """The files under ``folder`` (an image sequence's output name) among ``members``
    (:func:`archive_members`), sorted by name (so the frames in number order)."""
    prefix = folder.rstrip("/") + "/"
    return sorted(m for m in members if m.startswith(prefix))


def first_frame(members: dict[str, int], folder: str) -> str | None:
    """The first frame of the image sequence ``folder`` (its lowest number), if delivered."""
    frames = [
        m
        for m in folder_members(members, folder)
        if "/" not in m[len(folder) + 1 :] and m.lower().endswith(FRAME_EXTENSIONS)
    ]
    return frames[0] if frames else None


def archive_members(batch: Batch) -> dict[str, int]:
    """Every file in the batch's ZIPs with its size."""
    sizes: dict[str, int] = {}
    for archive in batch.archives():
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    sizes.setdefault(info.filename, info.file_size)
    return sizes


# -- the full-size comparison -----------------------------------------------------------------


class FullViewError(Exception):
    """An image that cannot be shown at full size: the HTTP status and why."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(message)


def full_view(
    batch: Batch, which: str, index: int, uri: str, name: str, max_bytes: int
) -> tuple[Path, str]:
    """The file to send for the full-size ``which`` (before or after) of image ``index``,
    read from ``uri`` (at most ``max_bytes`` from an object store), with its media type.
    JPEG, PNG and WebP of 8 bits and one frame are sent as they are; other formats, 16-bit
    images and animations are converted once (their first frame) into the batch's cache:
    PNG when the image has alpha, else JPEG of quality 95. Raises :class:`FullViewError`
    for a missing file, one that is not an image, or one of more than
    :data:`FULL_VIEW_MAX_PIXELS` pixels."""
    from retouch.lib import storage
    from retouch.lib.errors import RetouchError

    cache = batch.folder / "cache" / "full"
    local = storage.local_path(uri)
    if local is None:  # in an object store: fetched once (the cache goes with a new job)
        import hashlib

        path = cache / f"source-{hashlib.sha256(uri.encode()).hexdigest()[:20]}"
        if not path.is_file():
            try:
                data = storage.read_bytes(uri, max_bytes=max_bytes)
            except RetouchError as exc:
                raise FullViewError(
                    404, f"{name}: the {which} image cannot be read: {exc}"
                ) from None
            _write_atomic(path, data)
            del data
    else:
        path = Path(local)
    try:
        stat = path.stat()
    except OSError:
        raise FullViewError(404, f"{name}: the {which} image is gone from the server") from None
    stem = f"{which}-{index}-{stat.st_mtime_ns:x}{stat.st_size:x}"
    done = _converted_before(cache, stem)
    if done is not None:
        return done
    info = _probe_file(path, name, stat.st_size)
    pixels = info.width * info.height
    if pixels > FULL_VIEW_MAX_PIXELS:
        raise FullViewError(
            413,
            f"{name}: the {which} image is {info.width}x{info.height} = {pixels / 1e6:.1f} MP, "
            f"more than the {FULL_VIEW_MAX_PIXELS / 1e6:g} MP the full-size view shows; "
            "download the file to see it at full size",
        )
    if info.format in BROWSER_FORMATS and info.bit_depth <= 8 and info.frames == 1:
        return path, BROWSER_FORMATS[info.format]
    with _CONVERTING:
        done = _converted_before(cache, stem)  # by a request that waited ahead of this one
        if done is not None:
            return done
        data = _converted(path, name)
        ext, media = ("png", "image/png") if data[:4] == b"\x89PNG" else ("jpg", "image/jpeg")
        for old in cache.glob(f"{which}-{index}-*"):  # an earlier version of the same image
            old.unlink(missing_ok=True)
        target = cache / f"{stem}.{ext}"
        _write_atomic(target, data)
    return target, media


def _converted_before(cache: Path, stem: str) -> tuple[Path, str] | None:
    for ext, media in (("png", "image/png"), ("jpg", "image/jpeg")):
        if (cache / f"{stem}.{ext}").is_file():
            return cache / f"{stem}.{ext}", media
    return None


def _probe_file(path: Path, name: str, size: int) -> Any:
    """The header of an image file (format, size, depth, frames), read from its first bytes
    (all of them when the header needs more)."""
    from retouch.lib import imageio
    from retouch.lib.errors import InvalidImageError

    unlimited = 1 << 62  # the pixel bound is checked by the caller, in its own words
    with open(path, "rb") as fh:
        head = fh.read(_HEAD_BYTES)
    try:
        return imageio.probe(head, name, pixel_limit=unlimited)
    except InvalidImageError as exc:
        if size <= len(head):
            raise FullViewError(415, f"{name}: cannot be shown: {exc.reason}") from None
    try:
        return imageio.probe(path.read_bytes(), name, pixel_limit=unlimited)
    except InvalidImageError as exc:
        raise FullViewError(415, f"{name}: cannot be shown: {exc.reason}") from None


def _converted(path: Path, name: str) -> bytes:
    """The image at ``path`` as 8-bit PNG (with alpha) or JPEG (without)."""
    from retouch.lib import imageio
    from retouch.lib.errors import InvalidImageError
    from retouch.lib.image import Image, to_uint8

    try:
        image = imageio.decode(path.read_bytes(), name, pixel_limit=FULL_VIEW_MAX_PIXELS)
    except InvalidImageError as exc:
        raise FullViewError(415, f"{name}: cannot be shown: {exc.reason}") from None
    alpha = None if image.alpha is None else to_uint8(image.alpha)
    eight = Image(to_uint8(image.pixels), alpha, image.is_gray, image.info)
    del image
    return imageio.encode(eight, "png" if alpha is not None else "jpg", quality=95)


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
