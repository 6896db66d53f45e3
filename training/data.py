"""Training and evaluation data for retouch's compact upscaler.

Everything here is built offline: photos that ship inside scikit-image (``skimage.data``) and
textures drawn procedurally from a seed. Arrays are HxWx3 RGB float32 in 0..1 unless a name
says otherwise (``*_u8`` is uint8, ``*_bgr`` is BGR for OpenCV and ``RealESRGANer``).

The photos are split once, here, into a training set and a held-out set, and the two lists are
disjoint: the evaluation script only ever reads ``HELD_OUT`` and the training script only
``TRAIN``. The licence of each photo (as stated in scikit-image's docstrings) is recorded next
to it and copied into the model card.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image as PILImage


@dataclass(frozen=True)
class Photo:
    """One scikit-image sample photo: its loader name, an optional item (for tuples) and the
    licence note from its docstring."""

    name: str
    licence: str
    item: int | None = None

    def load_u8(self) -> np.ndarray:
        """HxWx3 RGB uint8 (gray photos are repeated to three channels)."""
        import skimage.data

        loader: Callable[[], object] = getattr(skimage.data, self.name.split(":")[0])
        value = loader()
        if self.item is not None:
            value = value[self.item]  # type: ignore[index]
        arr = np.asarray(value)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        return np.ascontiguousarray(arr[:, :, :3]).astype(np.uint8)


TRAIN: tuple[Photo, ...] = (
    Photo("astronaut", "public domain (NASA, no known copyright restrictions)"),
    Photo("camera", "CC0 (Lav Varshney)"),
    Photo("chelsea", "CC0 (Stefan van der Walt)"),
    Photo("coffee", "CC0 (Rachel Michetti)"),
    Photo("rocket", "public domain (SpaceX)"),
    Photo("hubble_deep_field", "public domain (NASA)"),
    Photo("retina", "CC0 (Mikael Häggström, Wikimedia Commons)"),
    Photo("brick", "CC0 (CC0Textures)"),
    Photo("grass", "CC0 (DeviantArt, linolafett)"),
    Photo("cell", "CC0"),
    Photo("text", "public domain (Wikipedia, no known copyright restrictions)"),
)

HELD_OUT: tuple[Photo, ...] = (
    Photo(
        "stereo_motorcycle:left",
        "Middlebury 2014 stereo data set (Scharstein et al.); scikit-image states no licence. "
        "Used for evaluation only; no pixels of it ship with retouch",
        item=0,
    ),
    Photo("coins", "no known copyright restrictions (Brooklyn Museum)"),
    Photo("immunohistochemistry", "no known copyright restrictions (CMMI)"),
    Photo("gravel", "CC0 (CC0Textures)"),
)

# The right view of the stereo pair shows the same scene as a held-out photo: it is used
# neither for training nor for evaluation.
EXCLUDED = ("stereo_motorcycle:right",)


def to_float(u8: np.ndarray) -> np.ndarray:
    return u8.astype(np.float32) / 255.0


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def bicubic_resize_u8(u8: np.ndarray, width: int, height: int) -> np.ndarray:
    """HxWx3 uint8 -> height x width x 3 uint8 with PIL's antialiased bicubic (the same kernel
    as MATLAB's ``imresize``, the usual reference for super-resolution benchmarks)."""
    return np.asarray(
        PILImage.fromarray(u8).resize((width, height), PILImage.Resampling.BICUBIC)
    ).copy()


def _supersampled(draw: Callable[[np.ndarray, int], None], size: int, ss: int) -> np.ndarray:
    """Draw at ``ss`` times the size and area-average down, so edges are antialiased like a
    camera's (a hard-edged HR target would teach the model to invent jaggies)."""
    canvas = np.zeros((size * ss, size * ss, 3), np.float32)
    draw(canvas, ss)
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)


