"""What an image file's header says, read without decoding any pixel: :func:`probe` for
a source (format, upright size, mode, bit depth, alpha, frames; the pixel limit checked
before anything is allocated), :func:`describe` for encoded output, and the readable
errors for damaged files."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from PIL import Image as PILImage

from retouch.lib.errors import InvalidImageError
from retouch.lib.imageio.formats import not_an_image_reason, sniff_format
from retouch.lib.imageio.metadata import header_orientation

# retouch checks the declared size against its own limit (RETOUCH_PIXEL_LIMIT) from the
# header, before anything is allocated, and reports it in its own words. Pillow's global
# limit would fire first with a different message (and also inside TIFF/GIF loading), so it
# is switched off once here: one assignment at import, never toggled per call, so no thread
# can see it flip.
PILImage.MAX_IMAGE_PIXELS = None

_PIL_ID = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "tiff": "TIFF", "bmp": "BMP", "gif": "GIF"}
_LABEL = {"jpeg": "JPEG", "png": "PNG", "webp": "WebP", "tiff": "TIFF", "bmp": "BMP", "gif": "GIF"}
_OUTPUT_OF_SNIFFED = {"jpeg": "jpg", "png": "png", "webp": "webp", "tiff": "tiff", "bmp": "bmp"}
_GRAY_MODES = ("1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


@dataclass(frozen=True)
class ImageInfo:
    """What the header of an image file says, read without decoding any pixel.

    ``format`` is the sniffed format (one of :data:`~retouch.lib.imageio.formats.SOURCE_FORMATS`); ``mode`` is Pillow's
    name for the layout as opened ("RGB", "RGBA", "L", "LA", "P", "1", "CMYK", "I;16"...;
    16-bit colour PNG/TIFF still read "RGB"/"RGBA"); ``bit_depth`` is bits per sample as
    stored (1, 2, 4, 8 or 16); ``width`` and ``height`` are upright (EXIF orientation
    applied), as :func:`~retouch.lib.imageio.decoding.decode` returns them; ``frames`` counts animation frames or TIFF
    pages (always 1 for JPEG).
    """

    format: str
    width: int
    height: int
    mode: str
    bit_depth: int
    has_alpha: bool
    frames: int


# Decoder messages that name library internals, in the user's words.
_UNDECODABLE = "the image data could not be decoded (damaged, or an unsupported compression)"
_DECODER_WORDS = (
    ("could not create decoder object", "the image data could not be decoded"),
    ("decoder error", _UNDECODABLE),
)


def _text_bomb(text: str, label: str) -> str | None:
    from PIL import PngImagePlugin

    if "MAX_TEXT_CHUNK" in text:
        size, what = PngImagePlugin.MAX_TEXT_CHUNK, f"a metadata text chunk of the {label} expands"
    elif "MAX_TEXT_MEMORY" in text:
        size, what = PngImagePlugin.MAX_TEXT_MEMORY, f"the {label}'s metadata text expands"
    else:
        return None
    return f"{what} to more than {size / (1 << 20):g} MB: refused as a decompression bomb"


def corrupt(name: str, fmt: str, detail: object) -> InvalidImageError:
    if isinstance(detail, PILImage.UnidentifiedImageError):
        detail = "the header could not be read"  # Pillow's text names a BytesIO object
    text = str(detail).strip() or type(detail).__name__
    bomb = _text_bomb(text, _LABEL[fmt])
    if bomb:
        return InvalidImageError(name, bomb)
    for internal, words in _DECODER_WORDS:
        if text.startswith(internal):
            text = words
            break
    return InvalidImageError(name, f"truncated or corrupt {_LABEL[fmt]}: {text}")


def _bit_depth(pil: PILImage.Image, fmt: str, data: bytes) -> int:
    if fmt == "png" and len(data) >= 25:
        return int(data[24])
    if fmt == "tiff":
        bits = pil.tag_v2.get(258, (8,))  # type: ignore[attr-defined]
        bits = bits if isinstance(bits, tuple) else (bits,)
        return int(max(bits))
    if fmt == "jpeg":
        return int(getattr(pil, "bits", 8))
    if pil.mode == "1":
        return 1
    if pil.mode.startswith("I;16"):
        return 16
    return 8


def open_header(data: bytes, name: str, pixel_limit: int) -> tuple[PILImage.Image, ImageInfo]:
    """Open the header with Pillow (restricted to the sniffed format) and check the limit."""
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidImageError(name, not_an_image_reason(data))
    try:
        pil = PILImage.open(io.BytesIO(data), formats=[_PIL_ID[fmt]])
        width, height = pil.size
        mode = pil.mode
        # Counting frames walks the file's frame headers; no pixel is decoded.
        frames = 1 if fmt == "jpeg" else int(getattr(pil, "n_frames", 1))
        info_alpha = "transparency" in pil.info
        # Report the upright size, as decode returns it. Pillow already swaps TIFF sizes.
        if fmt != "tiff" and header_orientation(pil, fmt) in (5, 6, 7, 8):
            width, height = height, width
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises many types for damaged headers
        raise corrupt(name, fmt, exc) from None
    if width * height > pixel_limit:
        raise InvalidImageError(
            name,
            f"image is {width}x{height} = {width * height / 1e6:.1f} MP, over the pixel limit "
            f"of {pixel_limit / 1e6:.1f} MP (set RETOUCH_PIXEL_LIMIT to raise it)",
        )
    if width <= 0 or height <= 0:
        raise InvalidImageError(name, f"truncated or corrupt {_LABEL[fmt]}: size {width}x{height}")
    info = ImageInfo(
        format=fmt,
        width=int(width),
        height=int(height),
        mode=mode,
        bit_depth=_bit_depth(pil, fmt, data),
        has_alpha=mode in ALPHA_MODES or info_alpha,
        frames=max(1, frames),
    )
    return pil, info


def probe(data: bytes, name: str, *, pixel_limit: int) -> ImageInfo:
    """Read the header of ``data`` (named ``name`` in messages) without decoding pixels.

    Raises :class:`InvalidImageError` with a readable reason for an empty file, text, an
    unsupported format, a damaged header, or a declared size over ``pixel_limit`` pixels
    (checked before any pixel buffer is allocated).
    """
    _pil, info = open_header(data, name, pixel_limit)
    return info


def stored_as_gray(pil: PILImage.Image, fmt: str, data: bytes) -> bool:
    # Pillow opens 16-bit gray+alpha PNG as "RGBA", so ask the header itself.
    if fmt == "png" and len(data) > 25:
        return data[25] in (0, 4)
    if fmt == "tiff":
        return pil.tag_v2.get(262) in (0, 1)  # type: ignore[attr-defined]
    return pil.mode in _GRAY_MODES


def describe(data: bytes) -> dict[str, Any]:
    """What encoded image bytes really hold, read from their header (no pixel decoded).

    Returns ``{"format", "width", "height", "bit_depth", "alpha", "gray"}``: ``format`` is
    the output format name (jpg, png, webp, tiff, bmp; gif for a GIF) sniffed from the
    magic bytes, ``bit_depth`` the bits per sample as stored, ``alpha`` whether the file has
    an alpha channel or transparency, ``gray`` whether colour is stored as one gray channel.

    Raises:
        InvalidImageError: the bytes are not an image retouch can read.
    """
    pil, info = open_header(data, "encoded output", 1 << 62)
    return {
        "format": _OUTPUT_OF_SNIFFED.get(info.format, info.format),
        "width": info.width,
        "height": info.height,
        "bit_depth": info.bit_depth,
        "alpha": info.has_alpha,
        "gray": bool(stored_as_gray(pil, info.format, data)),
    }
