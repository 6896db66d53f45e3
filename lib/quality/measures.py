"""Single-image measures: sharpness, noise, exposure, colour cast, detail, NIQE and tile
seams, the fidelity of one image to another (PSNR, SSIM), and the thresholds past which
a measure reads as a problem.

Array conventions: colour inputs are HxWx3 **BGR** ``uint8`` (0..255) or ``uint16``
(0..65535); gray inputs are HxW of the same dtypes. Every measure is computed in 8-bit
units (a 16-bit value v counts as v / 257), so numbers compare across bit depths. Functions
that take an image also accept a :class:`retouch.lib.image.Image`. Only numpy and OpenCV are
used (SciPy for :func:`tile_seams`).
"""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np

from retouch.lib.image import Image

# -- input helpers --------------------------------------------------------------------------


def array_of(x: Image | np.ndarray) -> np.ndarray:
    return x.pixels if isinstance(x, Image) else np.asarray(x)


def _to_float8(arr: np.ndarray) -> np.ndarray:
    """Any uint8/uint16/float array as float32 in 0..255 units."""
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) * np.float32(1.0 / 257.0)
    return arr.astype(np.float32, copy=False)


def bgr_float(x: Image | np.ndarray) -> np.ndarray:
    """HxWx3 BGR float32 in 0..255 units from an Image, a BGR(A) array or a gray array."""
    arr = _to_float8(array_of(x))
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    return arr[:, :, :3]


def gray_float(x: Image | np.ndarray) -> np.ndarray:
    """HxW float32 luminance in 0..255 units."""
    arr = _to_float8(array_of(x))
    if arr.ndim == 3:
        arr = cv2.cvtColor(np.ascontiguousarray(arr[:, :, :3]), cv2.COLOR_BGR2GRAY)
    return arr


def shrink(arr: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Area-downscale so the longer side is at most ``max_side``; returns (array, factor)."""
    h, w = arr.shape[:2]
    factor = min(1.0, max_side / max(h, w))
    if factor >= 1.0:
        return arr, 1.0
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(arr, size, interpolation=cv2.INTER_AREA), factor


def as_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    return np.clip(_to_float8(arr) + 0.5, 0, 255).astype(np.uint8)


# -- single-image measures ------------------------------------------------------------------

SHARPNESS_REF_SIDE = 512


def sharpness(gray: Image | np.ndarray) -> float:
    """Variance of the Laplacian, measured at a reference size (longer side 512, never enlarged).

    Takes HxW gray (or BGR, converted) uint8/uint16. Measuring at a fixed reference size makes
    the value comparable between a photo and its resized copies. Higher is sharper; a flat
    image gives 0. Typical photos: 50-2000; below about 30 reads as blurry.
    """
    g, _ = shrink(gray_float(gray), SHARPNESS_REF_SIDE)
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
    g = gray_float(gray)
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
    g = np.clip(gray_float(gray) + 0.5, 0, 255).astype(np.uint8)
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


def to_lab(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(bgr) * np.float32(1.0 / 255.0), cv2.COLOR_BGR2Lab)


def color_cast(bgr: Image | np.ndarray) -> float:
    """Colour cast: distance of the mean (a*, b*) from neutral gray in CIE Lab units.

    Takes HxWx3 BGR uint8/uint16. 0 for a gray image; a visible cast is roughly 8 or more.
    Scenes that are legitimately dominated by one colour (a red wall) read high too, so treat
    it as a hint, not a verdict.
    """
    small, _ = shrink(bgr_float(bgr), 256)
    lab = to_lab(small)
    return float(math.hypot(float(lab[:, :, 1].mean()), float(lab[:, :, 2].mean())))


def detail_map(bgr: Image | np.ndarray, max_side: int = 256) -> np.ndarray:
    """Where the detail is: smoothed gradient magnitude, float32 in 0..1.

    Takes HxWx3 BGR (or HxW gray) uint8/uint16 and returns a map of a copy downscaled to
    ``max_side`` (never enlarged): scale coordinates by ``map.shape / image.shape``. Used by
    ``fit``'s smart crop to keep the most detailed region when no face is found.
    """
    g, _ = shrink(gray_float(bgr), max_side)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    mag = cv2.magnitude(gx, gy)
    sigma = max(1.0, max(g.shape) / 64.0)
    mag = cv2.GaussianBlur(mag, (0, 0), sigma)
    top = float(mag.max())
    return mag / top if top > 0 else mag


# A measure past its threshold reads as a problem (advice at analysis, a lower score).
BLURRY_BELOW = 30.0
NOISY_ABOVE = 4.0
CAST_ABOVE = 8.0


# -- naturalness (NIQE) --------------------------------------------------------------------

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
    bgr, _ = shrink(bgr_float(x), NIQE_MAX_SIDE)
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


# -- tile seams ----------------------------------------------------------------------------


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

    g = gray_float(x)
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


# -- fidelity to a reference ---------------------------------------------------------------


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
