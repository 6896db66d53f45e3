"""Decode file bytes into an upright :class:`~retouch.lib.image.Image`.

What decode keeps (and what it does not):

- The real format comes from the magic bytes, never from the file name.
- EXIF orientation (all 8 values) is applied to the pixels, and the orientation tag in the
  carried EXIF is reset to 1 so that no viewer rotates the result a second time.
- Alpha: RGBA, LA, palette and colour-key transparency (tRNS), WebP alpha.
- 16-bit PNG and TIFF stay ``uint16`` (colour, gray, with or without alpha). Pillow reduces
  16-bit colour to 8 bits, so those are decoded with OpenCV; Pillow still reads the header
  and the metadata.
- Gray, gray+alpha and 1-bit sources come back as 3 equal channels with ``is_gray=True``.
- CMYK: converted to sRGB through the embedded ICC profile when there is one (the profile
  is then dropped, the pixels being sRGB), else with Pillow's plain conversion (which
  already handles Adobe's inverted CMYK).
- Palette images are expanded. Animated GIF/WebP/PNG and multi-page TIFF: first frame only;
  ``info["frames"]`` holds the frame count (1 for a still image, and always 1 for JPEG: the
  extra images of an MPO file, such as gain maps, are not counted).
- ``info`` carries ``"icc_profile"`` (bytes), ``"exif"`` (bytes in JPEG APP1 form, starting
  with ``b"Exif\\0\\0"``), ``"dpi"`` (x, y floats), ``"frames"`` (int) and ``"format"``
  (the sniffed source format). XMP and other text chunks are not carried.
- A truncated or corrupt file raises :class:`InvalidImageError`; a partly grey result is
  never returned. Declared sizes over the pixel limit are rejected from the header alone.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageCms

from retouch.lib.errors import InvalidImageError
from retouch.lib.image import Image, swap_red_blue
from retouch.lib.imageio.header import ALPHA_MODES, corrupt, open_header, stored_as_gray
from retouch.lib.imageio.metadata import (
    icc_colour_space,
    orient,
    read_metadata,
    set_tiff_orientation_1,
)


def _check_png_structure(data: bytes, name: str) -> bytes | None:
    """Walk the PNG chunks (CRCs included) so a cut or damaged file fails with a clear reason.

    Returns the payload of the eXIf chunk, wherever it is, or None.
    """
    exif = None
    pos = 8
    size = len(data)
    while True:
        if pos + 8 > size:
            raise corrupt(name, "png", f"file ends before the IEND chunk ({size} bytes)")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 8 + length + 4
        if end > size:
            label = ctype.decode("latin-1")
            raise corrupt(name, "png", f"file ends inside the {label} chunk ({size} bytes)")
        crc = struct.unpack(">I", data[end - 4 : end])[0]
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            raise corrupt(name, "png", f"chunk {ctype.decode('latin-1')} has a bad CRC")
        if ctype == b"eXIf" and exif is None:
            exif = b"Exif\x00\x00" + data[pos + 8 : end - 4]
        if ctype == b"IEND":
            return exif
        pos = end


def _check_jpeg_structure(pil: PILImage.Image, data: bytes, name: str) -> None:
    # The image data starts at the first scan; an end-of-image marker must follow it (an
    # EXIF thumbnail carries its own marker earlier in the file, hence the offset).
    tile = getattr(pil, "tile", None)
    scan_start = tile[0][2] if tile else 0
    if data.rfind(b"\xff\xd9") < scan_start:
        raise corrupt(name, "jpeg", f"file ends before the end-of-image marker ({len(data)} bytes)")


def _check_tiff_structure(pil: PILImage.Image, data: bytes, name: str) -> None:
    tags = pil.tag_v2  # type: ignore[attr-defined]
    for off_tag, count_tag in ((273, 279), (324, 325)):
        offsets, counts = tags.get(off_tag), tags.get(count_tag)
        if offsets is None or counts is None:
            continue
        offsets = offsets if isinstance(offsets, tuple) else (offsets,)
        counts = counts if isinstance(counts, tuple) else (counts,)
        for off, cnt in zip(offsets, counts, strict=False):
            if off + cnt > len(data):
                raise corrupt(
                    name, "tiff", f"image data runs past the end of the file ({len(data)} bytes)"
                )


def _cmyk_to_rgb(pil: PILImage.Image, meta: dict[str, Any]) -> PILImage.Image:
    icc = meta.get("icc_profile")
    if icc and icc_colour_space(icc) == "CMYK":
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            # Relative colorimetric with black point compensation: the usual default of
            # editors and viewers for showing print files on screen.
            out = ImageCms.profileToProfile(
                pil,
                src,
                ImageCms.createProfile("sRGB"),
                outputMode="RGB",
                renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
                flags=ImageCms.Flags.BLACKPOINTCOMPENSATION,
            )
            if out is not None:
                meta.pop("icc_profile", None)  # the pixels are sRGB now
                return out
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: fall back to the plain conversion below
    # Without a usable CMYK profile a CMYK profile no longer describes the pixels.
    if icc_colour_space(icc) != "RGB":
        meta.pop("icc_profile", None)
    return pil.convert("RGB")


def _pil_to_arrays(
    pil: PILImage.Image, meta: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(colour HxWx3 RGB or HxW gray, alpha or None, is_gray) from a loaded Pillow image."""
    mode = pil.mode
    has_trns = "transparency" in pil.info
    if mode == "1":
        pil, mode = pil.convert("L"), "L"
    if mode == "La":
        pil, mode = pil.convert("LA"), "LA"
    if mode == "L" and has_trns:
        pil, mode = pil.convert("LA"), "LA"
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(pil).astype(np.uint16), None, True
    if mode in ("I", "F"):
        arr = np.asarray(pil).astype(np.float64)
        if mode == "F" and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 65535.0  # a float image in 0..1
        return np.clip(np.rint(np.nan_to_num(arr)), 0, 65535).astype(np.uint16), None, True
    if mode == "L":
        return np.asarray(pil), None, True
    if mode == "LA":
        arr = np.asarray(pil)
        return arr[..., 0], arr[..., 1], True
    if mode == "CMYK":
        pil, mode = _cmyk_to_rgb(pil, meta), "RGB"
    if mode in ("P", "PA", "RGBa") or (mode == "RGB" and has_trns):
        pil = pil.convert("RGBA" if (has_trns or mode != "P") else "RGB")
    elif mode not in ("RGB", "RGBA"):
        pil = pil.convert("RGBA" if mode in ALPHA_MODES else "RGB")
    arr = np.asarray(pil)
    if arr.shape[2] == 4:
        return arr[..., :3], arr[..., 3], False
    return arr, None, False


