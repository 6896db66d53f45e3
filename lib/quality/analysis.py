"""Fast, offline analysis of one input image: what :func:`analyse` measures, the preset
that fits it (:func:`suggested_preset`) and plain-language advice (:func:`recommend`).

The measures live in :mod:`retouch.lib.quality.measures`, face detection in
:mod:`retouch.lib.quality.faces`, and the before/after comparison in
:mod:`retouch.lib.quality.score`."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from retouch.lib.image import Image
from retouch.lib.quality.faces import detect_faces, face_detector
from retouch.lib.quality.measures import (
    BLURRY_BELOW,
    CAST_ABOVE,
    NOISY_ABOVE,
    as_uint8,
    color_cast,
    exposure,
    gray_float,
    noise_sigma,
    sharpness,
)


def _palette_stats(bgr: np.ndarray) -> tuple[float, float]:
    """(unique colour ratio, flat fraction) on a nearest-neighbour thumbnail.

    Nearest-neighbour keeps the original colours (area averaging would invent new ones), so
    drawings and anime frames show few unique colours and many flat pixels.
    """
    arr = as_uint8(bgr)
    h, w = arr.shape[:2]
    f = min(1.0, 256 / max(h, w))
    if f < 1.0:
        arr = cv2.resize(
            arr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_NEAREST
        )
    # 5 bits per channel: JPEG noise on flat fills should not count as new colours.
    q = (arr >> 3).astype(np.int32)
    codes = (q[:, :, 0] << 10) | (q[:, :, 1] << 5) | q[:, :, 2]
    unique_ratio = float(np.unique(codes).size) / codes.size
    g = cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    if min(g.shape) < 3:
        return unique_ratio, 1.0
    grad = np.abs(cv2.Laplacian(g, cv2.CV_32F, ksize=1))
    return unique_ratio, float((grad < 3).mean())


# -- analyse / recommend --------------------------------------------------------------------


def analyse(image: Image, faces: bool = True) -> dict[str, Any]:
    """Measure one image and return a JSON-ready dict.

    Keys: width, height, megapixels, bit_depth, is_gray, has_alpha, faces (count, boxes as
    [x, y, w, h], smallest side in px, detector name or None), sharpness, noise, exposure
    (see :func:`~retouch.lib.quality.measures.exposure`), color_cast, unique_colors (ratio of
    distinct colours on a thumbnail) and flat_fraction. Face detection runs at 320 px on the longer side to stay
    fast, so faces smaller than about 8% of the longer side are missed; ``faces=False``
    skips it.
    """
    px = image.pixels
    gray = gray_float(px)
    boxes = detect_faces(px, max_side=320) if faces else []
    unique_ratio, flat = _palette_stats(px)
    return {
        "width": image.width,
        "height": image.height,
        "megapixels": round(image.width * image.height / 1e6, 3),
        "bit_depth": image.bit_depth,
        "is_gray": bool(image.is_gray),
        "has_alpha": image.alpha is not None,
        "faces": {
            "count": len(boxes),
            "boxes": [list(b) for b in boxes],
            "smallest": min((min(b[2], b[3]) for b in boxes), default=None),
            "detector": face_detector() if faces else None,
        },
        "sharpness": round(sharpness(gray), 2),
        "noise": round(noise_sigma(gray), 3),
        "exposure": {k: round(v, 4) for k, v in exposure(gray).items()},
        "color_cast": round(0.0 if image.is_gray else color_cast(px), 2),
        "unique_colors": round(unique_ratio, 4),
        "flat_fraction": round(flat, 4),
    }


SMALL_FACE_BELOW = 160
SMALL_IMAGE_SIDE = 800


def suggested_preset(analysis: dict[str, Any]) -> str:
    """The preset name that fits an :func:`analyse` result best.

    "portrait-restore" when faces are present and small or blurry, "anime-upscale" for flat
    drawings (few colours, mostly flat areas), "upscale-x4" for small images, else "quick".
    """
    faces = analysis["faces"]
    blurry = analysis["sharpness"] < BLURRY_BELOW
    if faces["count"] and (blurry or (faces["smallest"] or 0) < SMALL_FACE_BELOW):
        return "portrait-restore"
    small = max(analysis["width"], analysis["height"]) < SMALL_IMAGE_SIDE
    drawing = analysis["unique_colors"] < 0.05 and analysis["flat_fraction"] > 0.6
    if drawing and not analysis["is_gray"]:
        return "anime-upscale"
    if small:
        return "upscale-x4"
    return "quick"


def recommend(analysis: dict[str, Any]) -> list[str]:
    """Plain-language suggestions for an :func:`analyse` result.

    The first entry is always ``"suggested preset: NAME"`` (see :func:`suggested_preset`);
    the others name a problem and the step that addresses it.
    """
    out = [f"suggested preset: {suggested_preset(analysis)}"]
    faces = analysis["faces"]
    if faces["count"]:
        out.append(
            f"{faces['count']} face(s) found, smallest {faces['smallest']} px: restore_faces can repair them"
        )
    if max(analysis["width"], analysis["height"]) < SMALL_IMAGE_SIDE:
        out.append(f"small image ({analysis['width']}x{analysis['height']}): upscale by 2-4x")
    if analysis["sharpness"] < BLURRY_BELOW:
        out.append(f"looks soft (sharpness {analysis['sharpness']:.0f}): add sharpen or upscale")
    if analysis["noise"] > NOISY_ABOVE:
        out.append(f"noisy (sigma {analysis['noise']:.1f}): add denoise (strength 5-10)")
    exp = analysis["exposure"]
    if exp["mean"] < 0.25 or exp["dark"] > 0.2:
        out.append("underexposed: add auto_color (levels)")
    elif exp["mean"] > 0.8 or exp["bright"] > 0.2:
        out.append(
            "overexposed or clipped highlights: little can be recovered; auto_color may help"
        )
    elif exp["contrast"] < 0.5:
        out.append(f"low contrast ({exp['contrast']:.2f} of the range): add auto_color (levels)")
    if analysis["color_cast"] > CAST_ABOVE:
        out.append(
            f"colour cast ({analysis['color_cast']:.0f}): add auto_color with white_balance=grayworld"
        )
    if len(out) == 1:
        out.append("no obvious problem: the quick preset is enough")
    return out
