"""restore_faces: detect faces, restore them with GFPGAN / RestoreFormer and paste them back.

Pixels in and out are HxWx3 BGR uint8/uint16, output size = input size x ``upscale``.

- The background (everything but the faces) is made by retouch, not by GFPGANer: a Lanczos
  resize of the input (``upscale`` > 1) or the chosen Real-ESRGAN model through the same
  pool as the ``upscale`` operation. GFPGANer receives it as a precomputed background.
- The face models take 8-bit input. For 16-bit images the faces are restored from an 8-bit
  copy and applied as a difference: ``out16 = bg16 + (out8 - bg8) x 257``, so pixels outside
  the pasted faces keep their full 16-bit values and the faces carry 8-bit precision.
- Output is deterministic: the face network runs with its stored noise buffers
  (``randomize_noise=False``) instead of fresh random noise.
- Alpha is resized to the output size (bicubic); gray images stay gray (channel mean).
- Images with a side under ``MIN_FACE_SIDE`` pixels cannot hold a detectable face: they get
  the background only (the detector fails on such inputs).
"""

from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field

from ..image import Image, to_uint8
from ..models.pool import default_pool
from ..models.specs import get_spec
from .base import OpContext, Operation, OpParams
from .upscale import UpscaleModel, gray_like, upscale_pixels

FaceModel = Literal["gfpgan-v1.3", "gfpgan-v1.4", "restoreformer"]

MIN_FACE_SIDE = 16


class RestoreFacesParams(OpParams):
    model: FaceModel = Field("gfpgan-v1.4", description="Face restoration model from the registry")
    upscale: int = Field(1, ge=1, le=4, description="Output size = input size x this")
    only_center_face: bool = Field(False, description="Restore only the face nearest the centre")
    bg_upsampler: UpscaleModel | None = Field(
        None,
        description="Real-ESRGAN model for the background when upscale > 1; empty = Lanczos resize",
    )
    weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Passed to the face network; the networks used here (GFPGAN v1.3/v1.4 clean "
        "architecture, RestoreFormer) ignore it",
    )


class _Precomputed:
    """Stands in for GFPGANer's ``bg_upsampler``: returns the background we already made."""

    def __init__(self, bg: np.ndarray) -> None:
        self.bg = bg

    def enhance(self, img: np.ndarray, outscale: float | None = None) -> tuple[np.ndarray, None]:
        return self.bg, None


class RestoreFaces(Operation):
    id = "restore_faces"
    version = "1"
    Params = RestoreFacesParams
    summary = "Face restoration with GFPGAN v1.3/v1.4 or RestoreFormer (optional upscale)"

    def models(self, params: OpParams) -> list[str]:
        assert isinstance(params, RestoreFacesParams)
        names: list[str] = [params.model, *get_spec(params.model).needs]
        if params.bg_upsampler and params.upscale > 1:
            names.append(params.bg_upsampler)
        return names

    def _background(self, image: Image, params: RestoreFacesParams, ctx: OpContext) -> np.ndarray:
        up = params.upscale
        if up == 1:
            return image.pixels
        if params.bg_upsampler:
            return upscale_pixels(image.pixels, ctx, model=params.bg_upsampler, outscale=float(up))
        size = (image.width * up, image.height * up)
        return cv2.resize(image.pixels, size, interpolation=cv2.INTER_LANCZOS4)

    def __call__(self, image: Image, params: OpParams, ctx: OpContext) -> Image:
        assert isinstance(params, RestoreFacesParams)
        from ..models.fetch import weights_key
        from ..models.loaders import device_for, load_gfpganer

        bg = self._background(image, params, ctx)
        if min(image.height, image.width) < MIN_FACE_SIDE:
            out = bg
        else:
            device = device_for(ctx.device)
            key = (params.model, device, "fp32", (weights_key(params.model),))

            def factory() -> Any:
                return load_gfpganer(params.model, device=device, upscale=1)

            bg8 = to_uint8(bg)
            pool = ctx.pool if ctx.pool is not None else default_pool()
            with pool.use(key, factory) as restorer:
                # One instance serves every upscale factor: set it per call (under the lock).
                restorer.upscale = params.upscale
                restorer.face_helper.upscale_factor = params.upscale
                restorer.bg_upsampler = _Precomputed(bg8)
                try:
                    _, faces, out8 = restorer.enhance(
                        np.ascontiguousarray(image.to_uint8()),
                        has_aligned=False,
                        only_center_face=params.only_center_face,
                        paste_back=True,
                        weight=params.weight,
                    )
                finally:
                    restorer.bg_upsampler = None
                    restorer.face_helper.clean_all()
            ctx.count("model_calls")
            ctx.count("faces", len(faces))
            if not faces:
                out = bg
            elif bg.dtype == np.uint16:
                delta = out8.astype(np.float32) - bg8.astype(np.float32)
                out = np.clip(np.rint(bg.astype(np.float32) + delta * 257.0), 0, 65535).astype(
                    np.uint16
                )
            else:
                out = out8.astype(np.uint8)
        if image.is_gray:
            out = gray_like(out)
        return image.with_pixels(np.ascontiguousarray(out))
