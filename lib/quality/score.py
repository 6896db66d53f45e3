"""Scores and verdicts: no-reference quality of one image (:func:`image_quality`, from
NIQE) and the honest before/after comparison of a result with its input
(:func:`quality_score`)."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from retouch.lib.image import Image
from retouch.lib.quality.fill import fill_plausibility, mask_at
from retouch.lib.quality.measures import (
    CAST_ABOVE,
    NOISY_ABOVE,
    SHARPNESS_REF_SIDE,
    bgr_float,
    color_cast,
    exposure,
    niqe,
    noise_sigma,
    psnr,
    sharpness,
    shrink,
    ssim,
    to_lab,
)

# -- no-reference quality ------------------------------------------------------------------

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
    bgr, _ = shrink(np.clip(bgr_float(x), 0, 255), COMPARE_MAX_SIDE)
    measures = _measures(bgr)
    q = _quality_from(measures)
    return {**measures, "quality": None if q is None else round(q, 1)}


# -- before / after ------------------------------------------------------------------------

COMPARE_MAX_SIDE = 1024


def _resize_to(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (arr.shape[1], arr.shape[0]) == size:
        return arr
    down = size[0] * size[1] < arr.shape[0] * arr.shape[1]
    return cv2.resize(arr, size, interpolation=cv2.INTER_AREA if down else cv2.INTER_CUBIC)


def _measures(bgr: np.ndarray) -> dict[str, Any]:
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    sharp = sharpness(gray)
    ref, _ = shrink(gray, SHARPNESS_REF_SIDE)
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


def _composition(before_gray: np.ndarray, after_gray: np.ndarray) -> float:
    """How much of the picture's large-scale structure a re-drawing kept: the correlation of
    edge strength (Sobel magnitude) on 64 px thumbnails of the two HxW gray arrays, -1..1."""

    def edges(gray: np.ndarray) -> np.ndarray:
        small, _ = shrink(gray.astype(np.float32), 64)
        small = cv2.GaussianBlur(small, (0, 0), 1.0)
        gx = cv2.Sobel(small, cv2.CV_32F, 1, 0)
        gy = cv2.Sobel(small, cv2.CV_32F, 0, 1)
        return np.hypot(gx, gy).ravel()

    u, v = edges(before_gray), edges(after_gray)
    if u.size < 4 or u.std() < 1e-6 or v.std() < 1e-6:
        return 0.0
    return round(float(np.corrcoef(u, v)[0, 1]), 3)


def quality_score(
    before: Image | np.ndarray,
    after: Image | np.ndarray,
    *,
    faces_found: int = 0,
    faces_restored: bool = True,
    seams: list[tuple[str, int]] | None = None,
    filled: np.ndarray | None = None,
    redrawn: bool = False,
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

    ``redrawn`` (the recipe re-draws the picture in another style: restyle, stylize) makes
    the change itself the request: colours, texture, sharpness and tones are meant to
    differ, so no measure of the change is a problem and nothing is called better or worse
    than the photo. The verdict is then "restyled" (or "worse" for a blank result or tile
    seams), ``score_before`` the input's quality and ``score`` the result's own quality
    (NIQE-based; 50 without NIQE), and ``fidelity.composition`` says how much of the
    picture's large-scale structure the drawing kept (correlation of edge strength on
    64 px thumbnails: about 0.6-1.0 for OpenCV's stylization and a bilateral cartoon on the
    samples, near 0 for an unrelated picture), shown, not judged.

    Problems (each a plain-language reason and the parameter to change): a blank result, a
    strong colour shift, a result blurrier than the input, over-sharpening halos, amplified
    noise, new clipping, visible tile seams (``seams``, from :func:`~retouch.lib.quality.measures.tile_seams` on the
    full-size result) and a result worse than its input. Hints (advice that lowers nothing):
    faces found but not restored, upscaling beyond the useful limit.

    Returns:
        dict with ``score``, ``score_before``, ``verdict``, ``gain``, ``problems``, ``hints``, ``components``,
        ``quality`` (before/after, 0..100 or None), ``fidelity`` (psnr, ssim, delta_e,
        overshoot) and the ``before`` / ``after`` measures.
    """
    b_full = np.clip(bgr_float(before), 0, 255)
    a_full = np.clip(bgr_float(after), 0, 255)
    hb, wb = b_full.shape[:2]
    ha, wa = a_full.shape[:2]
    # Measures at the result's size: the input is enlarged (cubic) to it, so an upscaler is
    # judged against plain interpolation, not against a round trip that blurs it.
    f = min(1.0, COMPARE_MAX_SIDE / max(ha, wa))
    size = (max(1, round(wa * f)), max(1, round(ha * f)))
    b = np.clip(_resize_to(b_full, size), 0, 255)
    a = _resize_to(a_full, size)
    fb, _ = shrink(b_full, COMPARE_MAX_SIDE)
    fa = np.clip(_resize_to(a_full, (fb.shape[1], fb.shape[0])), 0, 255)
    fill_info: dict[str, Any] | None = None
    if filled is not None and np.any(filled):
        # An inpainted area is meant to change: the input's pixels there (the object or
        # watermark) are taken as the result's, so every measure compares the rest of the
        # picture; the fill itself is judged against its surroundings (below).
        at_result = mask_at(filled, a.shape[:2])
        at_input = mask_at(filled, fb.shape[:2])
        b[at_result] = a[at_result]
        fb[at_input] = fa[at_input]
        fill_info = fill_plausibility(a, at_result)
    mb, ma = _measures(b), _measures(a)
    qb, qa = _quality_from(mb), _quality_from(ma)

    # Fidelity at the input's size.
    gfb = cv2.cvtColor(fb, cv2.COLOR_BGR2GRAY)
    gfa = cv2.cvtColor(fa, cv2.COLOR_BGR2GRAY)
    ssim_v = ssim(gfb, gfa) if min(gfb.shape) >= 2 else (1.0 if np.array_equal(gfb, gfa) else 0.0)
    psnr_v = psnr(fb, fa)
    # Colour difference on a thumbnail: the colour of regions, not of detail.
    tb, _ = shrink(fb, 128)
    ta, _ = shrink(fa, 128)
    delta_e = float(np.linalg.norm(to_lab(tb) - to_lab(ta), axis=2).mean())
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
    if redrawn:
        pass  # the look was asked to change: colour, sharpness, halos and clipping are the style
    elif (delta_e > 8.0 and ma["color_cast"] > mb["color_cast"] + 3.0) or delta_e > 20.0:
        problems.append(
            f"colour shifted strongly (ΔE {delta_e:.0f}): lower auto_color.strength "
            "or set auto_color.white_balance to 'none'"
        )
    if not redrawn and sharp_known and sharp_ratio < 0.6 and mb["detail"] > 5.0 and not blank:
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
    if not redrawn and overshoot > 0.1 and sharp_ratio > 1.5 and comp.get("natural", 0.0) < 0.25:
        problems.append(
            f"over-sharpened: halos on {100 * overshoot:.0f}% of the pixels along edges: "
            "lower sharpen.amount or raise sharpen.threshold"
        )
    if not redrawn and ma["noise"] > 1.5 * mb["noise"] + 2.5:
        problems.append(
            f"noise amplified (sigma {mb['noise']:.1f} -> {ma['noise']:.1f}): "
            "add denoise before sharpening or raise sharpen.threshold"
        )
    # Newly clipped: black or white in the result (5x5 local mean) where the input clearly
    # had tone, beyond its own noise; a denoiser that settles noisy blacks to black is fine.
    newly_clipped = _newly_clipped(gb, ga, mb["noise"])
    if not redrawn and newly_clipped > 0.05:
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

    composition = _composition(gfb, gfa) if redrawn else None
    if redrawn:
        # Not a repair: the result's own quality, with nothing claimed against the photo.
        change = (qa - score_before) if natural_known and qa is not None else 0.0
    fid = 1.0 if redrawn else min(1.0, max(0.0, ssim_v) / 0.5)
    score_before = round(max(0.0, min(100.0, score_before)), 1)
    score = max(0.0, min(100.0, score_before + change)) * fid * 0.8 ** len(problems)
    if problems:
        # A result with a problem never scores above its input.
        score = min(score, score_before)
    score = 0.0 if blank else round(score, 1)
    gain = round(score - score_before, 1)
    if gain < -3.0 and not problems and not redrawn:
        # The verdict restated as advice; it lowers nothing more (the number is the one shown).
        problems.append(
            f"result is worse than the input ({score_before:.0f} -> {score:.0f} points: "
            + ("less natural, " if comp.get("natural", 0.0) < -0.1 else "")
            + "see the components): try the recipe's gentler parameters, or skip this image"
        )
    if problems or (gain < -3.0 and not redrawn):
        verdict = "worse"
    elif redrawn:
        verdict = "restyled"
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
            **({"composition": composition} if composition is not None else {}),
        },
        "before": mb,
        "after": ma,
        **({"fill": fill_info} if fill_info is not None else {}),
    }
