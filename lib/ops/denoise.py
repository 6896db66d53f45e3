"""denoise: non-local means (default) or an edge-preserving bilateral filter.

Pixels are HxWx3 BGR uint8/uint16 and keep their dtype. OpenCV's colour non-local means
works on 8-bit only, so a 16-bit image is denoised as the 8-bit version and the change is
added back to the 16-bit pixels (``out16 = in16 + 257 x (den8 - in8)``): flat areas keep
their 16-bit gradation while the noise the filter removed is removed at full depth. The
bilateral filter runs in float and needs no such step.

Non-local means averages each pixel with the pixels whose ``template`` x ``template``
neighbourhoods look alike, searched in a ``search`` x ``search`` window; OpenCV's time grows
with ``search`` squared and barely with ``template``. The defaults (7/21) are OpenCV's
recommended windows; the ``quick`` preset uses 3/9 (about 0.3x the time, with the PSNR and
review scores measured by ``python -m bench.denoise_choice``). A colour image is denoised
in OpenCV's Lab (lightness and colour apart), a gray one on its levels, so the same strength
usually acts more strongly on a colour picture.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from retouch.lib.image import Image
from retouch.lib.ops.base import OpContext, Operation, OpParams

TEMPLATE_DESCRIPTION = (
    "nlmeans patch size in pixels (odd): the neighbourhood compared to judge two pixels "
    "alike; smaller keeps fine texture, larger smooths more evenly"
)
SEARCH_DESCRIPTION = (
    "nlmeans search window in pixels (odd): larger finds more similar patches; the time "
    "grows with its square"
)


class DenoiseParams(OpParams):
    strength: float = Field(
        5.0,
        ge=1,
        le=30,
        description="Filter strength in 8-bit levels (about the noise sigma to remove)",
    )
    method: Literal["nlmeans", "bilateral"] = Field(
        "nlmeans", description="nlmeans (best, slower) or bilateral (fast, edge-preserving)"
    )
    template: int = Field(7, ge=3, le=15, description=TEMPLATE_DESCRIPTION)
    search: int = Field(21, ge=3, le=35, description=SEARCH_DESCRIPTION)

    @field_validator("template", "search")
    @classmethod
    def _odd(cls, value: int, info: ValidationInfo) -> int:
        if value % 2 == 0:
            raise ValueError(
                f"{info.field_name} must be an odd number of pixels (a window centred on the "
                f"pixel): use {value - 1} or {value + 1}"
            )
        return value


def _nlmeans8(img8: np.ndarray, params: DenoiseParams, gray: bool) -> np.ndarray:
    h, template, search = params.strength, params.template, params.search
    if gray:
        g = cv2.fastNlMeansDenoising(np.ascontiguousarray(img8[:, :, 0]), None, h, template, search)
        return np.repeat(g[:, :, None], 3, axis=2)
    return cv2.fastNlMeansDenoisingColored(img8, None, h, h, template, search)


class Denoise(Operation):
    id = "denoise"
    version = "1"
    Params = DenoiseParams
    summary = "Remove sensor/JPEG noise (non-local means or bilateral)"

    def __call__(self, image: Image, params: DenoiseParams, ctx: OpContext) -> Image:
        px = image.pixels
        if params.method == "bilateral":
            scale = 257.0 if px.dtype == np.uint16 else 1.0
            f = px.astype(np.float32)
            sigma_space = 1.5 + params.strength / 10.0
            out = cv2.bilateralFilter(f, 0, 3.0 * params.strength * scale, sigma_space)
            top = 65535 if px.dtype == np.uint16 else 255
            result = np.clip(np.rint(out), 0, top).astype(px.dtype)
        else:
            img8 = image.to_uint8()
            den8 = _nlmeans8(np.ascontiguousarray(img8), params, image.is_gray)
            if px.dtype == np.uint16:
                delta = (den8.astype(np.int32) - img8.astype(np.int32)) * 257
                result = np.clip(px.astype(np.int32) + delta, 0, 65535).astype(np.uint16)
            else:
                result = den8
        return image.with_pixels(np.ascontiguousarray(result), image.alpha)
