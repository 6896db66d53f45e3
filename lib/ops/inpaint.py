"""inpaint: fill a rectangle or masked areas from their surroundings (Telea or Navier-Stokes).

Pixels are HxWx3 BGR uint8/uint16; masks are HxW uint8 with 255 = fill. Masks come from
``ctx.masks(stem)`` when ``mask_dir`` is set (the caller resolves the folder); a mask of
another size is resized to the image, binarised at 128 and dilated by ``dilate`` px.
OpenCV's inpainting is 8-bit only: the 8-bit version is filled and only the masked pixels
are replaced (x257 for 16-bit); every other pixel is returned bit-identical.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field

from ..errors import OperationError
from ..image import Image
from ..masks import MaskSource
from ..settings import get_settings
from .base import MaskLookup, OpContext, Operation, OpParams


class InpaintParams(OpParams):
    method: Literal["telea", "ns"] = Field(
        "telea", description="telea (fast marching) or ns (Navier-Stokes)"
    )
    radius: int = Field(
        3, ge=1, le=50, description="Neighbourhood (pixels) each filled pixel draws from"
    )
    rect: list[int] | None = Field(
        None, min_length=4, max_length=4, description="Area to fill as [x, y, w, h] in pixels"
    )
    rect_rel: list[float] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="Area to fill as [x, y, w, h] in fractions 0..1 of the size",
    )
    mask_dir: str | None = Field(
        None, description="Folder of masks named after each image's stem (white = fill)"
    )
    dilate: int = Field(2, ge=0, le=50, description="Grow masks by this many pixels to cover edges")
    missing_mask: Literal["skip", "error"] = Field(
        "skip", description="When an image has no mask and no rect: skip (leave unchanged) or error"
    )


def _stem(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).stem if name else ""


def _prepare_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[:, :, :3].max(axis=2) if m.shape[2] >= 3 else m[:, :, 0]
    if m.dtype == np.uint16:
        m = (m >> 8).astype(np.uint8)
    elif m.dtype == bool:
        m = m.astype(np.uint8) * 255
    elif m.dtype != np.uint8:
        m = np.clip(m, 0, 255).astype(np.uint8)
    if m.shape != (height, width):
        m = cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.where(m >= 128, 255, 0).astype(np.uint8)


def _rect_mask(params: InpaintParams, width: int, height: int) -> np.ndarray | None:
    if params.rect is None and params.rect_rel is None:
        return None
    mask = np.zeros((height, width), np.uint8)
    for box, rel in ((params.rect, False), (params.rect_rel, True)):
        if box is None:
            continue
        x, y, w, h = box
        if rel:
            x, y, w, h = x * width, y * height, w * width, h * height
        x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
        x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] = 255
    return mask


def _mask_lookup(params: InpaintParams, ctx: OpContext) -> MaskLookup | None:
    """The step's own mask folder wins over the run's (``--masks``)."""
    if params.mask_dir:
        if ctx.mask_folder is not None:
            return ctx.mask_folder(params.mask_dir)
        return MaskSource(params.mask_dir, get_settings().pixel_limit)
    return ctx.masks


def _given_mask(
    params: InpaintParams, ctx: OpContext, width: int, height: int
) -> np.ndarray | None:
    """The step's rectangle and/or the image's mask file, at ``width`` x ``height``."""
    stem = _stem(ctx.name)
    mask = _rect_mask(params, width, height)
    lookup = _mask_lookup(params, ctx)
    if lookup is not None:
        found = lookup(ctx.name or stem)
        if found is not None:
            fm = _prepare_mask(found, width, height)
            mask = fm if mask is None else cv2.bitwise_or(mask, fm)
    return mask


def _dilated(mask: np.ndarray, dilate: int) -> np.ndarray:
    if dilate <= 0:
        return mask
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
    return cv2.dilate(mask, k)


def filled_area(
    params: InpaintParams, ctx: OpContext, width: int, height: int
) -> np.ndarray | None:
    """The area the step fills in an image of ``width`` x ``height`` (HxW uint8, 255 =
    filled, grown by ``dilate`` as the step grows it), or None when it fills nothing. The
    review uses it to judge a fill by its own measure, not as a change to the picture."""
    mask = _given_mask(params, ctx, width, height)
    if mask is None:
        return None
    mask = _dilated(mask, params.dilate)
    return mask if mask.any() else None


class Inpaint(Operation):
    id = "inpaint"
    version = "1"
    Params = InpaintParams
    summary = "Fill a rectangle or masked areas from their surroundings"

    def key_inputs(self, params: InpaintParams, ctx: OpContext) -> Any:
        lookup = _mask_lookup(params, ctx)
        if lookup is None:
            return None
        mask = lookup(ctx.name or "")
        if mask is None:
            return {"mask": None}
        digest = hashlib.sha256(repr(mask.shape).encode() + mask.tobytes()).hexdigest()
        return {"mask": digest}

    def __call__(self, image: Image, params: InpaintParams, ctx: OpContext) -> Image:
        h, w = image.height, image.width
        stem = _stem(ctx.name)
        mask = _given_mask(params, ctx, w, h)
        if mask is None:
            if params.missing_mask == "error":
                if params.mask_dir:
                    where = f"in mask_dir {params.mask_dir!r}"
                elif ctx.masks is not None:
                    where = "in the run's mask folder (--masks)"
                else:
                    where = "(no mask folder: pass --masks DIR or set inpaint.mask_dir)"
                raise OperationError(
                    f"{ctx.name or stem or 'image'}: no inpaint mask for stem {stem!r} {where} and no "
                    "rect/rect_rel given; add a mask named after the image, set rect, or "
                    "set inpaint.missing_mask=skip"
                )
            return image.with_pixels(image.pixels.copy(), image.alpha)
        mask = _dilated(mask, params.dilate)
        if not mask.any():
            return image.with_pixels(image.pixels.copy(), image.alpha)
        flag = cv2.INPAINT_TELEA if params.method == "telea" else cv2.INPAINT_NS
        filled8 = cv2.inpaint(np.ascontiguousarray(image.to_uint8()), mask, params.radius, flag)
        out = image.pixels.copy()
        sel = mask > 0
        if out.dtype == np.uint16:
            out[sel] = filled8[sel].astype(np.uint16) * np.uint16(257)
        else:
            out[sel] = filled8[sel]
        if image.is_gray:
            out[sel] = out[sel].mean(axis=1, keepdims=True).round().astype(out.dtype)
        return image.with_pixels(out, image.alpha)
