"""Fast, offline image analysis: faces, sharpness, noise, exposure, colour cast, and a
before/after quality comparison.

Array conventions: colour inputs are HxWx3 **BGR** ``uint8`` (0..255) or ``uint16``
(0..65535); gray inputs are HxW of the same dtypes. Every measure is computed in 8-bit
units (a 16-bit value v counts as v / 257), so numbers compare across bit depths. Functions
that take an image also accept a :class:`retouch.lib.image.Image`.

Only numpy and OpenCV are used. Face detection uses OpenCV's Haar cascade when the OpenCV
build ships it (4.x); OpenCV 5 dropped ``CascadeClassifier``, so then scikit-image's LBP
frontal-face cascade is used if scikit-image is installed, and otherwise no faces are
reported (``face_detector()`` returns None and ``analyse`` says so).
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from typing import Any

import cv2
import numpy as np

from retouch.lib.image import Image

Box = tuple[int, int, int, int]

# -- input helpers --------------------------------------------------------------------------


def _pixels(x: Image | np.ndarray) -> np.ndarray:
    return x.pixels if isinstance(x, Image) else np.asarray(x)


def _to_float8(arr: np.ndarray) -> np.ndarray:
    """Any uint8/uint16/float array as float32 in 0..255 units."""
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) * np.float32(1.0 / 257.0)
    return arr.astype(np.float32, copy=False)


def _bgr_float(x: Image | np.ndarray) -> np.ndarray:
    """HxWx3 BGR float32 in 0..255 units from an Image, a BGR(A) array or a gray array."""
    arr = _to_float8(_pixels(x))
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    return arr[:, :, :3]


def _gray_float(x: Image | np.ndarray) -> np.ndarray:
    """HxW float32 luminance in 0..255 units."""
    arr = _to_float8(_pixels(x))
    if arr.ndim == 3:
        arr = cv2.cvtColor(np.ascontiguousarray(arr[:, :, :3]), cv2.COLOR_BGR2GRAY)
    return arr


def _shrink(arr: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Area-downscale so the longer side is at most ``max_side``; returns (array, factor)."""
    h, w = arr.shape[:2]
    factor = min(1.0, max_side / max(h, w))
    if factor >= 1.0:
        return arr, 1.0
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(arr, size, interpolation=cv2.INTER_AREA), factor


def _as_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    return np.clip(_to_float8(arr) + 0.5, 0, 255).astype(np.uint8)


# -- faces ----------------------------------------------------------------------------------

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
    arr = _pixels(bgr)
    if det is None or min(arr.shape[:2]) < 24:
        return []
    gray = _as_uint8(cv2.cvtColor(_as_uint8(arr), cv2.COLOR_BGR2GRAY) if arr.ndim == 3 else arr)
    small, factor = _shrink(gray, max_side)
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


# -- single-image measures ------------------------------------------------------------------

SHARPNESS_REF_SIDE = 512


def sharpness(gray: Image | np.ndarray) -> float:
    """Variance of the Laplacian, measured at a reference size (longer side 512, never enlarged).

    Takes HxW gray (or BGR, converted) uint8/uint16. Measuring at a fixed reference size makes
    the value comparable between a photo and its resized copies. Higher is sharper; a flat
    image gives 0. Typical photos: 50-2000; below about 30 reads as blurry.
    """
    g, _ = _shrink(_gray_float(gray), SHARPNESS_REF_SIDE)
    if min(g.shape) < 3:
        return 0.0
    return float(cv2.Laplacian(g, cv2.CV_32F, ksize=1).var())


_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def noise_sigma(gray: Image | np.ndarray) -> float:
    """Estimated standard deviation of white noise, in 8-bit levels (Immerkær's operator).

    Takes HxW gray (or BGR) uint8/uint16. The Laplacian-difference kernel cancels smooth
    image content; the median of its absolute response (divided by 6 x 0.6745) keeps edges,
    which occupy few pixels, from inflating the estimate. Clean photos read about 0.5-2,
    visibly noisy ones 5 or more.
    """
    g = _gray_float(gray)
    if min(g.shape) < 3:
        return 0.0
    resp = np.abs(cv2.filter2D(g, cv2.CV_32F, _IMMERKAER)[1:-1, 1:-1])
    step = 2 if resp.size > 500_000 else 1
    return float(np.median(resp[::step, ::step]) / (6.0 * 0.6745))


