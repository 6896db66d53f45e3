"""upscale: super-resolution with any upscaling model of the registry (Real-ESRGAN, the
shipped compact models, or a community model imported with ``retouch models import``).

Pixels in and out are HxWx3 BGR uint8/uint16 and keep their dtype. The model runs on float32
RGB in 0..1 (fp16 on CUDA when ``half`` allows), so 16-bit inputs keep 16-bit precision (we do
not use ``RealESRGANer.enhance``, which guesses the bit depth from ``max > 256`` and returns a
dark 16-bit image as 8-bit). The network is loaded by ``RealESRGANer`` but driven by
:func:`retouch.lib.models.tiling.upscale_tiled`: several same-size tiles per forward pass,
overlaps blended with smooth weights (no seams), the tile size chosen from a memory budget
when ``tile`` is 0 (a small image runs whole, a large one in tiles), inference mode and, on
CPU, channels-last. Alpha is not sent through the model: it is resized to the output
size with bicubic interpolation (``Image.with_pixels``), which is cheap and deterministic. Gray
images stay gray (the three output channels are averaged). Images with a side shorter than
``MIN_SIDE`` are mirrored up to that size before the model and cropped after, so 1x1 and 3x3
inputs work (the upstream helper crashes when a side is not larger than ``pre_pad``).
When the model runs out of memory (on a huge image or tile), fewer tiles go per pass; with
one tile per pass the image is retried with tiles of half the size, down to
``MIN_RETRY_TILE`` pixels, before it fails with a reason; the other images of the batch are
not affected.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator

from retouch.lib.errors import OperationError
from retouch.lib.image import Image
from retouch.lib.models.pool import PoolEntry, default_pool
from retouch.lib.models.specs import get_spec
from retouch.lib.ops.base import OpContext, Operation, OpParams, UpscaleModelName, model_field

# Inputs smaller than this (either side) are mirrored up to it before the model runs.
MIN_SIDE = 16
# Out of memory: retry with tiles halved down to this size before failing the image.
MIN_RETRY_TILE = 32


def smaller_tile(tile: int, height: int, width: int) -> int | None:
    """The next tile size to try after running out of memory with ``tile`` (0 = whole
    image of ``height`` x ``width``): half of it, or None below :data:`MIN_RETRY_TILE`."""
    current = tile if tile > 0 else max(height, width, MIN_SIDE)
    half = current // 2
    return half if half >= MIN_RETRY_TILE else None


class UpscaleParams(OpParams):
    model: UpscaleModelName = model_field(
        "upscale", "realesrgan-x4plus", "Upscaling model from the registry (shipped or imported)"
    )
    outscale: float | None = Field(
        None,
        ge=1,
        le=8,
        description="Final scale (e.g. 1.5, 2, 3.5); empty = the model's native scale",
    )
    tile: int = Field(
        0,
        ge=0,
        le=8192,
        description="Tile size in pixels to bound memory (0 = automatic: the whole image when "
        "it fits the memory budget, else tiles; else >= 32)",
    )
    tile_batch: int = Field(
        0,
        ge=0,
        le=64,
        description="Tiles per forward pass (0 = automatic: as many as fit the memory budget "
        "on a GPU, one on CPU)",
    )
    tile_pad: int = Field(
        10,
        ge=0,
        le=256,
        description="Context around each tile, in input pixels: neighbouring tiles overlap by "
        "at least twice this and are blended there",
    )
    pre_pad: int = Field(
        10, ge=0, le=256, description="Mirror padding at the image border, in input pixels"
    )
    denoise_strength: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Only for realesr-general-x4v3: 0 = keep noise, 1 = full denoise; empty = model default",
    )
    half: bool | None = Field(
        None, description="fp16 inference; empty = on CUDA only (always fp32 on CPU)"
    )

    @field_validator("tile")
    @classmethod
    def _tile_size(cls, value: int) -> int:
        if 0 < value < 32:
            raise ValueError("tile must be 0 (no tiling) or at least 32 pixels")
        return value

    @model_validator(mode="after")
    def _denoise_only_where_supported(self) -> UpscaleParams:
        if self.denoise_strength is not None and get_spec(self.model).dni_partner is None:
            raise ValueError(
                f"denoise_strength is only supported by realesr-general-x4v3, not {self.model}; remove it"
            )
        return self


def upscale_entry(
    model: str,
    device: str,
    *,
    half: bool | None = None,
    tile: int = 0,
    tile_pad: int = 10,
    pre_pad: int = 10,
    denoise_strength: float | None = None,
) -> PoolEntry:
    """The pool key and factory of upscale model ``model`` on ``device`` (resolved), as
    :func:`upscale_pixels` takes it from the pool."""
    from retouch.lib.models.families import get_family
    from retouch.lib.models.fetch import weights_key

    spec = get_spec(model)
    family = get_family(spec.kind)
    precision = family.dtype(spec, device, half)
    extra: tuple[Any, ...] = (weights_key(model),)
    # Settings a family may read (the official Real-ESRGAN helper does); others ignore them.
    options: dict[str, Any] = {
        "tile": tile,
        "tile_pad": tile_pad,
        "pre_pad": pre_pad,
        "denoise_strength": denoise_strength,
    }
    if denoise_strength is not None and denoise_strength < 1 and spec.dni_partner:
        extra += (weights_key(spec.dni_partner), round(float(denoise_strength), 4))

    def factory() -> Any:
        return family.load(spec, device=device, dtype=precision, **options)

    return (model, device, precision, extra), factory


def upscale_pixels(
    pixels: np.ndarray,
    ctx: OpContext,
    *,
    model: str,
    outscale: float | None = None,
    tile: int = 0,
    tile_pad: int = 10,
    pre_pad: int = 10,
    denoise_strength: float | None = None,
    half: bool | None = None,
    tile_batch: int = 0,
    memory_budget: int | None = None,
) -> np.ndarray:
    """Upscale HxWx3 BGR uint8/uint16 pixels with registry model ``model``; same dtype out.

    The output is ``round(W * outscale) x round(H * outscale)`` (native scale when ``outscale``
    is None). The model comes from ``ctx.pool`` (built once per process, device ``ctx.device``)
    and is used under the pool's per-model lock. ``tile=0`` picks tiles from the memory budget
    (``memory_budget`` bytes per pass; None = :func:`retouch.lib.models.budget.memory_budget`);
    ``tile_batch`` tiles go per pass (0 = as many as the budget allows on a GPU, one on CPU;
    see :data:`retouch.lib.models.tiling.CPU_TILE_BATCH`). Counts one
    ``model_calls`` and the network's ``forward_passes``.
    """
    from retouch.lib.models.families import get_family
    from retouch.lib.models.loaders import device_for, wants_channels_last
    from retouch.lib.models.tiling import (
        TiledOutOfMemory,
        free_device_memory,
        mod_align,
        upscale_tiled,
    )

    spec = get_spec(model)
    family = get_family(spec.kind)
    device = device_for(ctx.device)
    key, factory = upscale_entry(
        model,
        device,
        half=half,
        tile=tile,
        tile_pad=tile_pad,
        pre_pad=pre_pad,
        denoise_strength=denoise_strength,
    )
    needs = family.needs(spec)
    align = math.lcm(mod_align(spec.scale), needs.multiple_of)
    min_side = max(MIN_SIDE, needs.min_size)
    top = 65535.0 if pixels.dtype == np.uint16 else 255.0
    h, w = pixels.shape[:2]
    pad_h, pad_w = max(0, min_side - h), max(0, min_side - w)
    src = pixels
    if pad_h or pad_w:
        src = np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
    native = outscale is None or abs(outscale - spec.scale) < 1e-9
    # At the native scale the tiles are written straight into the output dtype (no float
    # copy of the whole output); another scale resizes the float output first.
    out_dtype = pixels.dtype if native else None
    pool = ctx.pool if ctx.pool is not None else default_pool()
    tile_now = tile
    while True:
        try:
            with pool.use(key, factory) as loaded:
                out, stats = upscale_tiled(
                    loaded.network,
                    src,
                    scale=int(loaded.scale),
                    top=top,
                    device=loaded.device,
                    half=loaded.half,
                    align=align,
                    channels_last=wants_channels_last(device),
                    tile=tile_now,
                    tile_pad=tile_pad,
                    pre_pad=pre_pad,
                    batch=tile_batch,
                    budget=memory_budget,
                    out_dtype=out_dtype,
                )
            break
        except TiledOutOfMemory as exc:
            # A huge image (or tile) must not cost the batch: halve the tiles and try again.
            free_device_memory()
            nxt = smaller_tile(exc.tile, h, w)
            if nxt is None:
                how = f"{exc.tile} px tiles" if exc.tile else "the whole image at once"
                raise OperationError(
                    f"out of memory upscaling {w}x{h} with {how}, even after retrying with "
                    f"smaller tiles ({exc}); free device memory or use a smaller model"
                ) from None
            ctx.count("oom_retries")
            tile_now = nxt
    ctx.count("model_calls")
    ctx.count("forward_passes", stats.forward_passes)
    if stats.batch_retries:
        ctx.count("oom_retries", stats.batch_retries)
    s = spec.scale
    out = out[: h * s, : w * s]
    if out_dtype is not None:
        return np.ascontiguousarray(out)
    if not native:
        assert outscale is not None
        size = (max(1, round(w * outscale)), max(1, round(h * outscale)))
        interp = cv2.INTER_LANCZOS4 if outscale > spec.scale else cv2.INTER_AREA
        out = np.clip(cv2.resize(out, size, interpolation=interp), 0.0, 1.0)
    return np.rint(out * top).astype(pixels.dtype)


def gray_like(pixels: np.ndarray) -> np.ndarray:
    """HxWx3 -> HxWx3 with the three channels replaced by their mean (same dtype)."""
    mean = np.rint(pixels.astype(np.float32).mean(axis=2))
    return np.repeat(mean[:, :, None], 3, axis=2).astype(pixels.dtype)


class Upscale(Operation):
    id = "upscale"
    version = "2"  # 2: blended tiles, automatic tiling of large images
    Params = UpscaleParams
    summary = "Super-resolution with Real-ESRGAN or an imported model (any final scale 1-8)"

    def models(self, params: OpParams) -> list[str]:
        assert isinstance(params, UpscaleParams)
        names: list[str] = [params.model]
        partner = get_spec(params.model).dni_partner
        if partner and params.denoise_strength is not None and params.denoise_strength < 1:
            names.append(partner)
        return names

    def pool_entries(self, params: OpParams, device: str) -> list[PoolEntry]:
        assert isinstance(params, UpscaleParams)
        entry = upscale_entry(
            params.model,
            device,
            half=params.half,
            tile=params.tile,
            tile_pad=params.tile_pad,
            pre_pad=params.pre_pad,
            denoise_strength=params.denoise_strength,
        )
        return [entry]

    def __call__(self, image: Image, params: OpParams, ctx: OpContext) -> Image:
        assert isinstance(params, UpscaleParams)
        out = upscale_pixels(
            image.pixels,
            ctx,
            model=params.model,
            outscale=params.outscale,
            tile=params.tile,
            tile_pad=params.tile_pad,
            pre_pad=params.pre_pad,
            denoise_strength=params.denoise_strength,
            half=params.half,
            tile_batch=params.tile_batch,
        )
        if image.is_gray:
            out = gray_like(out)
        # Alpha: bicubic resize to the new size (Image.with_pixels), not a model pass.
        return image.with_pixels(out)
