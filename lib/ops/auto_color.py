"""auto_color: automatic levels (contrast stretch) and gray-world white balance.

Pixels are HxWx3 BGR uint8/uint16 and keep their dtype; all arithmetic is in float at the
image's own depth, so 16-bit images keep their gradation. White balance scales each channel
so the channel means meet (pixels near clipping are ignored, gains capped to 0.5-2).
Levels stretch the tonal range to the full range: from the lowest of the channels'
``clip_percent`` percentiles to the highest of their ``100 - clip_percent`` percentiles,
with the same linear map for B, G and R so hues are kept and no channel clips more than
``clip_percent``;
the stretch is capped at 8x so a nearly flat image does not turn into amplified noise.
``strength`` blends the result with the original.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ..image import Image
from .base import OpContext, Operation, OpParams


class AutoColorParams(OpParams):
    levels: bool = Field(
        True, description="Stretch the tonal range to the full range (same map for all channels)"
    )
    clip_percent: float = Field(
        0.5,
        ge=0,
        le=10,
        description="Percent of darkest and of brightest pixels allowed to clip in levels",
    )
    white_balance: Literal["grayworld", "none"] = Field(
        "grayworld", description="grayworld: neutralise a colour cast by equalising channel means"
    )
    strength: float = Field(
        0.8, ge=0, le=1, description="Blend with the original: 0 = unchanged, 1 = full"
    )


def _percentile(values: np.ndarray, top: int, q: float) -> float:
    """Percentile (0..100) of non-negative values by histogram: faster than a sort."""
    hist = np.bincount(np.clip(values, 0, top).astype(np.int64).ravel(), minlength=top + 1)
    cdf = np.cumsum(hist)
    return float(np.searchsorted(cdf, q / 100.0 * cdf[-1]))


class AutoColor(Operation):
    id = "auto_color"
    version = "1"
    Params = AutoColorParams
    summary = "Automatic levels and gray-world white balance"

    def __call__(self, image: Image, params: AutoColorParams, ctx: OpContext) -> Image:
        px = image.pixels
        top = 65535 if px.dtype == np.uint16 else 255
        f = px.astype(np.float32)
        out = f.copy()
        if params.white_balance == "grayworld" and not image.is_gray:
            usable = (f.max(axis=2) < 0.98 * top) & (f.min(axis=2) > 0.02 * top)
            sample = f[usable] if usable.sum() >= 16 else f.reshape(-1, 3)
            means = sample.mean(axis=0)
            if float(means.min()) > 0:
                gains = np.clip(means.mean() / means, 0.5, 2.0).astype(np.float32)
                out *= gains
        if params.levels:
            ints = np.rint(out)
            lo = min(_percentile(ints[:, :, c], top, params.clip_percent) for c in range(3))
            hi = max(_percentile(ints[:, :, c], top, 100.0 - params.clip_percent) for c in range(3))
            span = max(hi - lo, top / 8.0)
            if hi > lo:
                out = (out - lo) * (top / span)
        if params.strength < 1.0:
            out = f + params.strength * (out - f)
        result = np.clip(np.rint(out), 0, top).astype(px.dtype)
        return image.with_pixels(np.ascontiguousarray(result), image.alpha)
