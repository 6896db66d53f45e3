"""Generated test images: varied content (gradients, shapes, text, noise), seeded, so every
run of the bench sees the same pixels and no data set has to be downloaded."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def synth(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """One HxWx3 BGR uint8 picture with a gradient, shapes, maybe text, and some noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    t = (xx * np.cos(angle) + yy * np.sin(angle)) / max(width, height)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    img = (c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]).astype(
        np.uint8
    )
    img = np.ascontiguousarray(img)
    for _ in range(int(rng.integers(2, 7))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(max(2, min(width, height) // 10), max(3, min(width, height) // 2)))
        if kind == 0:
            cv2.circle(img, (x, y), size, colour, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, (x, y), (x + size, y + size // 2), colour, -1)
        else:
            x2, y2 = int(rng.integers(0, width)), int(rng.integers(0, height))
            cv2.line(img, (x, y), (x2, y2), colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    if rng.random() < 0.5:
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.putText(
            img, "retouch", (2, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA
        )
    sigma = float(rng.uniform(0, 12))
    if sigma > 0.5:
        noisy = img.astype(np.float32) + rng.normal(0, sigma, img.shape).astype(np.float32)
        img = np.clip(noisy, 0, 255).astype(np.uint8)
    return img


def write_set(
    folder: Path,
    count: int,
    sizes: list[tuple[int, int]],
    *,
    ext: str,
    seed: int,
    prefix: str = "img",
) -> list[Path]:
    """``count`` images named ``<prefix>-0000.<ext>`` ...; sizes cycle through ``sizes``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if ext == "jpg" else []
    paths = []
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        path = folder / f"{prefix}-{i:04d}.{ext}"
        if not cv2.imwrite(str(path), synth(rng, w, h), params):
            raise RuntimeError(f"could not write {path}")
        paths.append(path)
    return paths


def write_large_set(
    folder: Path, count: int, size: tuple[int, int], *, seed: int, prefix: str = "photo"
) -> list[Path]:
    """``count`` JPEG photos (q90) of ``size``: :func:`synth` pictures drawn at a quarter of
    the size and enlarged (cubic), so 12 MP files are made in a fraction of a second each and
    hold smooth, photo-like content rather than 12 MP of noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    paths = []
    for i in range(count):
        small = synth(rng, max(8, w // 4), max(8, h // 4))
        path = folder / f"{prefix}-{i:04d}.jpg"
        big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        if not cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise RuntimeError(f"could not write {path}")
        paths.append(path)
    return paths


def link_subset(paths: list[Path], folder: Path) -> Path:
    """A folder holding (hard links to) exactly ``paths``: the same bytes as the full set."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in paths:
        dest = folder / p.name
        try:
            dest.hardlink_to(p)
        except OSError:
            dest.write_bytes(p.read_bytes())
    return folder


def write_masks(
    folder: Path, paths: list[Path], size: tuple[int, int], *, regions: int, seed: int
) -> list[Path]:
    """One mask per image in ``paths`` (same stem, PNG, white = fill): ``regions`` filled
    ellipses of 30-70 px, placed apart from each other and from the border."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for path in paths:
        mask = np.zeros((h, w), np.uint8)
        for k in range(regions):
            # Each region in its own vertical band, so the regions stay apart.
            band = w // regions
            cx = int(rng.integers(k * band + 60, (k + 1) * band - 60))
            cy = int(rng.integers(60, h - 60))
            axes = (int(rng.integers(15, 35)), int(rng.integers(15, 35)))
            cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
        dest = folder / f"{path.stem}.png"
        if not cv2.imwrite(str(dest), mask):
            raise RuntimeError(f"could not write {dest}")
        out.append(dest)
    return out
