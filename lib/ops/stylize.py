"""stylize: painterly and sketch effects from OpenCV's edge-preserving filters.

Pixels are HxWx3 BGR uint8/uint16. The filters are 8-bit only: a 16-bit image is filtered
as its 8-bit version and returned as 16-bit (x257), so the pipeline keeps one dtype; the
fine gradation of 16-bit is not kept, which a stylised image does not need. ``pencil_sketch``
returns a gray image (``is_gray=True``); a gray input stays gray for every style.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from retouch.lib.image import Image
from retouch.lib.ops.base import OpContext, Operation, OpParams

# The OpenCV filters misbehave on tiny inputs; smaller images are edge-padded to this.
_MIN_SIDE = 16


class StylizeParams(OpParams):
    style: Literal["stylization", "pencil_sketch", "pencil_color", "cartoon", "detail_enhance"] = (
        Field("stylization", description="Effect to apply")
    )
    sigma_s: float = Field(
        60.0, ge=1, le=200, description="Spatial extent of the smoothing (pixels)"
    )
    sigma_r: float = Field(
        0.45,
        ge=0.01,
        le=1,
        description="How different colours may be and still be smoothed together (0-1)",
    )


def _cartoon(img8: np.ndarray, sigma_s: float, sigma_r: float) -> np.ndarray:
    """Flat colours from repeated bilateral filtering, plus dark edges from an adaptive threshold."""
    color = img8
    for _ in range(3):
        color = cv2.bilateralFilter(color, 9, max(10.0, 200.0 * sigma_r), max(2.0, sigma_s / 10.0))
    gray = cv2.medianBlur(cv2.cvtColor(img8, cv2.COLOR_BGR2GRAY), 5)
    edges = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 4)
    return cv2.bitwise_and(color, color, mask=edges)


def _apply(style: str, img8: np.ndarray, sigma_s: float, sigma_r: float) -> tuple[np.ndarray, bool]:
    if style == "stylization":
        return cv2.stylization(img8, sigma_s=sigma_s, sigma_r=sigma_r), False
    if style == "detail_enhance":
        return cv2.detailEnhance(img8, sigma_s=sigma_s, sigma_r=sigma_r), False
    if style in ("pencil_sketch", "pencil_color"):
        gray, color = cv2.pencilSketch(
            img8, sigma_s=sigma_s, sigma_r=min(sigma_r, 0.2), shade_factor=0.05
        )
        if style == "pencil_sketch":
            return np.repeat(gray[:, :, None], 3, axis=2), True
        return color, False
    return _cartoon(img8, sigma_s, sigma_r), False


class Stylize(Operation):
    id = "stylize"
    version = "1"
    Params = StylizeParams
    redraws = True
    summary = "Artistic effects: stylization, pencil sketch, cartoon, detail enhance"

    def __call__(self, image: Image, params: StylizeParams, ctx: OpContext) -> Image:
        img8 = np.ascontiguousarray(image.to_uint8())
        h, w = img8.shape[:2]
        pad_y, pad_x = max(0, _MIN_SIDE - h), max(0, _MIN_SIDE - w)
        if pad_y or pad_x:
            img8 = cv2.copyMakeBorder(img8, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE)
        out, gray = _apply(params.style, img8, params.sigma_s, params.sigma_r)
        out = out[:h, :w]
        if image.is_gray and not gray:
            g = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_BGR2GRAY)
            out = np.repeat(g[:, :, None], 3, axis=2)
            gray = True
        if image.pixels.dtype == np.uint16:
            out = out.astype(np.uint16) * np.uint16(257)
        result = image.with_pixels(np.ascontiguousarray(out), image.alpha)
        result.is_gray = bool(gray or image.is_gray)
        return result
