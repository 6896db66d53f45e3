"""How an inpainted area compares with a ring of its surroundings: detail and colour.
A fill much smoother or of another colour than what surrounds it stands out.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from retouch.lib.quality.measures import to_lab

FILL_RING = 15  # px around a filled area (at the compared size) that it is judged against
FILL_INNER = 6  # px in from a fill's edge where its own detail is measured
FILL_DETAIL_RATIO_BELOW = 0.15
FILL_DELTA_E_ABOVE = 15.0


def mask_at(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m.max(axis=2)
    m = (m > 0).astype(np.uint8)
    if m.shape != shape:
        m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return m.astype(bool)


def fill_plausibility(result: np.ndarray, filled: np.ndarray) -> dict[str, Any]:
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
    lab = to_lab(result.astype(np.float32))
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
