"""auto_color: automatic levels (contrast stretch) and white balance.

Pixels are HxWx3 BGR uint8/uint16 and keep their dtype; all arithmetic is in float at the
image's own depth, so 16-bit images keep their gradation.

White balance ``neutral`` (default) estimates the cast from the least saturated tenth of
the mid-tones and scales the channels so those pixels become gray (gains 0.6-1.6); when
the cast is too small to see, or even those pixels are strongly coloured (a colourful
scene, not a cast), it leaves the colours alone. ``grayworld`` equalises the means of all pixels
(gains 0.5-2): strong, but it also "corrects" scenes whose colour is real (an orange suit,
a sunset), so it is opt-in.
Levels stretch the tonal range to the full range: from the lowest of the channels'
``clip_percent`` percentiles to the highest of their ``100 - clip_percent`` percentiles,
with the same linear map for B, G and R so hues are kept and no channel clips more than
``clip_percent``;
the stretch is capped at 8x so a nearly flat image does not turn into amplified noise.
``strength`` blends the result with the original.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from retouch.lib.image import Image
from retouch.lib.ops.base import OpContext, Operation, OpParams


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
    white_balance: Literal["neutral", "grayworld", "none"] = Field(
        "neutral",
        description="neutral: make near-gray pixels gray (conservative); grayworld: equalise "
        "channel means (strong, can tint colourful scenes); none",
    )
    strength: float = Field(
        0.8, ge=0, le=1, description="Blend with the original: 0 = unchanged, 1 = full"
    )


def _percentile(values: np.ndarray, top: int, q: float) -> float:
    """Percentile (0..100) of non-negative values by histogram: faster than a sort."""
    hist = np.bincount(np.clip(values, 0, top).astype(np.int64).ravel(), minlength=top + 1)
    cdf = np.cumsum(hist)
    return float(np.searchsorted(cdf, q / 100.0 * cdf[-1]))


# Neutral-pixel white balance. The reference is the least saturated tenth of the mid-tones:
# in a photo with a cast those were gray before the cast; in a photo without one they are
# gray now (so the gains come out near 1). When even they are strongly coloured, the scene
# is colourful on purpose (a sunset, a stage light) and is left alone.
_REFERENCE_PERCENTILE = 10.0
_MIN_CAST = 1.5  # Lab a/b distance from neutral that is worth correcting
_MAX_CAST = 35.0  # beyond this the "reference" pixels are not gray things
_GAIN_RANGE = (0.6, 1.6)


def _neutral_gains(f: np.ndarray, top: int) -> np.ndarray:
    """Per-channel (B, G, R) gains that make the image's least saturated mid-tones gray."""
    unit = f / top
    lab = cv2.cvtColor(unit.astype(np.float32), cv2.COLOR_BGR2Lab)
    light, a, b = lab[:, :, 0], lab[:, :, 1], lab[:, :, 2]
    chroma = np.hypot(a, b)
    mid = (light > 15) & (light < 95)
    if mid.sum() < 16:
        return np.ones(3, np.float32)
    reference = mid & (chroma <= np.percentile(chroma[mid], _REFERENCE_PERCENTILE))
    cast = float(np.hypot(np.median(a[reference]), np.median(b[reference])))
    if not _MIN_CAST <= cast <= _MAX_CAST:
        return np.ones(3, np.float32)
    means = unit[reference].mean(axis=0)
    if float(means.min()) <= 0:
        return np.ones(3, np.float32)
    return np.clip(means.mean() / means, *_GAIN_RANGE).astype(np.float32)


class AutoColor(Operation):
    id = "auto_color"
    checkpoint = False  # cheaper to redo than to store
    version = "2"
    Params = AutoColorParams
    summary = "Automatic levels and white balance"

    def __call__(self, image: Image, params: AutoColorParams, ctx: OpContext) -> Image:
        px = image.pixels
        top = 65535 if px.dtype == np.uint16 else 255
        f = px.astype(np.float32)
        out = f.copy()
        if params.white_balance == "neutral" and not image.is_gray:
            out *= _neutral_gains(f, top)
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
