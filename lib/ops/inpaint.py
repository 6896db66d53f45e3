"""inpaint: fill masked areas (objects, watermarks) with LaMa, or with OpenCV's Telea/NS.

Pixels are HxWx3 BGR uint8/uint16 in and out. Only the masked pixels change: every other
pixel is returned bit-identical, at the input's bit depth; gray images stay gray (the fill's
channels are averaged); alpha and metadata are kept as they are.

Where the mask comes from, first found wins (a rectangle, ``rect``/``rect_rel``, is added to
it):

1. the step's ``mask_dir``, else the run's ``--masks``: a folder (mask with the image's
   stem, sub-folders mirrored) or ONE image file, which is then the mask of every image;
2. a file ``<stem>_mask*.png`` beside the image (the run does not process those files as
   images).

For a video clip, a mask that is itself a video (``masks/party.mp4`` for ``party.mp4``, or
a video named in ``mask_dir``) gives each frame the mask frame shown at the same time
(:mod:`retouch.lib.video.masks`; its content's sha256 is part of the clip's key); an image
mask masks every frame alike. A mask video given to an image fails that image.

Mask rules: white (> 127) = fill, black = keep; an RGBA mask whose alpha is not all opaque
is read by its alpha (painted = fill); colour masks by their brightest channel; 16-bit and
palette masks work; a mask of another size is resized to the image (nearest neighbour);
then it is grown by ``dilate`` px. With ``missing_mask="error"`` (the remove-objects
presets) an image without a mask, or whose mask is empty (all black), fails with a reason
instead of coming out unchanged; with ``"skip"`` it is passed through unchanged. A black
frame of a mask video leaves its clip frame unchanged either way. An
unreadable mask file always fails that image, naming the file. An all-white mask fills the
whole image: with LaMa there is then no context left and the result is whatever the model
invents (the ``crop`` strategy resizes the image to ``resize_limit``); it is allowed, as a
plain mask of what to replace, but rarely what you want.

``method="lama"`` runs the registry model ``model`` (big-lama) through
:mod:`retouch.lib.models.inpainting`: ``strategy`` ``crop`` (default: each masked region
with ``crop_margin`` px of context around it, crops of one image batched), ``resize`` (the
whole image at ``resize_limit`` px) or ``original`` (the whole image at its size). CPU runs
fp32, CUDA bf16 (LaMa's FFT layers break in fp16). ``feather`` blends the fill into the
original over that many px inside the mask (never outside it).

``method="telea"``/``"ns"``: OpenCV's inpainting, 8-bit only: the 8-bit version is filled and
only the masked pixels are replaced (x257 for 16-bit).
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, field_validator

from retouch.lib.errors import OperationError, RetouchError
from retouch.lib.image import Image
from retouch.lib.masks import MaskSource, video_mask_for_image
from retouch.lib.models.pool import PoolEntry
from retouch.lib.models.specs import check_purpose, names
from retouch.lib.ops.base import MaskLookup, OpContext, Operation, OpParams
from retouch.lib.settings import get_settings
from retouch.lib.sources.items import is_video_name


def _inpaint_models(schema: dict[str, Any]) -> None:
    schema["enum"] = names(purpose="inpaint")


class InpaintParams(OpParams):
    method: Literal["telea", "ns", "lama"] = Field(
        "telea",
        description="lama (learned: big-lama, for objects and watermarks), telea (fast "
        "marching) or ns (Navier-Stokes); telea and ns are quick but smear large areas",
    )
    model: str = Field(
        "big-lama",
        description="Inpainting model from the registry (method lama)",
        json_schema_extra=_inpaint_models,
    )
    strategy: Literal["crop", "resize", "original"] = Field(
        "crop",
        description="method lama: crop (each masked region with crop_margin px around it), "
        "resize (whole image, long side resize_limit) or original (whole image, its size)",
    )
    crop_margin: int = Field(
        128, ge=0, le=2048, description="method lama, crop: context around each region, px"
    )
    resize_limit: int = Field(
        1280,
        ge=64,
        le=8192,
        description="method lama: long side (px) a crop or, with resize, the image is "
        "reduced to before the model runs",
    )
    feather: int = Field(
        0,
        ge=0,
        le=64,
        description="method lama: blend the fill's edge over this many px inside the mask",
    )
    radius: int = Field(
        3, ge=1, le=50, description="telea/ns: neighbourhood (pixels) each filled pixel draws from"
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
        None,
        description="Folder of masks named after each image's stem (white = fill), or one "
        "mask file for every image",
    )
    dilate: int = Field(2, ge=0, le=50, description="Grow masks by this many pixels to cover edges")
    missing_mask: Literal["skip", "error"] = Field(
        "skip",
        description="When an image has no mask (or an all-black one) and no rect: skip "
        "(leave unchanged) or error",
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        try:
            return check_purpose(value, "inpaint")
        except RetouchError as exc:
            raise ValueError(str(exc)) from None


def _stem(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).stem if name else ""


def _prepare_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """HxW uint8 255/0 at ``width`` x ``height`` from a mask of any size and dtype."""
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
        m = cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.where(m > 127, 255, 0).astype(np.uint8)


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


def _mask_video_uri(lookup: MaskLookup | None, name: str) -> str | None:
    """The URI of the mask found for ``name`` when it is a video, else None."""
    if not isinstance(lookup, MaskSource):
        return None
    uri = lookup.uri_for(name)
    return uri if uri is not None and is_video_name(uri) else None


def mask_video_of(params: InpaintParams, ctx: OpContext) -> str | None:
    """The URI of the mask video found for the clip ``ctx.name``, or None (no mask, or a
    mask image)."""
    return _mask_video_uri(_mask_lookup(params, ctx), ctx.name)


def _mask_video_frame(uri: str, ctx: OpContext) -> np.ndarray:
    """The mask video's frame for the clip frame being processed (``ctx.frame_time``);
    the reader stays open in ``ctx`` for the following frames."""
    from retouch.lib.video.masks import MaskVideo

    if ctx.frame_time is None:
        raise video_mask_for_image(ctx.name or "image", uri)
    key = f"inpaint.mask_video:{uri}"
    reader = ctx.state.get(key)
    if reader is None:
        settings = get_settings()
        reader = ctx.resources.enter_context(
            MaskVideo(
                uri,
                ctx.name,
                pixel_limit=settings.pixel_limit,
                max_bytes=settings.max_video_bytes,
            )
        )
        ctx.state[key] = reader
    plane: np.ndarray = reader.at(ctx.frame_time)
    return plane


def _found_mask(params: InpaintParams, ctx: OpContext) -> np.ndarray | None:
    """The image's mask file (mask folder or file, else ``<stem>_mask*.png`` beside the
    image) as read, or None when there is none; for a video's frame, the mask video's frame
    at its time when the mask is a video."""
    lookup = _mask_lookup(params, ctx)
    if lookup is not None:
        video = _mask_video_uri(lookup, ctx.name)
        if video is not None:
            return _mask_video_frame(video, ctx)
        found = lookup(ctx.name or _stem(ctx.name))
        if found is not None:
            return found
    if ctx.beside is not None and ctx.uri:
        return ctx.beside(ctx.uri)
    return None


def _given_mask(
    params: InpaintParams, ctx: OpContext, width: int, height: int
) -> np.ndarray | None:
    """The step's rectangle and/or the image's mask file, at ``width`` x ``height``."""
    mask = _rect_mask(params, width, height)
    found = _found_mask(params, ctx)
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


def _where(params: InpaintParams, ctx: OpContext) -> str:
    if params.mask_dir:
        return f"in mask_dir {params.mask_dir!r}"
    if ctx.masks is not None:
        return "in the run's masks (--masks)"
    return "(no mask folder: pass --masks DIR or FILE, set inpaint.mask_dir, or put <stem>_mask.png beside the image)"


def lama_entry(model: str, device: str) -> PoolEntry:
    """The pool key and factory of inpainting model ``model`` on ``device`` (resolved)."""
    from retouch.lib.models.families import get_family
    from retouch.lib.models.fetch import weights_key
    from retouch.lib.models.specs import get_spec

    spec = get_spec(model)
    family = get_family(spec.kind)
    precision = family.dtype(spec, device, None)

    def factory() -> Any:
        return family.load(spec, device=device, dtype=precision)

    return (model, device, precision, (weights_key(model),)), factory


def _lama_fill(
    pixels: np.ndarray, mask: np.ndarray, params: InpaintParams, ctx: OpContext
) -> np.ndarray:
    """The LaMa fill of HxWx3 BGR uint8/uint16 ``pixels`` where ``mask`` (HxW bool) is
    True, as HxWx3 float32 BGR in 0..1 (valid inside the mask only)."""
    from retouch.lib.models import inpainting
    from retouch.lib.models.budget import memory_budget
    from retouch.lib.models.device import device_for
    from retouch.lib.models.pool import default_pool
    from retouch.lib.models.tiling import free_device_memory, is_out_of_memory

    key, factory = lama_entry(params.model, device_for(ctx.device))
    top = 65535.0 if pixels.dtype == np.uint16 else 255.0
    rgb = np.ascontiguousarray(pixels[:, :, ::-1], dtype=np.float32) / np.float32(top)
    boxes, labels = inpainting.plan(
        mask, params.strategy, margin=params.crop_margin, resize_limit=params.resize_limit
    )
    pool = ctx.pool if ctx.pool is not None else default_pool()
    try:
        with pool.use(key, factory) as loaded:
            out, stats = inpainting.fill(
                loaded.network,
                rgb,
                mask,
                boxes,
                labels,
                device=loaded.device,
                dtype=loaded.dtype,
                budget=memory_budget(loaded.device),
            )
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        free_device_memory()
        h, w = mask.shape
        raise OperationError(
            f"out of memory inpainting {w}x{h} with strategy {params.strategy} ({exc}); "
            "use strategy=crop or resize with a smaller resize_limit, or free device memory"
        ) from None
    ctx.count("model_calls")
    ctx.count("forward_passes", stats.forward_passes)
    return np.ascontiguousarray(out[:, :, ::-1])


class Inpaint(Operation):
    id = "inpaint"
    # 2: method lama; masks beside images, one mask file for all, alpha masks, nearest
    # resize; an empty mask fails with missing_mask=error. Mask videos change no result
    # an earlier version gave (they failed before), so the version stays.
    version = "2"
    Params = InpaintParams
    summary = "Remove objects or watermarks marked by masks (LaMa), or fill them quickly (Telea)"

    def models(self, params: InpaintParams) -> list[str]:
        return [params.model] if params.method == "lama" else []

    def pool_entries(self, params: InpaintParams, device: str) -> list[PoolEntry]:
        return [lama_entry(params.model, device)] if params.method == "lama" else []

    def key_inputs(self, params: InpaintParams, ctx: OpContext) -> Any:
        lookup = _mask_lookup(params, ctx)
        if lookup is None and (ctx.beside is None or not ctx.uri):
            return None
        video = _mask_video_uri(lookup, ctx.name)
        if video is not None:
            if not is_video_name(ctx.name):
                raise video_mask_for_image(ctx.name or "image", video)
            assert isinstance(lookup, MaskSource)
            return {"mask_video": lookup.digest(video)}
        mask = _found_mask(params, ctx)
        if mask is None:
            return {"mask": None}
        digest = hashlib.sha256(repr(mask.shape).encode() + mask.tobytes()).hexdigest()
        return {"mask": digest}

    def __call__(self, image: Image, params: InpaintParams, ctx: OpContext) -> Image:
        h, w = image.height, image.width
        stem = _stem(ctx.name)
        who = ctx.name or stem or "image"
        mask = _given_mask(params, ctx, w, h)
        if mask is None:
            if params.missing_mask == "error":
                raise OperationError(
                    f"{who}: no inpaint mask for stem {stem!r} {_where(params, ctx)} and no "
                    "rect/rect_rel given; add a mask named after the image, set rect, or "
                    "set inpaint.missing_mask=skip"
                )
            return image.with_pixels(image.pixels.copy(), image.alpha)
        if not mask.any():
            # A mask video is black wherever nothing is to be removed at that moment.
            in_video = _mask_video_uri(_mask_lookup(params, ctx), ctx.name) is not None
            if params.missing_mask == "error" and not in_video:
                raise OperationError(
                    f"{who}: its inpaint mask {_where(params, ctx)} is empty (all black: "
                    "nothing to remove); paint what to remove in white, or set "
                    "inpaint.missing_mask=skip to pass such images through unchanged"
                )
            return image.with_pixels(image.pixels.copy(), image.alpha)
        mask = _dilated(mask, params.dilate)
        sel = mask > 0
        out = image.pixels.copy()
        if params.method == "lama":
            top = 65535.0 if out.dtype == np.uint16 else 255.0
            filled = _lama_fill(image.pixels, sel, params, ctx)
            if params.feather > 0:
                dist = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
                weight = np.clip(dist / float(params.feather), 0.0, 1.0)[:, :, None]
                original = image.pixels.astype(np.float32) / np.float32(top)
                filled = original + (filled - original) * weight
            values = filled[sel]
            if image.is_gray:
                values = np.repeat(values.mean(axis=1, keepdims=True), 3, axis=1)
            out[sel] = np.rint(np.clip(values, 0.0, 1.0) * top).astype(out.dtype)
            return image.with_pixels(out, image.alpha)
        flag = cv2.INPAINT_TELEA if params.method == "telea" else cv2.INPAINT_NS
        filled8 = cv2.inpaint(np.ascontiguousarray(image.to_uint8()), mask, params.radius, flag)
        if out.dtype == np.uint16:
            out[sel] = filled8[sel].astype(np.uint16) * np.uint16(257)
        else:
            out[sel] = filled8[sel]
        if image.is_gray:
            out[sel] = out[sel].mean(axis=1, keepdims=True).round().astype(out.dtype)
        return image.with_pixels(out, image.alpha)