def exposure(gray: Image | np.ndarray) -> dict[str, float]:
    """Brightness statistics of HxW gray (or BGR) uint8/uint16, in 0..1 units.

    Returns ``mean`` (average brightness), ``dark`` / ``bright`` (fraction of pixels at most
    4 / at least 251 levels), ``low`` / ``high`` (1st / 99th percentile) and ``contrast``
    (high - low).
    """
    g = np.clip(_gray_float(gray) + 0.5, 0, 255).astype(np.uint8)
    hist = np.bincount(g.ravel(), minlength=256).astype(np.float64)
    total = max(1.0, hist.sum())
    cdf = np.cumsum(hist) / total
    low = float(np.searchsorted(cdf, 0.01)) / 255.0
    high = float(np.searchsorted(cdf, 0.99)) / 255.0
    return {
        "mean": float((hist * np.arange(256)).sum() / total / 255.0),
        "dark": float(hist[:5].sum() / total),
        "bright": float(hist[251:].sum() / total),
        "low": low,
        "high": high,
        "contrast": high - low,
    }


def _lab(bgr_float: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(
        np.ascontiguousarray(bgr_float) * np.float32(1.0 / 255.0), cv2.COLOR_BGR2Lab
    )


def color_cast(bgr: Image | np.ndarray) -> float:
    """Colour cast: distance of the mean (a*, b*) from neutral gray in CIE Lab units.

    Takes HxWx3 BGR uint8/uint16. 0 for a gray image; a visible cast is roughly 8 or more.
    Scenes that are legitimately dominated by one colour (a red wall) read high too, so treat
    it as a hint, not a verdict.
    """
    small, _ = _shrink(_bgr_float(bgr), 256)
    lab = _lab(small)
    return float(math.hypot(float(lab[:, :, 1].mean()), float(lab[:, :, 2].mean())))


def detail_map(bgr: Image | np.ndarray, max_side: int = 256) -> np.ndarray:
    """Where the detail is: smoothed gradient magnitude, float32 in 0..1.

    Takes HxWx3 BGR (or HxW gray) uint8/uint16 and returns a map of a copy downscaled to
    ``max_side`` (never enlarged): scale coordinates by ``map.shape / image.shape``. Used by
    ``fit``'s smart crop to keep the most detailed region when no face is found.
    """
    g, _ = _shrink(_gray_float(bgr), max_side)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    mag = cv2.magnitude(gx, gy)
    sigma = max(1.0, max(g.shape) / 64.0)
    mag = cv2.GaussianBlur(mag, (0, 0), sigma)
    top = float(mag.max())
    return mag / top if top > 0 else mag


def _palette_stats(bgr: np.ndarray) -> tuple[float, float]:
    """(unique colour ratio, flat fraction) on a nearest-neighbour thumbnail.

    Nearest-neighbour keeps the original colours (area averaging would invent new ones), so
    drawings and anime frames show few unique colours and many flat pixels.
    """
    arr = _as_uint8(bgr)
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
    (see :func:`exposure`), color_cast, unique_colors (ratio of distinct colours on a
    thumbnail) and flat_fraction. Face detection runs at 320 px on the longer side to stay
    fast, so faces smaller than about 8% of the longer side are missed; ``faces=False``
    skips it.
    """
    px = image.pixels
    gray = _gray_float(px)
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


BLURRY_BELOW = 30.0
NOISY_ABOVE = 4.0
CAST_ABOVE = 8.0
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


# -- no-reference quality ------------------------------------------------------------------------

NIQE_MIN_SIDE = 192
NIQE_MAX_SIDE = 512


def niqe(x: Image | np.ndarray) -> float | None:
    """NIQE (Mittal et al. 2013) of an image: lower reads as more natural; clean photos score
    about 2.5-4.5, visibly blurred, noisy or blocky ones 6-12.

    Takes HxWx3 BGR (or HxW gray) uint8/uint16. Measured on the Y channel of a copy reduced
    to 512 px on the longer side (NIQE depends on scale, so a fixed reference size keeps
    values comparable), with the pristine-image model that basicsr ships (no download;
    computed by :mod:`retouch.lib.quality.niqe`, which agrees with basicsr's ``calculate_niqe``).
    Returns None when the image is smaller than 192 px on a side (too few 96 px blocks for
    the statistics) or too flat to measure.
    """
    bgr, _ = _shrink(_bgr_float(x), NIQE_MAX_SIDE)
    if min(bgr.shape[:2]) < NIQE_MIN_SIDE or float(bgr.std()) < 1.0:
        return None
    from retouch.lib.quality import niqe as niqe_metric

    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = niqe_metric.niqe(np.clip(bgr + 0.5, 0, 255).astype(np.uint8))
    except np.linalg.LinAlgError:  # degenerate statistics, e.g. large flat areas
        return None
    return value if math.isfinite(value) else None


NIQE_MIDPOINT = 6.5
NIQE_SPREAD = 1.5


def naturalness(niqe_value: float | None) -> float | None:
    """NIQE mapped to 0..100 (higher is better) by a logistic curve: NIQE 3 -> 91,
    5 -> 73, 6.5 -> 50, 8 -> 27, 11 -> 5. None stays None."""
    if niqe_value is None:
        return None
    return 100.0 / (1.0 + math.exp((niqe_value - NIQE_MIDPOINT) / NIQE_SPREAD))


def _quality_from(measures: dict[str, Any]) -> float | None:
    """The 0..100 no-reference quality of a measured image: naturalness, lowered for clipped
    exposure (beyond 5% of the pixels) and for a colour cast (beyond 8 Lab units)."""
    nat = naturalness(measures.get("niqe"))
    if nat is None:
        return None
    exp = measures["exposure"]
    clipped = max(0.0, exp["dark"] + exp["bright"] - 0.05)
    exposure_factor = max(0.5, 1.0 - 0.5 * clipped)
    cast_factor = max(0.5, 1.0 - 0.02 * max(0.0, measures["color_cast"] - CAST_ABOVE))
    return nat * exposure_factor * cast_factor


def image_quality(x: Image | np.ndarray) -> dict[str, Any]:
    """No-reference quality of one image: its measures and a 0..100 ``quality``.

    Takes HxWx3 BGR (or HxW gray) uint8/uint16 of any size (measured at most 1024 px on the
    longer side, NIQE at 512). ``quality`` is :func:`naturalness` of the NIQE, lowered for
    clipped exposure and a colour cast; it is None when the image is too small for NIQE.
    The other keys are sharpness, detail, noise, exposure, color_cast, std and niqe.
    """
    bgr, _ = _shrink(np.clip(_bgr_float(x), 0, 255), COMPARE_MAX_SIDE)
    measures = _measures(bgr)
    q = _quality_from(measures)
    return {**measures, "quality": None if q is None else round(q, 1)}


# -- before / after ---------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two same-shape arrays in 0..255 units (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two same-shape HxW gray arrays in 0..255 units (Gaussian window, sigma 1.5).

    Constants follow the original definition: C1 = (0.01 x 255)^2, C2 = (0.03 x 255)^2.
    """
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5)  # noqa: E731
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


COMPARE_MAX_SIDE = 1024


def _resize_to(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (arr.shape[1], arr.shape[0]) == size:
        return arr
    down = size[0] * size[1] < arr.shape[0] * arr.shape[1]
    return cv2.resize(arr, size, interpolation=cv2.INTER_AREA if down else cv2.INTER_CUBIC)


def _measures(bgr: np.ndarray) -> dict[str, Any]:
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    sharp = sharpness(gray)
    ref, _ = _shrink(gray, SHARPNESS_REF_SIDE)
    # White noise of sigma s adds 20 s^2 to the variance of this Laplacian (kernel weights
    # 1+1+1+1+16): removing it keeps a denoised result from reading as "blurrier".
    detail = max(0.0, sharp - 20.0 * noise_sigma(ref) ** 2)
    return {
        "sharpness": round(sharp, 2),
        "detail": round(detail, 2),
        "noise": round(noise_sigma(gray), 3),
        "exposure": {k: round(v, 4) for k, v in exposure(gray).items()},
        "color_cast": round(color_cast(bgr), 2),
        "std": round(float(gray.std()), 2),
        "niqe": None if (v := niqe(bgr)) is None else round(v, 3),
    }


def _exposure_quality(exp: dict[str, float]) -> float:
    return max(0.0, exp["contrast"]) * max(0.0, 1.0 - exp["dark"] - exp["bright"])


def tile_seams(x: Image | np.ndarray, period: int | None = None) -> list[tuple[str, int]]:
    """Visible tile seams: straight lines across the whole image where the pixels jump.

    Takes HxWx3 BGR (or HxW gray) uint8/uint16 at full resolution (seams are one pixel wide
    and vanish in a thumbnail). The image is cut into bands of 64 px across the line; in each
    band, the mean signed step between neighbouring columns (rows) is compared with the
    median of its neighbours (16 px either side). A column (row) is a seam when the step is
    at least 2 levels, 2.5x its neighbourhood and twice the steps right beside it (a seam is
    one pixel wide), in 60% of the bands: a tile boundary runs straight through the whole
    image, a natural edge rarely does. With ``period`` (the tile size in output pixels) only
    the lines of that grid are considered, which rules out straight edges in the picture, so
    the test is looser there (2x its neighbourhood in half the bands). Without it, expect
    occasional false hits on man-made straight edges: pass the grid whenever it is known. Returns ``("x", 400)``-style
    positions (the first pixel after the seam).
    """
    from scipy.ndimage import median_filter

    g = _gray_float(x)
    found: list[tuple[str, int]] = []
    for axis, label in ((1, "x"), (0, "y")):
        lines = g if axis == 1 else g.T  # seams to find run down the columns of `lines`
        if lines.shape[1] < 40 or lines.shape[0] < 16:
            continue
        steps = np.diff(lines, axis=1)
        bands = max(1, lines.shape[0] // 64)
        usable = bands * (lines.shape[0] // bands)
        profile = np.abs(steps[:usable].reshape(bands, -1, steps.shape[1]).mean(axis=1))
        around = median_filter(profile, size=(1, 33), mode="nearest")
        if period:
            # The tile grid is known, so only its lines can be seams: no need to tell them
            # from straight edges in the picture.
            strong = (profile >= 2.0) & (profile >= 2.0 * around)
            hits = np.flatnonzero(strong.mean(axis=0) >= 0.5)
        else:
            # A seam is one pixel wide: the steps beside it are small, unlike a soft edge.
            beside = np.maximum(
                np.pad(profile[:, :-1], ((0, 0), (1, 0))),
                np.pad(profile[:, 1:], ((0, 0), (0, 1))),
            )
            strong = (profile >= 2.0) & (profile >= 2.5 * around) & (profile >= 2.0 * beside)
            hits = np.flatnonzero(strong.mean(axis=0) >= 0.6)
        if period:  # the tile grid is known: only its lines can be seams
            hits = hits[(hits + 1) % period == 0]
        found += [(label, int(i) + 1) for i in hits if 16 <= i < steps.shape[1] - 16]
    return found


USEFUL_UPSCALE = 4.0
HALO_WINDOW = 7


def _newly_clipped(before: np.ndarray, after: np.ndarray, noise: float) -> float:
    """Fraction of pixels clipped in ``after`` but not in ``before`` (HxW float 0..255, same
    size): 5x5 local mean at most 4 (at least 251) in the result, while the input's local
    mean is more than 4 + 2 sigma_noise above black (below white)."""
    if min(before.shape) < 5:
        return 0.0
    lb = cv2.blur(before.astype(np.float32), (5, 5))
    la = cv2.blur(after.astype(np.float32), (5, 5))
    margin = 4.0 + 2.0 * noise
    new = ((la <= 4.0) & (lb > margin)) | ((la >= 251.0) & (lb < 255.0 - margin))
    return float(new.mean())


FILL_RING = 15  # px around a filled area (at the compared size) that it is judged against
FILL_INNER = 6  # px in from a fill's edge where its own detail is measured
FILL_DETAIL_RATIO_BELOW = 0.15
FILL_DELTA_E_ABOVE = 15.0


def _mask_at(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m.max(axis=2)
    m = (m > 0).astype(np.uint8)
    if m.shape != shape:
        m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return m.astype(bool)


def _fill_plausibility(result: np.ndarray, filled: np.ndarray) -> dict[str, Any]:
    """How a filled area (bool HxW) of ``result`` (HxWx3 BGR float 0..255) compares with a
    ring of its surroundings: detail (local variance of the Laplacian) and mean colour (Lab).
    ``implausible`` says why the fill stands out, or is "" when it does not."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * FILL_RING + 1, 2 * FILL_RING + 1))
    ring = cv2.dilate(filled.astype(np.uint8), k).astype(bool) & ~filled
    area = float(filled.mean())
    if ring.sum() < 16 or filled.sum() < 16:
        return {"area": round(area, 4), "detail_ratio": None, "delta_e": None, "implausible": ""}
    gray = cv2.cvtColor(result.astype(np.float32), cv2.COLOR_BGR2GRAY)
    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=1)
    # Detail is judged inside the fill, away from its edge (which blends into the ring), and
    # only where the fill is wide (a quarter of it more than FILL_INNER px from its edge): a
    # thin fill (watermark strokes, wires) shows little texture of its own, so only its
    # colour is judged.
    k_in = np.ones((2 * FILL_INNER + 1, 2 * FILL_INNER + 1), np.uint8)
    inner = cv2.erode(filled.astype(np.uint8), k_in).astype(bool)
    wide = int(inner.sum()) >= max(64, 0.25 * int(filled.sum()))
    detail_fill = float(lap[inner].var()) if wide else None
    detail_ring = float(lap[ring].var())
    ratio = None if detail_fill is None else (detail_fill + 1.0) / (detail_ring + 1.0)
    lab = _lab(result.astype(np.float32))
    delta_e = float(np.linalg.norm(lab[filled].mean(axis=0) - lab[ring].mean(axis=0)))
    why = []
    if ratio is not None and ratio < FILL_DETAIL_RATIO_BELOW and detail_ring > 20.0:
        why.append(f"{100 * ratio:.0f}% of the surroundings' detail")
    if delta_e > FILL_DELTA_E_ABOVE:
        why.append(f"colour differs by ΔE {delta_e:.0f}")
    return {
        "area": round(area, 4),
        "detail_ratio": None if ratio is None else round(ratio, 3),
        "delta_e": round(delta_e, 2),
        "implausible": ", ".join(why),
    }


def quality_score(
    before: Image | np.ndarray,
    after: Image | np.ndarray,
    *,
    faces_found: int = 0,
    faces_restored: bool = True,
    seams: list[tuple[str, int]] | None = None,
    filled: np.ndarray | None = None,
) -> dict[str, Any]:
    """Compare a result with its input and say, honestly, whether it got better.

    Both are HxWx3 BGR (or HxW gray) uint8/uint16 arrays or Images, of any sizes. Measures
    (NIQE, sharpness, noise, exposure, cast) are taken at ``after``'s size (``before``
    enlarged with cubic interpolation, so an upscaler is judged against plain
    interpolation); fidelity (PSNR, SSIM on luminance, mean ΔE76 on a thumbnail) at
    ``before``'s size (``after`` resized to it). Both run at most 1024 px on the longer side.

    Components, each clipped to -1..1 (positive = better): ``natural = (NIQE_before -
    NIQE_after) / 2``; ``sharp = log2((D_after + 1) / (D_before + 1))`` with D the Laplacian
    variance less the part white noise explains (20 sigma^2), 0 (unknown) when noise explains
    most of it; ``noise = log2(N_before / N_after)`` (noise sigma, +0.5 to both), scaled
    down when both sigmas are below 4 (barely visible);
    ``exposure = 2 x (Q_after - Q_before)`` with Q = contrast x (1 - clipped fraction);
    ``cast = (C_before - C_after) / 10`` (Lab units). ``improvement = 0.35 sharp + 0.25 noise
    + 0.2 exposure + 0.2 cast``.

    Input and result are scored on one 0..100 scale, so the verdict never contradicts the
    two numbers shown. ``score_before`` is the input's quality (:func:`image_quality`, from
    NIQE, of the input at the result's size), or 50 when the image is too small for NIQE.
    The change is the change in quality plus ``25 x improvement`` (``50 x improvement``
    without NIQE). ``score`` is ``score_before`` plus the change (so, with NIQE, the
    result's own quality plus what the other measures say it gained), times ``min(1, SSIM /
    0.5)`` (a result that lost the picture's structure scores near 0) and 0.8 per problem,
    and never above ``score_before`` when there is a problem (a blank result scores 0).
    ``gain = score - score_before``. Verdict: "worse" with any problem or a gain below -3;
    "improved" above +3; otherwise "unchanged".

    ``filled`` (HxW, nonzero = area an inpaint step filled, at any size) makes the fill a
    change that was asked for: every measure and the fidelity then compare the rest of the
    picture (the input's pixels there are taken as the result's), and the fill is judged on
    its own, against a ring of its surroundings (``fill``: its share of the picture, its
    detail relative to the surroundings' and the colour difference; a fill much smoother or
    of another colour than its surroundings is a problem).

    Problems (each a plain-language reason and the parameter to change): a blank result, a
    strong colour shift, a result blurrier than the input, over-sharpening halos, amplified
    noise, new clipping, visible tile seams (``seams``, from :func:`tile_seams` on the
    full-size result) and a result worse than its input. Hints (advice that lowers nothing):
    faces found but not restored, upscaling beyond the useful limit.

    Returns:
        dict with ``score``, ``score_before``, ``verdict``, ``gain``, ``problems``, ``hints``, ``components``,
        ``quality`` (before/after, 0..100 or None), ``fidelity`` (psnr, ssim, delta_e,
        overshoot) and the ``before`` / ``after`` measures.
    """
    b_full = np.clip(_bgr_float(before), 0, 255)
    a_full = np.clip(_bgr_float(after), 0, 255)
    hb, wb = b_full.shape[:2]
    ha, wa = a_full.shape[:2]
    # Measures at the result's size: the input is enlarged (cubic) to it, so an upscaler is
    # judged against plain interpolation, not against a round trip that blurs it.
    f = min(1.0, COMPARE_MAX_SIDE / max(ha, wa))
    size = (max(1, round(wa * f)), max(1, round(ha * f)))
    b = np.clip(_resize_to(b_full, size), 0, 255)
    a = _resize_to(a_full, size)
    fb, _ = _shrink(b_full, COMPARE_MAX_SIDE)
    fa = np.clip(_resize_to(a_full, (fb.shape[1], fb.shape[0])), 0, 255)
    fill_info: dict[str, Any] | None = None
    if filled is not None and np.any(filled):
        # An inpainted area is meant to change: the input's pixels there (the object or
        # watermark) are taken as the result's, so every measure compares the rest of the
        # picture; the fill itself is judged against its surroundings (below).
        at_result = _mask_at(filled, a.shape[:2])
        at_input = _mask_at(filled, fb.shape[:2])
        b[at_result] = a[at_result]
        fb[at_input] = fa[at_input]
        fill_info = _fill_plausibility(a, at_result)
    mb, ma = _measures(b), _measures(a)
    qb, qa = _quality_from(mb), _quality_from(ma)

    # Fidelity at the input's size.
    gfb = cv2.cvtColor(fb, cv2.COLOR_BGR2GRAY)
    gfa = cv2.cvtColor(fa, cv2.COLOR_BGR2GRAY)
    ssim_v = ssim(gfb, gfa) if min(gfb.shape) >= 2 else (1.0 if np.array_equal(gfb, gfa) else 0.0)
    psnr_v = psnr(fb, fa)
    # Colour difference on a thumbnail: the colour of regions, not of detail.
    tb, _ = _shrink(fb, 128)
    ta, _ = _shrink(fa, 128)
    delta_e = float(np.linalg.norm(_lab(tb) - _lab(ta), axis=2).mean())
    gb = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY)
    ga = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY)

    def clip1(v: float) -> float:
        return max(-1.0, min(1.0, v))

    # When noise explains most of the Laplacian variance, the detail estimate is mostly
    # estimation error: the sharpness change is then unknown, not a loss.
    noise_bound = max(mb["sharpness"] - mb["detail"], ma["sharpness"] - ma["detail"])
    sharp_known = noise_bound < 0.5 * max(mb["sharpness"], ma["sharpness"], 1e-6)
    sharp_ratio = (ma["detail"] + 1.0) / (mb["detail"] + 1.0)
    comp = {
        "sharp": clip1(math.log2(sharp_ratio)) if sharp_known else 0.0,
        # Weighted by how visible the noise is at all: below sigma 4 on both sides a change
        # is texture lost or gained as much as noise (JPEG smoothing is not denoising).
        "noise": clip1(math.log2((mb["noise"] + 0.5) / (ma["noise"] + 0.5)))
        * min(1.0, max(mb["noise"], ma["noise"]) / NOISY_ABOVE),
        "exposure": clip1(
            2.0 * (_exposure_quality(ma["exposure"]) - _exposure_quality(mb["exposure"]))
        ),
        "cast": clip1((mb["color_cast"] - ma["color_cast"]) / 10.0),
    }
    improvement = (
        0.35 * comp["sharp"] + 0.25 * comp["noise"] + 0.2 * comp["exposure"] + 0.2 * comp["cast"]
    )
    natural_known = mb["niqe"] is not None and ma["niqe"] is not None
    if natural_known:
        comp["natural"] = clip1((mb["niqe"] - ma["niqe"]) / 2.0)

    problems: list[str] = []
    blank = ma["std"] < 2.0 and mb["std"] >= 5.0
    if blank:
        problems.append(
            f"result is blank or flat (contrast {ma['std']:.1f} vs {mb['std']:.1f} in the input): "
            "check the last step's parameters and the model weights"
        )
    if (delta_e > 8.0 and ma["color_cast"] > mb["color_cast"] + 3.0) or delta_e > 20.0:
        problems.append(
            f"colour shifted strongly (ΔE {delta_e:.0f}): lower auto_color.strength "
            "or set auto_color.white_balance to 'none'"
        )
    if sharp_known and sharp_ratio < 0.6 and mb["detail"] > 5.0 and not blank:
        problems.append(
            f"result is blurrier than the input (sharpness {100 * (sharp_ratio - 1):+.0f}%): "
            "lower denoise.strength or add a sharpen step"
        )
    overshoot = 0.0
    if min(gb.shape) >= 5:
        # Halos: near edges of the input (local range over 30 levels), the share of pixels
        # that overshoot the input's local min/max by more than 15 levels. The window (7 px)
        # is wider than a soft edge, so restoring a blurred edge to its two plateaus is not
        # taken for a halo; a sharpening halo overshoots both plateaus and still counts.
        # The input is first mapped to the result's global tone (least squares a*x+b), so
        # a levels stretch or exposure change is not mistaken for halos.
        k = np.ones((HALO_WINDOW, HALO_WINDOW), np.uint8)
        x = gb.astype(np.float64).ravel()
        gain_, offset = (
            np.polyfit(x, ga.astype(np.float64).ravel(), 1) if x.std() > 1e-6 else (1.0, 0.0)
        )
        tone = (gb * np.float32(gain_) + np.float32(offset)).astype(np.float32)
        hi, lo = cv2.dilate(tone, k), cv2.erode(tone, k)
        near_edges = (hi - lo) > 30.0
        over = (ga > hi + 15.0) | (ga < lo - 15.0)
        overshoot = float((over & near_edges).sum()) / max(1, int(near_edges.sum()))
    # A result that reads clearly more natural (NIQE down by 0.5 or more) restored real edges
    # (e.g. deblurring) rather than painting halos around them.
    if overshoot > 0.1 and sharp_ratio > 1.5 and comp.get("natural", 0.0) < 0.25:
        problems.append(
            f"over-sharpened: halos on {100 * overshoot:.0f}% of the pixels along edges: "
            "lower sharpen.amount or raise sharpen.threshold"
        )
    if ma["noise"] > 1.5 * mb["noise"] + 2.5:
        problems.append(
            f"noise amplified (sigma {mb['noise']:.1f} -> {ma['noise']:.1f}): "
            "add denoise before sharpening or raise sharpen.threshold"
        )
    # Newly clipped: black or white in the result (5x5 local mean) where the input clearly
    # had tone, beyond its own noise; a denoiser that settles noisy blacks to black is fine.
    newly_clipped = _newly_clipped(gb, ga, mb["noise"])
    if newly_clipped > 0.05:
        problems.append(
            f"{100 * newly_clipped:.0f}% more pixels clipped to black or white "
            "(shadow or highlight detail lost): raise sharpen.threshold or lower sharpen.amount, "
            "or lower auto_color.clip_percent / auto_color.strength"
        )
    if fill_info is not None and fill_info["implausible"]:
        problems.append(
            f"the filled area stands out from its surroundings ({fill_info['implausible']}): "
            "mask only the object (a tighter mask, lower inpaint.dilate), or split a large "
            "area into smaller masks"
        )
    if seams:
        where = ", ".join(f"{axis}={pos}" for axis, pos in seams[:4])
        problems.append(
            f"visible tile seams at {where}: raise upscale.tile_pad or set upscale.tile to 0 "
            "(tiles sized to the memory available, overlaps blended)"
        )

    # One scale for both sides, so the verdict can be read off the two numbers shown: the
    # input's score is its own quality (at the result's size), the result's is the input's
    # plus the measured change, then lowered for lost structure and for each problem.
    if natural_known:
        assert qa is not None and qb is not None
        score_before = qb
        change = (qa - qb) + 25.0 * improvement
    else:
        score_before = 50.0
        change = 50.0 * improvement
    hints: list[str] = []
    if faces_found and not faces_restored:
        hints.append(
            f"{faces_found} face(s) found but the recipe does not restore faces: "
            "add a restore_faces step (preset portrait-restore)"
        )
    scale = max(wa / max(1, wb), ha / max(1, hb))
    if scale > USEFUL_UPSCALE + 0.01:
        hints.append(
            f"upscaled {scale:.1f}x: beyond about {USEFUL_UPSCALE:.0f}x the detail is invented, "
            "not recovered; upscale by at most 4x and resize at export if a bigger size is needed"
        )

    fid = min(1.0, max(0.0, ssim_v) / 0.5)
    score_before = round(max(0.0, min(100.0, score_before)), 1)
    score = max(0.0, min(100.0, score_before + change)) * fid * 0.8 ** len(problems)
    if problems:
        # A result with a problem never scores above its input.
        score = min(score, score_before)
    score = 0.0 if blank else round(score, 1)
    gain = round(score - score_before, 1)
    if gain < -3.0 and not problems:
        # The verdict restated as advice; it lowers nothing more (the number is the one shown).
        problems.append(
            f"result is worse than the input ({score_before:.0f} -> {score:.0f} points: "
            + ("less natural, " if comp.get("natural", 0.0) < -0.1 else "")
            + "see the components): try the recipe's gentler parameters, or skip this image"
        )
    if problems or gain < -3.0:
        verdict = "worse"
    elif gain > 3.0:
        verdict = "improved"
    else:
        verdict = "unchanged"
    return {
        "score": score,
        "score_before": score_before,
        "verdict": verdict,
        "gain": gain,
        "problems": problems,
        "hints": hints,
        "improvement": round(improvement, 4),
        "components": {k: round(v, 4) for k, v in comp.items()},
        "quality": {
            "before": None if qb is None else round(qb, 1),
            "after": None if qa is None else round(qa, 1),
        },
        "fidelity": {
            "psnr": round(psnr_v, 2) if math.isfinite(psnr_v) else None,
            "ssim": round(ssim_v, 4),
            "delta_e": round(delta_e, 2),
            "overshoot": round(overshoot, 4),
        },
        "before": mb,
        "after": ma,
        **({"fill": fill_info} if fill_info is not None else {}),
    }
