"""NIQE (Mittal, Soundararajan and Bovik, 2013), computed with whole-array operations.

The algorithm, the constants and the pristine-image model are those of basicsr's
``basicsr.metrics.niqe.calculate_niqe`` (itself checked against the official MATLAB code):
the Y channel (BT.601, MATLAB's ``rgb2ycbcr``) rounded to whole levels; local mean and
contrast normalisation with a 7x7 Gaussian window (edges replicated); per 96x96 block, the
asymmetric generalized Gaussian fit of the normalised values and of their products with the
four neighbours (18 features); the same at half size (MATLAB's antialiased bicubic
``imresize``); then the distance between the multivariate Gaussian of the blocks and the
pristine model.

What differs is only how it is computed: every block's statistics at once instead of one
block (and one 9,801-entry gamma table) per call, the shape parameter found by bisection in
that table (it is increasing, so the nearest entry is the same one), the filters and the
resize as OpenCV filters and two small matrix products. Values agree with basicsr's to
float32 rounding (tests/lib/test_niqe.py compares them on many images); it is about ten
times faster, and it does not import basicsr (or torch): a model-free run's review does not
pay for importing the model stack. The pristine model is read from the installed basicsr.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

BLOCK = 96
MIN_SIDE = BLOCK
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
_Y_WEIGHTS = np.array([24.966, 128.553, 65.481])  # BGR order, MATLAB's rgb2ycbcr

_lock = threading.Lock()


def pristine_model_path() -> Path:
    """``niqe_pris_params.npz`` of the installed basicsr (found without importing basicsr)."""
    spec = importlib.util.find_spec("basicsr")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("basicsr is not installed: it provides NIQE's pristine-image model")
    return Path(list(spec.submodule_search_locations)[0]) / "metrics" / "niqe_pris_params.npz"


@lru_cache(maxsize=1)
def _model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(pristine_model_path()) as params:
        return (
            params["mu_pris_param"],
            params["cov_pris_param"],
            params["gaussian_window"],
        )


@lru_cache(maxsize=1)
def _gamma_table() -> tuple[np.ndarray, np.ndarray]:
    """The shape values basicsr searches and the ratio each implies (increasing)."""
    from scipy.special import gamma

    gam = np.arange(0.2, 10.001, 0.001)
    rec = np.reciprocal(gam)
    r_gam = np.square(gamma(rec * 2)) / (gamma(rec) * gamma(rec * 3))
    return gam, r_gam


def luma(bgr: np.ndarray) -> np.ndarray:
    """HxW float32 Y of an HxWx3 BGR (or HxW gray) uint8 image, rounded, as basicsr's."""
    if bgr.ndim == 2:
        return bgr.astype(np.float32).round()
    unit = (bgr.astype(np.float32) / np.float32(255.0)).astype(np.float64)
    b, g, r = _Y_WEIGHTS
    y = ((unit[:, :, 0] * b + unit[:, :, 1] * g + unit[:, :, 2] * r + 16.0) / 255.0).astype(
        np.float32
    )
    return (y * np.float32(255.0)).round()


