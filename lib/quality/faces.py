"""Frontal face detection for analysis, cropping and review.

Face detection uses OpenCV's Haar cascade when the OpenCV build ships it (4.x); OpenCV 5
dropped ``CascadeClassifier``, so then scikit-image's LBP frontal-face cascade is used if
scikit-image is installed, and otherwise no faces are reported (``face_detector()``
returns None)."""

from __future__ import annotations

import os
import threading
from typing import Any

import cv2
import numpy as np

from retouch.lib.image import Image
from retouch.lib.quality.measures import array_of, as_uint8, shrink

Box = tuple[int, int, int, int]


_local = threading.local()
_HAAR_NAME = "haarcascade_frontalface_default.xml"


def _haar_path() -> str | None:
    candidates = []
    data = getattr(cv2, "data", None)
    if data is not None and getattr(data, "haarcascades", None):
        candidates.append(os.path.join(data.haarcascades, _HAAR_NAME))
    # Debian's opencv-data package, for OpenCV builds whose wheel carries no data folder.
    candidates += [
        f"/usr/share/opencv4/haarcascades/{_HAAR_NAME}",
        f"/usr/share/opencv/haarcascades/{_HAAR_NAME}",
    ]
    return next((p for p in candidates if os.path.isfile(p)), None)


def _detector() -> tuple[str, Any] | None:
    """The per-thread face detector: detectors keep scratch state and are not thread-safe."""
    if not hasattr(_local, "detector"):
        _local.detector = None
        path = _haar_path() if hasattr(cv2, "CascadeClassifier") else None
        if path:
            clf = cv2.CascadeClassifier(path)
            if not clf.empty():
                _local.detector = ("opencv-haar", clf)
        if _local.detector is None:
            try:
                from skimage import data as skdata
                from skimage.feature import Cascade

                _local.detector = (
                    "skimage-lbp",
                    Cascade(skdata.lbp_frontal_face_cascade_filename()),
                )
            except (ImportError, OSError, AttributeError):
                pass
    return _local.detector


def face_detector() -> str | None:
    """Name of the face detector in use ("opencv-haar", "skimage-lbp") or None if none works."""
    det = _detector()
    return det[0] if det else None


def detect_faces(bgr: Image | np.ndarray, max_side: int = 640) -> list[Box]:
    """Frontal faces as ``(x, y, w, h)`` boxes in the input's pixel coordinates.

    Args:
        bgr: HxWx3 BGR uint8/uint16 (or HxW gray, or an Image).
        max_side: detection runs on a copy downscaled to this longer side for speed; faces
            smaller than about 24 px at that scale are not found.

    Returns:
        A list of boxes, largest first; empty when no detector is available.
    """
    det = _detector()
    arr = array_of(bgr)
    if det is None or min(arr.shape[:2]) < 24:
        return []
    gray = as_uint8(cv2.cvtColor(as_uint8(arr), cv2.COLOR_BGR2GRAY) if arr.ndim == 3 else arr)
    small, factor = shrink(gray, max_side)
    if min(small.shape) < 24:
        return []
    kind, impl = det
    if kind == "opencv-haar":
        found = impl.detectMultiScale(small, scaleFactor=1.2, minNeighbors=4, minSize=(24, 24))
        raw = [tuple(int(v) for v in box) for box in found] if len(found) else []
    else:
        found = impl.detect_multi_scale(
            img=small, scale_factor=1.2, step_ratio=1, min_size=(24, 24), max_size=small.shape
        )
        raw = [(d["c"], d["r"], d["width"], d["height"]) for d in found]
    h, w = arr.shape[:2]
    boxes = []
    for x, y, bw, bh in raw:
        x0, y0 = round(x / factor), round(y / factor)
        x1, y1 = min(w, round((x + bw) / factor)), min(h, round((y + bh) / factor))
        if x1 > x0 and y1 > y0:
            boxes.append((x0, y0, x1 - x0, y1 - y0))
    boxes.sort(key=lambda b: b[2] * b[3], reverse=True)
    return boxes
