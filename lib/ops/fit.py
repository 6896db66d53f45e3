"""fit: resize to a maximum side or an exact size (contain, cover with a smart crop, stretch).

Pixels are HxWx3 BGR uint8/uint16 and keep their dtype; alpha (HxW) is resized, cropped and
padded exactly like the pixels. Shrinking uses area interpolation, enlarging Lanczos.
"""

from __future__ import annotations

import re
from typing import Literal

import cv2
import numpy as np
from pydantic import Field, model_validator

from retouch.lib.image import Image
from retouch.lib.ops.base import OpContext, Operation, OpParams
from retouch.lib.quality.faces import detect_faces
from retouch.lib.quality.measures import detail_map

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


class FitParams(OpParams):
    max_side: int | None = Field(
        None, ge=1, le=100_000, description="Longest side in pixels (keeps the aspect ratio)"
    )
    width: int | None = Field(
        None, ge=1, le=100_000, description="Exact width in pixels (with height)"
    )
    height: int | None = Field(
        None, ge=1, le=100_000, description="Exact height in pixels (with width)"
    )
    mode: Literal["contain", "cover", "stretch"] = Field(
        "contain",
        description="With width+height: contain = fit inside and pad, cover = fill and crop, stretch = distort",
    )
    upscale_small: bool = Field(
        False, description="Enlarge images smaller than the target (max_side and contain only)"
    )
    anchor: Literal["smart", "center"] = Field(
        "smart", description="Where cover crops: smart keeps faces, else the most detailed region"
    )
    pad_color: str = Field(
        "#ffffff",
        pattern=r"^#?[0-9a-fA-F]{6}$",
        description="Padding colour for contain (hex RGB); images with alpha are padded transparent",
    )

    @model_validator(mode="after")
    def _one_target(self) -> FitParams:
        exact = self.width is not None or self.height is not None
        if self.max_side is not None and exact:
            raise ValueError("give max_side, or width and/or height, not both")
        if self.max_side is None and not exact:
            raise ValueError("give max_side, or width and height (e.g. max_side=2048)")
        return self


def _resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = arr.shape[:2]
    if (w, h) == (width, height):
        return arr
    interp = cv2.INTER_AREA if width * height < w * h else cv2.INTER_LANCZOS4
    return cv2.resize(arr, (width, height), interpolation=interp)


def _bgr_fill(hex_color: str, dtype: np.dtype) -> tuple[int, int, int]:
    m = _HEX.match(hex_color)
    rgb = bytes.fromhex(m.group(1)) if m else b"\xff\xff\xff"
    scale = 257 if dtype == np.uint16 else 1
    return rgb[2] * scale, rgb[1] * scale, rgb[0] * scale


def _window_start(length: int, window: int, centre: float) -> int:
    return int(min(max(0, round(centre - window / 2)), length - window))


def crop_box(bgr: np.ndarray, crop_w: int, crop_h: int, anchor: str = "smart") -> tuple[int, int]:
    """Top-left (x, y) of a ``crop_w`` x ``crop_h`` window in HxWx3 BGR ``bgr``.

    ``smart`` centres the window on the detected faces (on the largest one if they do not
    all fit), else on the region with the most detail (gradient energy); ``center`` centres it.
    """
    h, w = bgr.shape[:2]
    if anchor != "smart" or (crop_w >= w and crop_h >= h):
        return (w - crop_w) // 2, (h - crop_h) // 2
    faces = detect_faces(bgr)
    if faces:
        x0 = min(f[0] for f in faces)
        y0 = min(f[1] for f in faces)
        x1 = max(f[0] + f[2] for f in faces)
        y1 = max(f[1] + f[3] for f in faces)
        if x1 - x0 > crop_w or y1 - y0 > crop_h:
            x0, y0, fw, fh = faces[0]
            x1, y1 = x0 + fw, y0 + fh
        return _window_start(w, crop_w, (x0 + x1) / 2), _window_start(h, crop_h, (y0 + y1) / 2)
    dmap = detail_map(bgr)
    fy, fx = dmap.shape[0] / h, dmap.shape[1] / w
    x = _best_offset(dmap.sum(axis=0), crop_w * fx, w - crop_w, fx)
    y = _best_offset(dmap.sum(axis=1), crop_h * fy, h - crop_h, fy)
    return x, y