def textures(seed: int, count: int = 16, size: int = 256) -> list[np.ndarray]:
    """``count`` procedural HxWx3 RGB float32 0..1 textures (gratings, checkers, shapes, text),
    the same for the same ``seed``."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for i in range(count):
        kind = i % 4
        c1, c2 = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
        if kind == 0:
            # Chirped grating: every spatial frequency up to close to Nyquist of the HR image.
            theta = rng.uniform(0, np.pi)
            u = np.cos(theta) * xx + np.sin(theta) * yy
            f0, f1 = rng.uniform(0.01, 0.05), rng.uniform(0.15, 0.3)
            phase = 2 * np.pi * (f0 * u + (f1 - f0) * u * u / (2 * size * 1.5))
            t = 0.5 + 0.5 * np.sin(phase)
            img = t[..., None] * c1 + (1 - t[..., None]) * c2
        elif kind == 1:
            period = int(rng.integers(6, 24))
            angle = float(rng.uniform(0, 90))

            def draw_check(
                canvas: np.ndarray,
                ss: int,
                p: int = period,
                a: float = angle,
                fg: np.ndarray = c1,
                bg: np.ndarray = c2,
            ) -> None:
                n = canvas.shape[0]
                yv, xv = np.mgrid[0:n, 0:n].astype(np.float32) / ss
                ca, sa = np.cos(np.radians(a)), np.sin(np.radians(a))
                u, v = ca * xv + sa * yv, -sa * xv + ca * yv
                m = ((np.floor(u / p) + np.floor(v / p)) % 2).astype(np.float32)
                canvas[:] = m[..., None] * fg + (1 - m[..., None]) * bg

            img = _supersampled(draw_check, size, 4)
        elif kind == 2:
            shapes = [
                (
                    rng.uniform(0, 1, 3),
                    int(rng.integers(0, 3)),
                    rng.uniform(0, size, 2),
                    rng.uniform(4, 40),
                    rng.uniform(0, 2 * np.pi),
                )
                for _ in range(40)
            ]

            def draw_shapes(
                canvas: np.ndarray,
                ss: int,
                sh: list = shapes,  # type: ignore[type-arg]
                bg: np.ndarray = c2,
            ) -> None:
                canvas[:] = bg
                for colour, form, centre, radius, rot in sh:
                    cx, cy = (centre * ss).astype(int)
                    r = int(radius * ss)
                    col = tuple(float(c) for c in colour)
                    if form == 0:
                        cv2.circle(canvas, (int(cx), int(cy)), r, col, -1, cv2.LINE_8)
                    elif form == 1:
                        pts = [
                            (
                                cx + r * np.cos(rot + k * 2 * np.pi / 3),
                                cy + r * np.sin(rot + k * 2 * np.pi / 3),
                            )
                            for k in range(3)
                        ]
                        cv2.fillPoly(canvas, [np.array(pts, np.int32)], col, cv2.LINE_8)
                    else:
                        cv2.line(
                            canvas,
                            (int(cx), int(cy)),
                            (int(cx + r * 2 * np.cos(rot)), int(cy + r * 2 * np.sin(rot))),
                            col,
                            max(1, ss * int(1 + radius // 15)),
                            cv2.LINE_8,
                        )

            img = _supersampled(draw_shapes, size, 4)
        else:
            words = ["retouch", "Photo 12", "abc XYZ", "0123456789", "Upscale", "f/2.8 1/250"]
            lines = [
                (
                    words[int(rng.integers(0, len(words)))],
                    rng.uniform(0, size * 0.6),
                    rng.uniform(12, size),
                    rng.uniform(0.4, 1.6),
                    rng.uniform(0, 1, 3),
                )
                for _ in range(12)
            ]

            def draw_text(
                canvas: np.ndarray,
                ss: int,
                ln: list = lines,  # type: ignore[type-arg]
                bg: np.ndarray = c2,
            ) -> None:
                canvas[:] = bg
                for word, x, y, scale, colour in ln:
                    cv2.putText(
                        canvas,
                        word,
                        (int(x * ss), int(y * ss)),
                        cv2.FONT_HERSHEY_SIMPLEX,
                        scale * ss,
                        tuple(float(c) for c in colour),
                        max(1, int(scale * ss * 1.5)),
                        cv2.LINE_8,
                    )

            img = _supersampled(draw_text, size, 4)
        out.append(np.clip(img, 0, 1).astype(np.float32))
    return out


@dataclass(frozen=True)
class Degradation:
    """How training inputs are made from HR patches, Real-ESRGAN style but mild: mostly a
    clean bicubic downscale (what the benchmark and most upscaling requests look like), the
    rest blur -> resize (random kernel) -> noise -> JPEG, each with a probability."""

    clean_prob: float = 0.6
    blur_prob: float = 0.4
    blur_sigma: tuple[float, float] = (0.2, 1.0)
    noise_prob: float = 0.5
    noise_sigma: tuple[float, float] = (1.0, 6.0)  # in 0..255 units
    gray_noise_prob: float = 0.4
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (70, 95)

    def apply(self, hr_u8: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
        """HR patch HxWx3 RGB uint8 -> (H/scale)x(W/scale)x3 RGB uint8 LR input."""
        h, w = hr_u8.shape[:2]
        lw, lh = w // scale, h // scale
        if rng.random() < self.clean_prob:
            return bicubic_resize_u8(hr_u8, lw, lh)
        x = hr_u8
        if rng.random() < self.blur_prob:
            sigma = float(rng.uniform(*self.blur_sigma))
            x = cv2.GaussianBlur(x, (0, 0), sigma * scale / 2)
        mode = int(rng.integers(0, 3))
        if mode == 0:
            x = bicubic_resize_u8(x, lw, lh)
        elif mode == 1:
            x = np.asarray(PILImage.fromarray(x).resize((lw, lh), PILImage.Resampling.BILINEAR))
        else:
            x = cv2.resize(x, (lw, lh), interpolation=cv2.INTER_AREA)
        xf = x.astype(np.float32)
        if rng.random() < self.noise_prob:
            sigma = float(rng.uniform(*self.noise_sigma))
            if rng.random() < self.gray_noise_prob:
                noise = np.repeat(rng.normal(0, sigma, (lh, lw, 1)), 3, axis=2)
            else:
                noise = rng.normal(0, sigma, (lh, lw, 3))
            xf = xf + noise.astype(np.float32)
        x = np.clip(np.rint(xf), 0, 255).astype(np.uint8)
        if rng.random() < self.jpeg_prob:
            q = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
            ok, buf = cv2.imencode(".jpg", x[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
            assert ok
            x = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
        return x


class PatchSampler:
    """Deterministic batches: batch ``i`` depends only on (``seed``, ``i``), never on what was
    drawn before, so a run is reproducible and can be resumed at any step."""

    def __init__(
        self,
        sources: list[np.ndarray],
        *,
        scale: int,
        hr_patch: int,
        seed: int,
        degradation: Degradation,
    ) -> None:
        self.sources = [to_u8(s) if s.dtype != np.uint8 else s for s in sources]
        self.scale = scale
        self.hr_patch = hr_patch
        self.seed = seed
        self.degradation = degradation
        # Pick sources in proportion to their area (capped) so big photos are not
        # under-sampled and small textures not over-sampled.
        areas = np.array([min(s.shape[0] * s.shape[1], 512 * 512) for s in self.sources], float)
        self.weights = areas / areas.sum()

    def _patch(self, rng: np.random.Generator) -> np.ndarray:
        p = self.hr_patch
        best: np.ndarray | None = None
        best_std = -1.0
        for _ in range(4):
            src = self.sources[int(rng.choice(len(self.sources), p=self.weights))]
            h, w = src.shape[:2]
            y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
            crop = src[y : y + p, x : x + p]
            # Flat patches (sky, retina's black border) teach nothing: keep the busiest of a
            # few tries, stopping early at a textured one.
            std = float(crop.std())
            if std > best_std:
                best, best_std = crop, std
            if std > 12:
                break
        assert best is not None
        k = int(rng.integers(0, 8))
        out = np.rot90(best, k % 4)
        if k >= 4:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def batch(self, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(LR, HR) as NxCxHxW RGB float32 0..1 arrays for batch number ``index``."""
        rng = np.random.default_rng([self.seed, index])
        lrs, hrs = [], []
        for _ in range(size):
            hr = self._patch(rng)
            lr = self.degradation.apply(hr, self.scale, rng)
            lrs.append(to_float(lr).transpose(2, 0, 1))
            hrs.append(to_float(hr).transpose(2, 0, 1))
        return np.stack(lrs), np.stack(hrs)


def training_sources(seed: int) -> list[np.ndarray]:
    """The training photos (uint8 RGB) followed by the procedural textures."""
    photos = [p.load_u8() for p in TRAIN]
    return photos + [to_u8(t) for t in textures(seed)]
