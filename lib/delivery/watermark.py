"""What an export profile does to the pixels: resize, colour conversion to sRGB, watermark.

Array conventions: :class:`~retouch.lib.image.Image` pixels are HxWx3 **BGR** ``uint8``
(0..255) or ``uint16`` (0..65535); alpha is HxW of the same dtype or ``None``. Marks are
built with Pillow as RGBA ``uint8`` and blended in floating point, so a 16-bit image stays
16-bit. The input image is never modified.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image as PILImage
from PIL import ImageCms, ImageDraw, ImageFont

from retouch.lib import storage
from retouch.lib.errors import RecipeError, RetouchError
from retouch.lib.image import Image, swap_red_blue
from retouch.lib.recipe import ExportProfile, Resize, Watermark

_MIN_FONT = 6


def apply_profile(image: Image, profile: ExportProfile) -> Image:
    """``image`` as ``profile`` wants it before encoding: resized, colour converted, marked.

    The order matters: the size is reached first so that the mark's scale is relative to
    the delivered picture, and the colour conversion comes before the mark so that the mark
    colour is the sRGB colour asked for.

    Raises:
        RecipeError: the watermark image or font cannot be read.
    """
    out = image
    if profile.resize is not None:
        out = resize(out, profile.resize)
    if profile.colour == "srgb":
        out = to_srgb(out)
    if profile.watermark is not None:
        out = apply_watermark(out, profile.watermark)
    return out


def resize(image: Image, spec: Resize) -> Image:
    """Resize to a maximum side or an exact size; never enlarge unless ``spec.upscale``.

    Exact sizes: ``crop`` fills the frame and crops what overflows (keeping faces, else the
    most detailed region, in frame); ``pad`` fits inside and pads with ``pad_color``. An
    image smaller than the frame without ``upscale`` is padded to the exact size instead of
    being enlarged.
    """
    from retouch.lib.ops.base import OpContext
    from retouch.lib.ops.fit import Fit, FitParams

    if spec.max_side is not None:
        params = FitParams(max_side=spec.max_side, upscale_small=spec.upscale)
    else:
        assert spec.width is not None and spec.height is not None
        small = image.width < spec.width or image.height < spec.height
        crop = spec.mode == "crop" and (spec.upscale or not small)
        params = FitParams(
            width=spec.width,
            height=spec.height,
            mode="cover" if crop else "contain",
            upscale_small=spec.upscale,
            pad_color=spec.pad_color,
        )
    return Fit()(image, params, OpContext())


def _srgb_bytes() -> bytes:
    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


def to_srgb(image: Image) -> Image:
    """Convert the pixels from their embedded RGB ICC profile to sRGB and tag them sRGB.

    Without an RGB profile the pixels are taken to be sRGB already (the web's assumption)
    and only the tag is set. A 16-bit image with a non-sRGB profile is converted at 8 bits
    (Pillow's colour management works on 8-bit images). A gray image is left as it is.
    """
    if image.is_gray:
        return image
    icc = image.info.get("icc_profile")
    space = icc[16:20].decode("latin-1").strip().upper() if icc and len(icc) >= 20 else None
    info = dict(image.info)
    info["icc_profile"] = _srgb_bytes()
    if not icc or space != "RGB":
        return _with_info(image, image.pixels, info)
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(bytes(icc)))
    except (ImageCms.PyCMSError, OSError) as exc:
        raise RetouchError(f"its ICC profile cannot be read ({exc}); use colour = 'keep'") from None
    if "srgb" in (ImageCms.getProfileDescription(src) or "").lower():
        return _with_info(image, image.pixels, info)
    rgb = PILImage.fromarray(swap_red_blue(image.to_uint8()))
    converted = ImageCms.profileToProfile(
        rgb,
        src,
        ImageCms.createProfile("sRGB"),
        outputMode="RGB",
        renderingIntent=ImageCms.Intent.PERCEPTUAL,
    )
    assert converted is not None
    bgr = swap_red_blue(np.asarray(converted))
    alpha = image.alpha
    if alpha is not None and alpha.dtype != np.uint8:
        alpha = (alpha.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    out = Image(pixels=bgr, alpha=alpha, is_gray=False, info=info)
    return out


def _with_info(image: Image, pixels: np.ndarray, info: dict) -> Image:
    return Image(pixels=pixels, alpha=image.alpha, is_gray=image.is_gray, info=info)


# -- watermark -------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _mark_image(uri: str) -> PILImage.Image:
    try:
        data = storage.read_bytes(uri, max_bytes=64 * 1024 * 1024)
        pil = PILImage.open(io.BytesIO(data))
        pil.load()
    except (RetouchError, OSError, ValueError) as exc:
        raise RecipeError(
            f"watermark image {storage.redact(uri)}: cannot be read ({exc}); give a PNG, JPEG "
            "or WebP file"
        ) from None
    return pil.convert("RGBA")


@lru_cache(maxsize=16)
def _font(path: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if path is None:
        return ImageFont.load_default(size=size)
    try:
        return ImageFont.truetype(path, size=size)
    except OSError as exc:
        raise RecipeError(f"watermark font {path}: cannot be read ({exc})") from None


def check_watermark(mark: Watermark) -> None:
    """Load the mark's image or font once, so a bad file stops the export before it starts.

    Raises:
        RecipeError: the image or font cannot be read.
    """
    if mark.image:
        _mark_image(mark.image)
    if mark.font:
        _font(mark.font, 32)


def _text_mark(mark: Watermark, width: int) -> PILImage.Image:
    """The text as RGBA ``width`` pixels wide (dark outline so it reads on light areas)."""
    text = mark.text or ""
    probe_size = 64
    left, top, right, bottom = _font(mark.font, probe_size).getbbox(text)
    size = max(_MIN_FONT, int(probe_size * width / max(1, right - left)))
    font = _font(mark.font, size)
    stroke = max(1, size // 24)
    left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
    box = (max(1, int(right - left)), max(1, int(bottom - top)))
    canvas = PILImage.new("RGBA", box, (0, 0, 0, 0))
    rgb = tuple(bytes.fromhex(mark.color.lstrip("#")))
    ImageDraw.Draw(canvas).text(
        (-left, -top),
        text,
        font=font,
        fill=(*rgb, 255),
        stroke_width=stroke,
        stroke_fill=(0, 0, 0, 160),
    )
    return canvas


def _mark_rgba(mark: Watermark, image_width: int) -> np.ndarray:
    """The mark as HxWx4 RGBA float32 in 0..1, its alpha already multiplied by the opacity."""
    width = max(1, round(image_width * mark.scale))
    if mark.image:
        src = _mark_image(mark.image)
        height = max(1, round(src.height * width / src.width))
        pil = src.resize((width, height), PILImage.Resampling.LANCZOS)
    else:
        pil = _text_mark(mark, width)
    rgba = np.asarray(pil, dtype=np.float32) / 255.0
    rgba[..., 3] *= mark.opacity
    return rgba


def _anchor(
    position: str, size: tuple[int, int], box: tuple[int, int], margin: int
) -> tuple[int, int]:
    (w, h), (mw, mh) = size, box
    x = {"left": margin, "center": (w - mw) // 2, "right": w - mw - margin}
    y = {"top": margin, "center": (h - mh) // 2, "bottom": h - mh - margin}
    vertical, _, horizontal = position.partition("-")
    if position in ("left", "right"):
        vertical, horizontal = "center", position
    elif position in ("top", "bottom"):
        horizontal = "center"
    elif position == "center":
        vertical = horizontal = "center"
    return x[horizontal], y[vertical]


def apply_watermark(image: Image, mark: Watermark) -> Image:
    """Draw ``mark`` onto ``image`` (HxWx3 BGR uint8/uint16) and return the new image.

    The mark is ``mark.scale`` of the image width wide, blended with ``mark.opacity``; a
    single mark sits at ``mark.position`` with ``mark.margin`` of the shorter side to the
    edges; with ``mark.tile`` it repeats over the whole image in a staggered grid. Alpha
    is kept as it was (a mark over transparent areas stays invisible there).

    Raises:
        RecipeError: the mark image or font cannot be read.
    """
    rgba = _mark_rgba(mark, image.width)
    mh, mw = rgba.shape[:2]
    full = 65535.0 if image.pixels.dtype == np.uint16 else 255.0
    out = image.pixels.astype(np.float32)
    colour = rgba[..., 2::-1] * full  # RGB -> BGR, in the image's range
    alpha = rgba[..., 3:4]
    h, w = image.height, image.width
    if mark.tile:
        step_x, step_y = mw + max(8, mw // 2), mh + max(8, mh * 2)
        spots = [
            (x + (step_x // 2 if row % 2 else 0), y)
            for row, y in enumerate(range(-mh // 2, h, step_y))
            for x in range(-step_x, w, step_x)
        ]
    else:
        margin = round(min(w, h) * mark.margin)
        spots = [_anchor(mark.position, (w, h), (mw, mh), margin)]
    for x, y in spots:
        x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + mw), min(h, y + mh)
        if x0 >= x1 or y0 >= y1:
            continue
        a = alpha[y0 - y : y1 - y, x0 - x : x1 - x]
        c = colour[y0 - y : y1 - y, x0 - x : x1 - x]
        region = out[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = region * (1.0 - a) + c * a
    pixels = np.clip(np.rint(out), 0, full).astype(image.pixels.dtype)
    is_gray = image.is_gray and bool(
        np.array_equal(pixels[..., 0], pixels[..., 1])
        and np.array_equal(pixels[..., 1], pixels[..., 2])
    )
    return Image(pixels=pixels, alpha=image.alpha, is_gray=is_gray, info=dict(image.info))