def _best_offset(profile: np.ndarray, window: float, max_offset: int, factor: float) -> int:
    """Offset (full-size pixels) of the window with the largest detail sum along one axis."""
    if max_offset <= 0:
        return 0
    n = profile.size
    win = int(min(n, max(1, round(window))))
    sums = np.convolve(profile, np.ones(win, dtype=np.float64), mode="valid")
    if sums.size == 0 or float(sums.max() - sums.min()) <= 0.02 * float(sums.max() + 1e-9):
        return max_offset // 2  # no region stands out: fall back to the centre
    # A slight preference for the centre breaks ties between equally detailed windows.
    centre = (sums.size - 1) / 2
    bias = 1.0 - 0.05 * np.abs(np.arange(sums.size) - centre) / max(1.0, centre)
    start = int(np.argmax(sums * bias))
    return int(min(max_offset, max(0, round(start / factor))))


class Fit(Operation):
    id = "fit"
    checkpoint = False  # cheaper to redo than to store
    version = "1"
    Params = FitParams
    summary = "Resize to a maximum side or an exact size (contain/pad, cover/smart crop, stretch)"

    def __call__(self, image: Image, params: FitParams, ctx: OpContext) -> Image:
        p = params
        h, w = image.height, image.width
        if p.max_side is not None or p.width is None or p.height is None:
            if p.max_side is not None:
                scale = p.max_side / max(w, h)
            else:
                scale = p.width / w if p.width is not None else p.height / h  # type: ignore[operator]
            if scale > 1 and not p.upscale_small:
                scale = 1.0
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            return self._resized(image, image.pixels, image.alpha, nw, nh)

        tw, th = p.width, p.height
        if p.mode == "stretch":
            return self._resized(image, image.pixels, image.alpha, tw, th)
        if p.mode == "cover":
            scale = max(tw / w, th / h)
            cw, ch = min(w, max(1, round(tw / scale))), min(h, max(1, round(th / scale)))
            x, y = crop_box(image.to_uint8(), cw, ch, p.anchor)
            pixels = image.pixels[y : y + ch, x : x + cw]
            alpha = image.alpha[y : y + ch, x : x + cw] if image.alpha is not None else None
            return self._resized(image, pixels, alpha, tw, th)

        scale = min(tw / w, th / h)
        if scale > 1 and not p.upscale_small:
            scale = 1.0
        nw, nh = min(tw, max(1, round(w * scale))), min(th, max(1, round(h * scale)))
        pixels = _resize(image.pixels, nw, nh)
        alpha = _resize(image.alpha, nw, nh) if image.alpha is not None else None
        ox, oy = (tw - nw) // 2, (th - nh) // 2
        canvas = np.empty((th, tw, 3), dtype=pixels.dtype)
        canvas[:] = _bgr_fill(p.pad_color, pixels.dtype)
        canvas[oy : oy + nh, ox : ox + nw] = pixels
        new_alpha = None
        if alpha is not None:
            new_alpha = np.zeros((th, tw), dtype=alpha.dtype)
            new_alpha[oy : oy + nh, ox : ox + nw] = alpha
        if image.is_gray:
            # A coloured pad would break the gray flag: use the pad colour's luminance.
            gray = cv2.cvtColor(canvas[:1, :1], cv2.COLOR_BGR2GRAY)[0, 0]
            pad = np.ones((th, tw), bool)
            pad[oy : oy + nh, ox : ox + nw] = False
            canvas[pad] = gray
        return image.with_pixels(canvas, new_alpha)

    @staticmethod
    def _resized(
        image: Image, pixels: np.ndarray, alpha: np.ndarray | None, w: int, h: int
    ) -> Image:
        out = np.ascontiguousarray(_resize(pixels, w, h))
        new_alpha = np.ascontiguousarray(_resize(alpha, w, h)) if alpha is not None else None
        if out is image.pixels:
            out = out.copy()
        if new_alpha is not None and new_alpha is image.alpha:
            new_alpha = new_alpha.copy()
        return image.with_pixels(out, new_alpha)
