"""Time in a clip: how much a result changes from frame to frame against its source
(the review's flicker check), and steadying static areas of a result over time.

Plain numpy/OpenCV on upright BGR frames (:class:`~retouch.lib.image.Image`).
"""

from __future__ import annotations

import cv2
import numpy as np

from retouch.lib.image import Image

FLICKER_SIDE = 160
"""Frames are compared for flicker at this width (detail the enhancement adds is not change)."""


def frame_change(a: Image, b: Image | None) -> float | None:
    """Mean absolute difference of two consecutive frames' luma (levels of 255), both
    reduced to :data:`FLICKER_SIDE` px wide; None without a second frame."""
    if b is None:
        return None

    def small(img: Image) -> np.ndarray:
        gray = cv2.cvtColor(img.to_uint8(), cv2.COLOR_BGR2GRAY)
        h = max(1, round(gray.shape[0] * FLICKER_SIDE / gray.shape[1]))
        return cv2.resize(gray, (FLICKER_SIDE, h), interpolation=cv2.INTER_AREA).astype(np.float32)

    return float(np.mean(np.abs(small(a) - small(b))))


def flickers(before: float | None, after: float | None) -> bool:
    """Whether the result changes from frame to frame well beyond its source: more than
    twice the source's change and by more than 3 levels (an encoder's noise is below)."""
    if before is None or after is None:
        return False
    return after > 2 * before and after - before > 3


STILL_LEVELS = 6.0
"""A source pixel that changed by this many levels (of 255) since the previous frame is
moving: the blend leaves it alone; below, it is blended in proportion."""
SCENE_CUT = 30.0
"""Mean change of the source (levels) above which two frames are taken as a cut: the blend
starts again from the new frame."""


class StaticBlend:
    """Static areas of a clip's result kept steady over time (``export.video.blend_static``).

    Where the source did not change since the previous frame, the result is blended with
    the previous blended result by ``weight`` (a model's frame-to-frame shimmer in a still
    background averages out); where the source moves, the result is left as it is. It
    starts again at a scene cut and is created fresh for each segment, so a segment's
    pixels do not depend on the segments before it.
    """

    def __init__(self, weight: float):
        self.weight = weight
        self._source: np.ndarray | None = None
        self._result: np.ndarray | None = None

    def __call__(self, source: Image, result: Image) -> Image:
        gray = cv2.GaussianBlur(
            cv2.cvtColor(source.to_uint8(), cv2.COLOR_BGR2GRAY).astype(np.float32), (5, 5), 0
        )
        pixels = result.pixels.astype(np.float32)
        previous, before = self._source, self._result
        self._source = gray
        if (
            previous is None
            or before is None
            or previous.shape != gray.shape
            or before.shape != pixels.shape
            or float(np.mean(np.abs(gray - previous))) > SCENE_CUT
        ):
            self._result = pixels
            return result
        still = np.clip(1.0 - np.abs(gray - previous) / STILL_LEVELS, 0.0, 1.0)
        h, w = pixels.shape[:2]
        if still.shape != (h, w):
            still = cv2.resize(still, (w, h), interpolation=cv2.INTER_LINEAR)
        share = (self.weight * still)[..., None]
        blended = pixels * (1.0 - share) + before * share
        self._result = blended
        top = 65535 if result.pixels.dtype == np.uint16 else 255
        out = np.clip(np.rint(blended), 0, top).astype(result.pixels.dtype)
        return result.with_pixels(out, result.alpha)
