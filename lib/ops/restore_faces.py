"""restore_faces: detect faces, restore them with GFPGAN / RestoreFormer and paste them back.

Pixels in and out are HxWx3 BGR uint8/uint16, output size = input size x ``upscale``.

- The background (everything but the faces) is made by retouch, not by GFPGANer: a Lanczos
  resize of the input (``upscale`` > 1) or the chosen Real-ESRGAN model through the same
  pool as the ``upscale`` operation. The faces are pasted onto it (facexlib's paste-back).
- The face models take 8-bit input. For 16-bit images the faces are restored from an 8-bit
  copy and applied as a difference: ``out16 = bg16 + (out8 - bg8) x 257``, so pixels outside
  the pasted faces keep their full 16-bit values and the faces carry 8-bit precision.
- Output is deterministic: the face network runs with its stored noise buffers
  (``randomize_noise=False``) instead of fresh random noise.
- The faces of an image go through the face network several per forward pass
  (:func:`restore_aligned_faces`; ``GFPGANer.enhance`` runs one at a time), with the same
  detection, alignment and paste-back (facexlib's ``FaceRestoreHelper``) as GFPGANer.
  Batching gives the same faces as one at a time up to float summation order (at most one
  8-bit level, measured).
- Alpha is resized to the output size (bicubic); gray images stay gray (channel mean).
- Images with a side under ``MIN_FACE_SIDE`` pixels cannot hold a detectable face: they get
  the background only (the detector fails on such inputs).
- Video frames: the detector's landmarks jitter by a pixel or two from frame to frame, and
  each restored face follows its alignment, which shows as a shimmering face. Landmarks of
  a face that barely moved since the previous frame are averaged with that frame's
  (:func:`smooth_landmarks`); a face that moved, or a new one, keeps its own.
- Video frames reuse the face detector's answer (boxes and 5 landmarks) of an earlier
  frame of the same segment while the picture around each face barely changed since that
  frame, for at most ``redetect_every`` frames (:func:`detections_hold`); a scene cut,
  motion around a face or the limit detects again. Images are always detected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from pydantic import Field

from retouch.lib.errors import OperationError
from retouch.lib.image import Image, to_uint8
from retouch.lib.models.pool import PoolEntry, default_pool
from retouch.lib.models.specs import get_spec
from retouch.lib.ops.base import (
    FaceModelName,
    OpContext,
    Operation,
    OpParams,
    UpscaleModelName,
    model_field,
)
from retouch.lib.ops.upscale import gray_like, upscale_entry, upscale_pixels
from retouch.lib.video.temporal import SCENE_CUT

MIN_FACE_SIDE = 16
MAX_FACE_BATCH = 8
"""Most faces per forward pass (a group photo rarely has more; a GPU is busy well before)."""
FACE_MEMORY_SAFETY = 6.0
"""Traced activation size -> real peak for the face networks: GFPGANv1Clean keeps every
scale's SFT conditions alive while decoding, which module tracing does not see (traced
128 MB per face, measured peak RSS 711 MB per face on CPU, fp32)."""
FACE_FALLBACK_BYTES = 1024**3
"""Bytes per face assumed when the face network cannot be traced."""


SMOOTH_KEEP = 0.5
"""Weight of the previous frame's landmarks for a face that barely moved."""
SMOOTH_MOVE = 0.15
"""A face whose landmarks moved more than this share of its eye distance since the previous
frame moved (its own landmarks are kept); less is the detector's jitter."""


def smooth_landmarks(current: list[Any], previous: list[Any]) -> list[np.ndarray]:
    """Each face's landmarks (an (N, 2) array) steadied against the previous frame's: when
    the nearest previous face is within :data:`SMOOTH_MOVE` of its eye distance (mean
    point distance), the two are blended with :data:`SMOOTH_KEEP`; otherwise, and for a
    face with no previous one, its landmarks are kept as detected."""
    out = []
    for points in current:
        now = np.asarray(points, np.float64)
        eyes = max(1.0, float(np.linalg.norm(now[0] - now[1])))
        best, distance = None, np.inf
        for before in previous:
            before = np.asarray(before, np.float64)
            if before.shape != now.shape:
                continue
            d = float(np.mean(np.linalg.norm(now - before, axis=1)))
            if d < distance:
                best, distance = before, d
        if best is not None and distance <= SMOOTH_MOVE * eyes:
            now = (1 - SMOOTH_KEEP) * now + SMOOTH_KEEP * best
        out.append(now)
    return out