def _to_bgr(colour: np.ndarray) -> np.ndarray:
    """HxWx3 BGR from RGB or gray planes, C-contiguous."""
    if colour.ndim == 3:
        return swap_red_blue(colour)
    if colour.flags.c_contiguous and colour.dtype in (np.uint8, np.uint16):
        import cv2

        return cv2.cvtColor(colour, cv2.COLOR_GRAY2BGR)
    return np.repeat(colour[..., None], 3, axis=2)


def _decode_with_opencv(data: bytes, name: str, fmt: str) -> tuple[np.ndarray, np.ndarray | None]:
    """16-bit PNG/TIFF as stored: (HxWx3 BGR or HxW gray, alpha or None)."""
    import cv2

    buf = np.frombuffer(data, np.uint8)
    if fmt == "tiff":
        # OpenCV's TIFF reader applies the orientation tag itself (its PNG reader does not,
        # with IMREAD_UNCHANGED): decode a copy whose tag says 1 and orient here, the same
        # way for every format and OpenCV version.
        patched = bytearray(data)
        if not set_tiff_orientation_1(patched):
            raise corrupt(name, fmt, "the TIFF header could not be read")
        buf = np.frombuffer(patched, np.uint8)
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if arr is None or arr.size == 0:
        raise corrupt(name, fmt, "the 16-bit image data could not be decoded")
    if arr.ndim == 2:
        return arr, None
    if arr.shape[2] == 1:
        return arr[..., 0], None
    if arr.shape[2] == 2:
        return arr[..., 0], arr[..., 1]
    if arr.shape[2] == 4:
        return arr[..., :3], arr[..., 3]
    return arr, None


def decode(data: bytes, name: str, *, pixel_limit: int) -> Image:
    """Decode file bytes into an upright :class:`Image` (HxWx3 BGR uint8/uint16, C-contiguous).

    The format is sniffed from the content; see the module docstring for what is kept
    (orientation applied, alpha, 16 bits, gray, ICC/EXIF/DPI in ``info``, first frame only
    with ``info["frames"]``). Raises :class:`InvalidImageError` for anything that is not a
    complete, supported image of at most ``pixel_limit`` pixels.
    """
    pil, header = open_header(data, name, pixel_limit)
    fmt = header.format
    late_exif = None
    if fmt == "png":
        late_exif = _check_png_structure(data, name)
    elif fmt == "jpeg":
        _check_jpeg_structure(pil, data, name)
    elif fmt == "tiff":
        _check_tiff_structure(pil, data, name)

    use_opencv = fmt in ("png", "tiff") and header.bit_depth == 16 and pil.mode != "CMYK"
    try:
        if not use_opencv:
            pil.load()
        meta, orientation = read_metadata(pil, fmt, late_exif)
        if not use_opencv:
            colour, alpha, is_gray = _pil_to_arrays(pil, meta)
    except MemoryError:
        raise
    except InvalidImageError:
        raise
    except Exception as exc:  # Pillow reports truncation and bad data with many types
        raise corrupt(name, fmt, exc) from None
    if use_opencv:
        colour, alpha = _decode_with_opencv(data, name, fmt)
        is_gray = colour.ndim == 2 or stored_as_gray(pil, fmt, data)
        if colour.ndim == 3 and not is_gray:
            colour = colour[..., ::-1]  # back to RGB, like the Pillow path
        elif colour.ndim == 3:
            colour = colour[..., 0]
    bgr = np.ascontiguousarray(orient(_to_bgr(colour), orientation))
    if alpha is not None:
        alpha = np.ascontiguousarray(orient(alpha, orientation)).astype(bgr.dtype, copy=False)
    meta["frames"] = header.frames
    meta["format"] = fmt
    return Image(pixels=bgr, alpha=alpha, is_gray=bool(is_gray), info=meta)


def load_uint8_bgr(data: bytes, name: str, pixel_limit: int) -> np.ndarray:
    """Decode and return HxWx3 BGR uint8 pixels (16-bit rounded, alpha dropped)."""
    return np.ascontiguousarray(decode(data, name, pixel_limit=pixel_limit).to_uint8())
