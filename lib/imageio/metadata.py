"""Metadata read from a source and carried to an output: EXIF orientation (read, applied to
the pixels, reset to 1 in the carried block), the EXIF, ICC and DPI kept in ``Image.info``,
and the ones an encoder may write."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from PIL import Image as PILImage

from retouch.lib.image import Image

_ORIENTATION_TAG = 0x0112


def header_orientation(pil: PILImage.Image, fmt: str) -> int:
    """EXIF orientation 1..8 as stored, read without decoding pixels.

    Pillow's ``getexif()`` is avoided on purpose: for a PNG without an early eXIf chunk it
    decodes the whole image to look for a late one.
    """
    if fmt == "tiff":
        # Pillow applies a TIFF's orientation while loading and then deletes the tag, so
        # after ``load()`` this reads 1; before it, the stored value (OpenCV path).
        value = pil.tag_v2.get(_ORIENTATION_TAG, 1)  # type: ignore[attr-defined]
    else:
        raw = pil.info.get("exif")
        value = _exif_orientation(bytes(raw)) if raw else 1
    try:
        value = int(value)
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def exif_body(exif: bytes) -> bytes:
    return exif[6:] if exif.startswith(b"Exif\x00\x00") else exif


def _orientation_entry(body: bytes | bytearray) -> tuple[str, int] | None:
    """(byte order, offset of the value) of IFD0's orientation in a TIFF structure.

    Works on an EXIF block (after ``b"Exif\\0\\0"``) or a whole TIFF file, classic or
    BigTIFF. Returns None when there is no usable orientation entry; raises ValueError when
    the structure cannot be parsed.
    """
    try:
        order = {b"II": "<", b"MM": ">"}[bytes(body[:2])]
        (magic,) = struct.unpack(order + "H", body[2:4])
        if magic == 42:
            (ifd0,) = struct.unpack(order + "I", body[4:8])
            (count,) = struct.unpack(order + "H", body[ifd0 : ifd0 + 2])
            first, size, head = ifd0 + 2, 12, "HHI"
        elif magic == 43:
            (ifd0,) = struct.unpack(order + "Q", body[8:16])
            (count,) = struct.unpack(order + "Q", body[ifd0 : ifd0 + 8])
            first, size, head = ifd0 + 8, 20, "HHQ"
        else:
            raise ValueError(f"not a TIFF structure (magic {magic})")
        value_at = struct.calcsize(order + head)
        for i in range(count):
            entry = first + size * i
            tag, typ, n = struct.unpack(order + head, body[entry : entry + value_at])
            if tag == _ORIENTATION_TAG and typ == 3 and n == 1:
                return order, entry + value_at
    except (KeyError, struct.error) as exc:
        raise ValueError("unreadable TIFF structure") from exc
    return None


def _exif_orientation(exif: bytes) -> int:
    try:
        found = _orientation_entry(exif_body(exif))
    except ValueError:
        return 1  # unreadable EXIF: the pixels are shown as stored
    if found is None:
        return 1
    order, at = found
    return int(struct.unpack(order + "H", exif_body(exif)[at : at + 2])[0])


def set_tiff_orientation_1(body: bytearray) -> bool:
    """Set IFD0's orientation to 1 in place; False when the structure cannot be parsed."""
    try:
        found = _orientation_entry(body)
    except ValueError:
        return False
    if found is not None:
        order, at = found
        body[at : at + 2] = struct.pack(order + "H", 1)
    return True


def _exif_with_orientation_1(exif: bytes) -> bytes | None:
    """``exif`` in APP1 form (``b"Exif\\0\\0"`` + TIFF structure) with orientation 1.

    The one value is patched in place, which keeps maker notes and offsets intact where
    re-serializing would not. Returns None when the block cannot be parsed (it is then not
    carried).
    """
    body = bytearray(exif_body(exif))
    if not set_tiff_orientation_1(body):
        return None
    return b"Exif\x00\x00" + bytes(body)


# Descriptive IFD0 tags worth carrying from a TIFF; its layout tags (strips, sample format)
# describe that file only and would be wrong in another one.
_TIFF_DESCRIPTIVE_TAGS = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x8298)


def _tiff_exif(pil: PILImage.Image) -> bytes | None:
    try:
        src = pil.getexif()
        clean = PILImage.Exif()
        for tag in _TIFF_DESCRIPTIVE_TAGS:
            if tag in src:
                clean[tag] = src[tag]
        sub = src.get_ifd(0x8769)
        if sub:
            clean[0x8769] = dict(sub)
        if not len(clean):
            return None
        clean[_ORIENTATION_TAG] = 1
        return clean.tobytes()
    except Exception:  # a damaged EXIF block loses the metadata, not the image
        return None


def _tiff_has_resolution(pil: PILImage.Image) -> bool:
    tags = pil.tag_v2  # type: ignore[attr-defined]
    return 282 in tags and tags.get(296, 2) in (2, 3)  # unit: absent means inch


def read_metadata(
    pil: PILImage.Image, fmt: str, late_exif: bytes | None
) -> tuple[dict[str, Any], int]:
    """(info dict, EXIF orientation 1..8 still to apply) of an opened Pillow image.

    ``late_exif`` is a PNG eXIf chunk found after the image data, which Pillow only sees
    once it has decoded the pixels (the 16-bit path never asks it to).
    """
    meta: dict[str, Any] = {}
    icc = pil.info.get("icc_profile")
    if icc:
        meta["icc_profile"] = bytes(icc)
    if fmt == "tiff":
        orientation = header_orientation(pil, fmt)
        exif = _tiff_exif(pil)
    else:
        raw = pil.info.get("exif") or late_exif
        orientation = _exif_orientation(bytes(raw)) if raw else 1
        exif = _exif_with_orientation_1(bytes(raw)) if raw else None
    if exif:
        meta["exif"] = exif
    dpi = pil.info.get("dpi")
    if fmt == "tiff" and not _tiff_has_resolution(pil):
        dpi = None  # Pillow reports (1, 1) for a TIFF that states no resolution
    if dpi and len(dpi) == 2:
        x, y = (round(float(v), 2) for v in dpi)
        if x > 0 and y > 0:
            meta["dpi"] = (x, y)
    return meta, orientation


def orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an array stored with EXIF ``orientation`` upright (axes 0, 1 are rows, columns)."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(a, -1)
    if orientation == 7:
        return a[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(a, 1)
    return a


def icc_colour_space(icc: bytes | None) -> str | None:
    if not icc or len(icc) < 20:
        return None
    return icc[16:20].decode("latin-1").strip().upper()


def carried_metadata(image: Image, keep: bool, colour_space: str | None) -> dict[str, Any]:
    """Pillow save keywords for the metadata that may be written (ICC only if it fits)."""
    if not keep:
        return {}
    out: dict[str, Any] = {}
    icc = image.info.get("icc_profile")
    if icc and colour_space and icc_colour_space(icc) == colour_space:
        out["icc_profile"] = bytes(icc)
    exif = image.info.get("exif")
    if exif:
        fixed = _exif_with_orientation_1(bytes(exif))
        if fixed:
            out["exif"] = fixed
    dpi = image.info.get("dpi")
    if dpi and len(dpi) == 2:
        out["dpi"] = (float(dpi[0]), float(dpi[1]))
    return out