REUSE_SIDE = 160
"""A video frame is compared whole (scene cuts; frames with no face) at most this many
pixels on its longer side."""
FACE_SIDE = 32
"""Each face's surroundings are compared at this many pixels square, whatever the face's
size, so the same motion relative to the face counts the same in any resolution."""
FACE_MARGIN = 0.25
"""Share of a face box's width and height added on each side where change is looked for."""
FACE_STILL = 2.0
"""Mean change (levels of 255) of a face's surroundings since the frame its detection came
from, at :data:`FACE_SIDE`, up to which the face is still and its detection is reused. A
high-contrast face passes it after moving about a twentieth of its width, well within the
jitter :func:`smooth_landmarks` averages away."""
DETECTIONS = "restore_faces.detections"
"""Where a video frame's detections are kept in ``OpContext.state`` for the next frames."""


def frame_gray(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` (HxWx3 BGR or HxW, uint8) as gray HxW float32, levels of 255."""
    gray = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY) if pixels.ndim == 3 else pixels
    return gray.astype(np.float32)


def _whole(gray: np.ndarray) -> np.ndarray:
    h, w = gray.shape
    scale = min(1.0, REUSE_SIDE / max(h, w))
    if scale == 1.0:
        return gray
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def _around(gray: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    h, w = gray.shape
    views = []
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 15)[:, :4]:
        mx, my = (x2 - x1) * FACE_MARGIN, (y2 - y1) * FACE_MARGIN
        left = int(np.clip(np.floor(x1 - mx), 0, w - 1))
        top = int(np.clip(np.floor(y1 - my), 0, h - 1))
        right = int(np.clip(np.ceil(x2 + mx), left + 1, w))
        bottom = int(np.clip(np.ceil(y2 + my), top + 1, h))
        crop = gray[top:bottom, left:right]
        views.append(cv2.resize(crop, (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_AREA))
    return views


@dataclass
class Detections:
    """The face detector's answer on one video frame, kept for the frames after it.

    Attributes:
        boxes: the detector's rows (N x 15 float: box x1, y1, x2, y2, score, then the 5
            landmarks' x, y), in the frame's pixels.
        whole: that frame, gray, at most :data:`REUSE_SIDE` px.
        faces: each face's surroundings in that frame, gray, :data:`FACE_SIDE` px square.
        size: that frame's (height, width).
        frames: frames that used it so far, the one it came from included.
    """

    boxes: np.ndarray
    whole: np.ndarray
    faces: list[np.ndarray]
    size: tuple[int, int]
    frames: int = 1

    @classmethod
    def of(cls, boxes: np.ndarray, gray: np.ndarray) -> Detections:
        """The detections ``boxes`` made on the frame ``gray`` (:func:`frame_gray`)."""
        size = (gray.shape[0], gray.shape[1])
        return cls(boxes, _whole(gray), _around(gray, boxes), size)


def detections_hold(kept: Detections | None, gray: np.ndarray, redetect_every: int) -> bool:
    """Whether a video frame (``gray``, from :func:`frame_gray`) may reuse the detections
    ``kept`` from an earlier frame instead of running the detector: they were used by fewer
    than ``redetect_every`` frames, the frame has their size, it is no scene cut from theirs
    (mean change over :data:`~retouch.lib.video.temporal.SCENE_CUT`) and around each of
    their faces (the box grown by :data:`FACE_MARGIN`, at :data:`FACE_SIDE`) the mean change
    is at most :data:`FACE_STILL`. With no face, the whole frame must be that still, so a
    face coming in is detected on the frame it appears."""
    if kept is None or kept.frames >= redetect_every or kept.size != gray.shape:
        return False
    change = float(np.mean(np.abs(_whole(gray) - kept.whole)))
    if change > SCENE_CUT:
        return False
    if len(kept.faces) == 0:
        return change <= FACE_STILL
    return all(
        float(np.mean(np.abs(now - then))) <= FACE_STILL
        for now, then in zip(_around(gray, kept.boxes), kept.faces, strict=True)
    )


class _Detector:
    """Stands in for the face helper's detector during one frame: runs the real one and
    keeps its answer, or gives back an answer kept from an earlier frame (facexlib then
    filters, picks and aligns the faces exactly as after a detection)."""

    def __init__(self, real: Any, boxes: np.ndarray | None = None):
        self.real = real
        self.boxes = boxes

    def detect_faces(self, image: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        if self.boxes is None:
            self.boxes = np.array(self.real.detect_faces(image, *args, **kwargs), copy=True)
        return self.boxes.copy()


class RestoreFacesParams(OpParams):
    model: FaceModelName = model_field(
        "face", "gfpgan-v1.4", "Face restoration model from the registry (shipped or imported)"
    )
    upscale: int = Field(1, ge=1, le=4, description="Output size = input size x this")
    only_center_face: bool = Field(False, description="Restore only the face nearest the centre")
    bg_upsampler: UpscaleModelName | None = model_field(
        "upscale",
        None,
        "Upscaling model for the background when upscale > 1; empty = Lanczos resize",
    )
    weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Passed to the face network; the networks used here (GFPGAN v1.3/v1.4 clean "
        "architecture, RestoreFormer) ignore it",
    )
    redetect_every: int = Field(
        5,
        ge=1,
        description="Videos: run the face detector at least every this many frames; the frames "
        "between reuse its faces while the picture around each face barely changes (a scene "
        "cut or motion detects again). 1 = detect on every frame. Images are always detected",
    )


def face_batch_size(net: Any, device: str, budget: int | None = None) -> int:
    """Faces per forward pass of ``net`` that fit the memory budget of ``device``."""
    from retouch.lib.models.budget import activation_bytes, batch_for, memory_budget

    per_face = activation_bytes(
        net,
        (1, 3, 512, 512),
        elem_bytes=4,
        fallback=FACE_FALLBACK_BYTES,
        safety=FACE_MEMORY_SAFETY,
        return_rgb=False,
    )
    budget = memory_budget(device) if budget is None else budget
    return batch_for(budget, per_face, most=MAX_FACE_BATCH)


def restore_aligned_faces(
    net: Any,
    crops: list[np.ndarray],
    *,
    device: str,
    weight: float = 0.5,
    batch: int = 0,
    budget: int | None = None,
) -> list[np.ndarray]:
    """Restore aligned face crops with face network ``net``, ``batch`` per forward pass.

    Args:
        net: GFPGANer's ``gfpgan`` network (called as GFPGANer does:
            ``net(x, return_rgb=False, weight=weight)[0]``).
        crops: 512x512x3 BGR uint8 aligned faces (``FaceRestoreHelper.cropped_faces``).
        batch: faces per pass; 0 = from the memory budget (:func:`face_batch_size`).

    Returns:
        The restored faces, 512x512x3 BGR uint8, in the order of ``crops``. The pre- and
        post-processing are GFPGANer's own (``img2tensor``, normalise to -1..1,
        ``tensor2img``).

    Raises:
        OperationError: out of memory even with one face per pass, or the network failed.
    """
    import torch
    from basicsr.utils import img2tensor, tensor2img
    from torchvision.transforms.functional import normalize

    from retouch.lib.models.tiling import free_device_memory, is_out_of_memory

    if not crops:
        return []
    if batch <= 0:
        batch = face_batch_size(net, device, budget)
    batch = min(batch, len(crops))
    restored: list[np.ndarray] = []
    i = 0
    with torch.inference_mode():
        while i < len(crops):
            chunk = crops[i : i + batch]
            tensors = []
            for crop in chunk:
                t = img2tensor(crop / 255.0, bgr2rgb=True, float32=True)
                normalize(t, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), inplace=True)
                tensors.append(t)
            x = torch.stack(tensors).to(device)
            try:
                out = net(x, return_rgb=False, weight=weight)[0]
            except Exception as exc:
                del x
                if is_out_of_memory(exc) and batch > 1:
                    free_device_memory()
                    batch = max(1, batch // 2)
                    continue
                what = "out of memory" if is_out_of_memory(exc) else "failed"
                raise OperationError(
                    f"the face network {what} on {len(chunk)} face(s) of 512x512 ({exc}); "
                    "free device memory or restore fewer faces (only_center_face)"
                ) from None
            for k in range(len(chunk)):
                face = tensor2img(out[k], rgb2bgr=True, min_max=(-1, 1))
                restored.append(face.astype("uint8"))
            i += len(chunk)
    return restored


def face_entry(model: str, device: str) -> PoolEntry:
    """The pool key and factory of face model ``model`` (with its detector and parser) on
    ``device`` (resolved), as :class:`RestoreFaces` takes it from the pool."""
    from retouch.lib.models.families import get_family
    from retouch.lib.models.fetch import weights_key

    spec = get_spec(model)
    family = get_family(spec.kind)

    def factory() -> Any:
        # One instance serves every upscale factor (set per call).
        return family.load(spec, device=device, dtype="fp32", upscale=1).handle

    return (model, device, "fp32", (weights_key(model),)), factory


class RestoreFaces(Operation):
    id = "restore_faces"
    version = "2"  # 2: faces batched; a large background upscale is tiled
    Params = RestoreFacesParams
    video_params = frozenset({"redetect_every"})
    summary = (
        "Face restoration with GFPGAN, RestoreFormer or an imported face model (optional upscale)"
    )

    def models(self, params: OpParams) -> list[str]:
        assert isinstance(params, RestoreFacesParams)
        names: list[str] = [params.model, *get_spec(params.model).needs]
        if params.bg_upsampler and params.upscale > 1:
            names.append(params.bg_upsampler)
        return names

    def pool_entries(self, params: OpParams, device: str) -> list[PoolEntry]:
        assert isinstance(params, RestoreFacesParams)
        entries = [face_entry(params.model, device)]
        if params.bg_upsampler and params.upscale > 1:
            entries.append(upscale_entry(params.bg_upsampler, device))
        return entries

    def _background(self, image: Image, params: RestoreFacesParams, ctx: OpContext) -> np.ndarray:
        up = params.upscale
        if up == 1:
            return image.pixels
        if params.bg_upsampler:
            return upscale_pixels(image.pixels, ctx, model=params.bg_upsampler, outscale=float(up))
        size = (image.width * up, image.height * up)
        return cv2.resize(image.pixels, size, interpolation=cv2.INTER_LANCZOS4)

    @staticmethod
    def _faces(
        restorer: Any, image: Image, params: RestoreFacesParams, device: str, ctx: OpContext
    ) -> list[np.ndarray]:
        """Detect, align and restore the faces of ``image`` into ``restorer.face_helper``
        (as ``GFPGANer.enhance`` does, but several faces per forward pass); a video frame's
        landmarks are steadied against the previous frame's (:func:`smooth_landmarks`) and
        its detections may come from an earlier frame (:func:`detections_hold`)."""
        import torch

        helper = restorer.face_helper
        helper.clean_all()
        pixels = np.ascontiguousarray(image.to_uint8())
        real = helper.face_det
        detector: _Detector | None = None
        if ctx.clip_id:
            gray = frame_gray(pixels)
            kept = ctx.state.get(DETECTIONS)
            if kept is not None and detections_hold(kept, gray, params.redetect_every):
                kept.frames += 1
                detector = _Detector(real, kept.boxes)
                ctx.count("face_detections_reused")
            else:
                detector = _Detector(real)
            fresh = detector.boxes is None
            helper.face_det = detector
        try:
            with torch.no_grad():
                helper.read_image(pixels)
                helper.get_face_landmarks_5(
                    only_center_face=params.only_center_face, eye_dist_threshold=5
                )
        finally:
            helper.face_det = real
        with torch.no_grad():
            if detector is not None:
                if fresh and detector.boxes is not None:
                    ctx.state[DETECTIONS] = Detections.of(detector.boxes, gray)
                key = "restore_faces.landmarks"
                helper.all_landmarks_5 = smooth_landmarks(
                    helper.all_landmarks_5, ctx.state.get(key, [])
                )
                ctx.state[key] = helper.all_landmarks_5
            helper.align_warp_face()
        restored = restore_aligned_faces(
            restorer.gfpgan, helper.cropped_faces, device=device, weight=params.weight
        )
        for face in restored:
            helper.add_restored_face(face)
        return restored

    def __call__(self, image: Image, params: OpParams, ctx: OpContext) -> Image:
        assert isinstance(params, RestoreFacesParams)
        from retouch.lib.models.loaders import device_for

        bg = self._background(image, params, ctx)
        if min(image.height, image.width) < MIN_FACE_SIDE:
            out = bg
        else:
            device = device_for(ctx.device)
            key, factory = face_entry(params.model, device)
            bg8 = to_uint8(bg)
            pool = ctx.pool if ctx.pool is not None else default_pool()
            out8: np.ndarray | None = None
            with pool.use(key, factory) as restorer:
                # One instance serves every upscale factor: set it per call (under the lock).
                helper = restorer.face_helper
                helper.upscale_factor = params.upscale
                try:
                    faces = self._faces(restorer, image, params, device, ctx)
                    if faces:
                        helper.get_inverse_affine(None)
                        out8 = helper.paste_faces_to_input_image(upsample_img=bg8)
                finally:
                    helper.clean_all()
            ctx.count("model_calls")
            ctx.count("faces", len(faces))
            if out8 is None:
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