def _aggd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric generalized Gaussian fit of each row of ``x`` (float64): (alpha, beta_l,
    beta_r)."""
    from scipy.special import gamma

    gam, r_gam = _gamma_table()
    n = x.shape[1]
    lo, hi = np.minimum(x, 0.0), np.maximum(x, 0.0)
    left_sq, right_sq = np.einsum("ij,ij->i", lo, lo), np.einsum("ij,ij->i", hi, hi)
    with np.errstate(all="ignore"):
        left_std = np.sqrt(left_sq / np.count_nonzero(lo, axis=1))
        right_std = np.sqrt(right_sq / np.count_nonzero(hi, axis=1))
        gammahat = left_std / right_std
        rhat = ((hi.sum(axis=1) - lo.sum(axis=1)) / n) ** 2 / ((left_sq + right_sq) / n)
        rhatnorm = (rhat * (gammahat**3 + 1) * (gammahat + 1)) / ((gammahat**2 + 1) ** 2)
    rn = rhatnorm.astype(np.float64)
    # The nearest table entry: r_gam increases, so it is one of the two around rn (the
    # lower one on a tie, as argmin's first hit). NaN (an empty side) takes the first entry.
    above = np.clip(np.searchsorted(r_gam, rn), 1, len(r_gam) - 1)
    below = above - 1
    pick = np.where((r_gam[above] - rn) ** 2 < (r_gam[below] - rn) ** 2, above, below)
    pick = np.where(np.isnan(rn), 0, pick)
    alpha = gam[pick]
    factor = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left_std * factor, right_std * factor


def _features(norm: np.ndarray, size: int, rows: int, cols: int) -> np.ndarray:
    """The 18 features of each ``size`` x ``size`` block (column by column, as basicsr)."""
    from scipy.special import gamma

    blocks = (
        norm[: rows * size, : cols * size]
        .reshape(rows, size, cols, size)
        .transpose(2, 0, 1, 3)
        .reshape(rows * cols, size, size)
    )
    blocks = blocks.astype(np.float64)
    flat = blocks.reshape(len(blocks), -1)
    alpha, bl, br = _aggd(flat)
    out = [alpha, (bl + br) / 2]
    for shift in _SHIFTS:
        shifted = np.roll(blocks, shift, axis=(1, 2)).reshape(len(blocks), -1)
        alpha, bl, br = _aggd(flat * shifted)
        mean = (br - bl) * (gamma(2 / alpha) / gamma(1 / alpha))
        out += [alpha, mean, bl, br]
    return np.stack(out, axis=1)


def _normalised(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """(img - mu) / (sigma + 1) with a Gaussian-weighted local mean and deviation (float32)."""
    # The window is separable (an outer product of its row sums): two 1-D passes.
    k = window.sum(axis=1)
    mu = cv2.sepFilter2D(img.astype(np.float64), -1, k, k, borderType=cv2.BORDER_REPLICATE)
    mu = mu.astype(np.float32)
    sq = np.square(img)
    mean_sq = cv2.sepFilter2D(sq.astype(np.float64), -1, k, k, borderType=cv2.BORDER_REPLICATE)
    sigma = np.sqrt(np.abs(mean_sq.astype(np.float32) - np.square(mu)))
    return (img - mu) / (sigma + 1)


def _cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    a2, a3 = a * a, a * a * a
    return (1.5 * a3 - 2.5 * a2 + 1) * (a <= 1) + (-0.5 * a3 + 2.5 * a2 - 4 * a + 2) * (
        (a > 1) & (a <= 2)
    )


@lru_cache(maxsize=32)
def _half_matrix(length: int) -> np.ndarray:
    """(ceil(length / 2), length) weights of MATLAB's antialiased bicubic halving, with its
    symmetric (edge-repeating) extension folded back onto the image."""
    scale = 0.5
    out_len = math.ceil(length * scale)
    width = 4 / scale
    u = np.arange(1, out_len + 1) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    weights = scale * _cubic((u[:, None] - idx) * scale)
    weights /= weights.sum(axis=1, keepdims=True)
    src = idx.astype(int) - 1  # 0-based
    src = np.where(src < 0, -src - 1, src)
    src = np.where(src >= length, 2 * length - 1 - src, src)
    matrix = np.zeros((out_len, length))
    np.add.at(matrix, (np.repeat(np.arange(out_len), taps), src.ravel()), weights.ravel())
    return matrix


def _halve(img: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(img, 0.5)`` (bicubic, antialiased) of an HxW float image."""
    h, w = img.shape
    return (_half_matrix(h) @ img.astype(np.float64) @ _half_matrix(w).T).astype(np.float32)


def niqe(bgr: np.ndarray) -> float:
    """NIQE of an HxWx3 BGR (or HxW gray) uint8 image, at least 96 px on each side.

    Lower reads as more natural. Raises ValueError for a smaller image and
    ``numpy.linalg.LinAlgError`` when the block statistics are degenerate; the result may be
    NaN for a flat image (no features to fit).
    """
    if bgr.dtype != np.uint8:
        raise ValueError(f"NIQE takes uint8 pixels, not {bgr.dtype}")
    with _lock:
        mu_pris, cov_pris, window = _model()
    img = luma(bgr)
    h, w = img.shape
    rows, cols = h // BLOCK, w // BLOCK
    if rows == 0 or cols == 0:
        raise ValueError(f"NIQE needs at least {BLOCK}x{BLOCK} pixels, not {w}x{h}")
    img = img[: rows * BLOCK, : cols * BLOCK]
    feats = [_features(_normalised(img, window), BLOCK, rows, cols)]
    half = _halve(img / np.float32(255.0)) * np.float32(255.0)
    feats.append(_features(_normalised(half, window), BLOCK // 2, rows, cols))
    dist = np.concatenate(feats, axis=1)
    with np.errstate(all="ignore"):
        mu = np.nanmean(dist, axis=0)
    complete = dist[~np.isnan(dist).any(axis=1)]
    cov = np.cov(complete, rowvar=False)
    inv = np.linalg.pinv((cov_pris + cov) / 2)
    diff = (mu_pris - mu).reshape(-1)
    return float(np.sqrt(diff @ inv @ diff))
