"""sharpen: unsharp mask with a threshold that leaves flat areas and fine noise alone.

Pixels are HxWx3 BGR uint8/uint16 and keep their dtype; results are clipped to the range.
``out = in + amount x (in - gaussian(in, radius))``. Differences ``|in - blurred|`` below
``threshold`` (8-bit levels, x257 for 16-bit) are left alone; between threshold and twice
the threshold the effect fades in linearly, so there is no visible step at the threshold.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from retouch.lib.image import Image
from retouch.lib.ops.base import OpContext, Operation, OpParams


class SharpenParams(OpParams):
    amount: float = Field(
        0.8, ge=0, le=3, description="Strength: 0 = none, 1 = double the local contrast"
    )
    radius: float = Field(
        1.5, ge=0.3, le=10, description="Gaussian sigma in pixels: size of the detail sharpened"
    )
    threshold: float = Field(
        2.0,
        ge=0,
        le=255,
        description="Differences below this (8-bit levels) are left alone: protects flat areas",
    )


class Sharpen(Operation):
    id = "sharpen"
    checkpoint = False  # cheaper to redo than to store
    version = "1"
    Params = SharpenParams
    summary = "Unsharp mask (amount, radius, threshold)"

    def __call__(self, image: Image, params: SharpenParams, ctx: OpContext) -> Image:
        px = image.pixels
        top = 65535.0 if px.dtype == np.uint16 else 255.0
        f = px.astype(np.float32)
        blurred = cv2.GaussianBlur(f, (0, 0), params.radius, borderType=cv2.BORDER_REFLECT)
        diff = f - blurred
        t = params.threshold * (257.0 if px.dtype == np.uint16 else 1.0)
        if t > 0:
            weight = np.clip((np.abs(diff) - t) / t, 0.0, 1.0)
            diff *= weight
        out = np.clip(np.rint(f + params.amount * diff), 0, top).astype(px.dtype)
        return image.with_pixels(np.ascontiguousarray(out), image.alpha)
