"""Driving a LaMa network over an image: where it looks (strategies) and how it is batched.

Resolution strategies, as IOPaint users know them (its "HD strategy"):

- ``crop``: each connected region of the mask (8-connectivity) gets its bounding box grown
  by ``margin`` pixels on each side, slid inside the image where it would cross an edge
  (so a region at the border still gets ``2 * margin`` of context), and rounded up to a
  multiple of 8 where the image allows. Overlapping boxes are merged. A box whose long
  side exceeds ``resize_limit`` is resized down to it, filled, and the fill resized back.
  Crops of one image of the same size go through the network in one forward pass (as many
  as the memory budget allows); on a GPU, crops of close sizes are grown to one size first.
- ``resize``: the whole image, its long side resized down to ``resize_limit`` when larger.
- ``original``: the whole image at its own size.

Every input is padded to a multiple of 8 (reflected at the bottom and right, as spandrel
pads) and the output cropped back. Only the pixels of the mask take the fill: each box
writes the pixels of its own regions, and everything else is left to the caller's copy.

Arrays: ``rgb`` is HxWx3 float32 RGB in 0..1; ``mask`` HxW bool (True = fill); fills come
back as HxWx3 float32 RGB in 0..1, valid where the mask is True.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

MULTIPLE = 8
MIN_SIDE = 16
MAX_BATCH = 8
"""Most crops per forward pass: a few already keep every core busy."""
BATCH_MIN_FILL = 0.6
"""On a GPU, a crop is grown to the size of a larger one (to share its forward pass) when it
covers at least this share of that size. Not on CPU: there a pass costs in proportion to
its pixels whatever the batch (big-lama, 2-core CPU: 256x256 0.8 s alone, 1.5 s for two,
2.2 s for three), so growing a crop only adds work; same-size crops still share a pass."""
BYTES_PER_PIXEL_FP32 = 3072
"""Peak activation bytes per input pixel of big-lama in fp32, measured as the process's
peak RSS growth on CPU (2.1 KB/px at 256x256, 3.1 KB/px at 128x128), rounded up."""


@dataclass
class Box:
    """A part of the image to fill: ``x0:x1``, ``y0:y1``; ``labels`` are the mask regions
    it owns (it writes only their pixels); ``size`` is the network input size (w, h) when
    the crop is resized, else None."""

    x0: int
    y0: int
    x1: int
    y1: int
    labels: set[int] = field(default_factory=set)
    size: tuple[int, int] | None = None

    @property
    def w(self) -> int:
        return self.x1 - self.x0

    @property
    def h(self) -> int:
        return self.y1 - self.y0

    def overlaps(self, other: Box) -> bool:
        return (
            self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1
        )


def _slide(lo: int, hi: int, length: int) -> tuple[int, int]:
    """Shift ``lo:hi`` inside ``0:length`` keeping its size where it fits, else clip."""
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > length:
        lo, hi = lo - (hi - length), length
    return max(0, lo), min(length, hi)


def _grow(lo: int, hi: int, size: int, length: int) -> tuple[int, int]:
    """``lo:hi`` grown (around its centre) to ``size`` pixels inside ``0:length``."""
    size = min(size, length)
    extra = size - (hi - lo)
    if extra <= 0:
        return lo, hi
    lo -= extra // 2
    return _slide(lo, lo + size, length)


def _aligned(lo: int, hi: int, length: int) -> tuple[int, int]:
    want = -(-(hi - lo) // MULTIPLE) * MULTIPLE
    return _grow(lo, hi, want, length)


def crop_boxes(mask: np.ndarray, margin: int) -> tuple[list[Box], np.ndarray]:
    """The merged crop boxes of ``mask`` (HxW bool) for the ``crop`` strategy, and the
    mask's connected components (HxW int32 labels, 0 = not masked) the boxes own."""
    height, width = mask.shape
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    boxes: list[Box] = []
    for label in range(1, count):
        x, y, w, h = (int(v) for v in stats[label, :4])
        x0, x1 = _slide(x - margin, x + w + margin, width)
        y0, y1 = _slide(y - margin, y + h + margin, height)
        boxes.append(Box(x0, y0, x1, y1, {label}))
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a.overlaps(b):
                    boxes[i] = Box(
                        min(a.x0, b.x0),
                        min(a.y0, b.y0),
                        max(a.x1, b.x1),
                        max(a.y1, b.y1),
                        a.labels | b.labels,
                    )
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    for box in boxes:
        box.x0, box.x1 = _aligned(box.x0, box.x1, width)
        box.y0, box.y1 = _aligned(box.y0, box.y1, height)
    return sorted(boxes, key=lambda b: (b.y0, b.x0)), labels


def limited(w: int, h: int, limit: int) -> tuple[int, int] | None:
    """The size (w, h) with the long side ``limit`` when ``w x h`` is larger, else None."""
    if max(w, h) <= limit:
        return None
    s = limit / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def plan(
    mask: np.ndarray, strategy: str, *, margin: int, resize_limit: int
) -> tuple[list[Box], np.ndarray | None]:
    """The boxes to fill for ``strategy`` (crop, resize, original) on ``mask`` (HxW bool),
    and the component labels they own (None: one whole-image box)."""
    height, width = mask.shape
    labels: np.ndarray | None = None
    if strategy == "crop":
        boxes, labels = crop_boxes(mask, margin)
    else:
        boxes = [Box(0, 0, width, height, {-1})]
    if strategy != "original":
        for box in boxes:
            box.size = limited(box.w, box.h, resize_limit)
    return boxes, labels


def _padded(side: int) -> int:
    return max(MIN_SIDE, -(-side // MULTIPLE) * MULTIPLE)


def _pad(a: np.ndarray, h: int, w: int) -> np.ndarray:
    ph, pw = h - a.shape[0], w - a.shape[1]
    if not ph and not pw:
        return a
    spec = ((0, ph), (0, pw)) + ((0, 0),) * (a.ndim - 2)
    if min(a.shape[:2]) > 1:
        return np.pad(a, spec, mode="reflect")
    return np.pad(a, spec, mode="edge")


@dataclass
class _Item:
    box: Box
    rgb: np.ndarray  # network input, unpadded (h, w, 3)
    mask: np.ndarray  # (h, w) float32 0/1


def batches(boxes: list[Box], width: int, height: int, *, grow: bool) -> list[list[Box]]:
    """Groups of boxes that share a forward pass: each group's boxes have one size; with
    ``grow`` a box is grown to a larger one's size when it covers :data:`BATCH_MIN_FILL` of
    it. Resized boxes go alone."""
    groups: list[list[Box]] = []
    for box in sorted(boxes, key=lambda b: b.w * b.h, reverse=True):
        if box.size is None:
            for group in groups:
                lead = group[0]
                if lead.size is None and box.w <= lead.w and box.h <= lead.h:
                    same = box.w == lead.w and box.h == lead.h
                    if same or (grow and box.w * box.h >= BATCH_MIN_FILL * lead.w * lead.h):
                        box.x0, box.x1 = _grow(box.x0, box.x1, lead.w, width)
                        box.y0, box.y1 = _grow(box.y0, box.y1, lead.h, height)
                        group.append(box)
                        break
            else:
                groups.append([box])
        else:
            groups.append([box])
    return groups


@dataclass
class FillStats:
    """What one fill did (tests and benchmarks read it)."""

    boxes: int = 0
    forward_passes: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    pixels: int = 0  # network input pixels, summed over passes


def _prepare(box: Box, rgb: np.ndarray, mask: np.ndarray) -> _Item:
    crop = rgb[box.y0 : box.y1, box.x0 : box.x1]
    m = mask[box.y0 : box.y1, box.x0 : box.x1].astype(np.float32)
    if box.size is not None:
        crop = cv2.resize(crop, box.size, interpolation=cv2.INTER_AREA)
        # Any input pixel touched by the mask stays masked: nothing of the object survives.
        m = (cv2.resize(m, box.size, interpolation=cv2.INTER_AREA) > 0).astype(np.float32)
    return _Item(box, np.ascontiguousarray(crop), np.ascontiguousarray(m))


def _forward(network: Any, items: list[_Item], device: str, dtype: Any) -> list[np.ndarray]:
    import torch

    h, w = items[0].rgb.shape[:2]
    ph, pw = _padded(h), _padded(w)
    x = np.stack([_pad(it.rgb, ph, pw) for it in items]).transpose(0, 3, 1, 2)
    m = np.stack([_pad(it.mask, ph, pw) for it in items])[:, None]
    with torch.inference_mode():
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=dtype)
        mt = torch.from_numpy(np.ascontiguousarray(m)).to(device=device, dtype=dtype)
        out = network(xt, mt)[:, :, :h, :w].float().clamp_(0, 1).cpu().numpy()
    return [np.ascontiguousarray(o.transpose(1, 2, 0)) for o in out]


def fill(
    network: Any,
    rgb: np.ndarray,
    mask: np.ndarray,
    boxes: list[Box],
    labels: np.ndarray | None,
    *,
    device: str,
    dtype: str,
    budget: int,
) -> tuple[np.ndarray, FillStats]:
    """The network's fill of ``mask`` in ``rgb`` over ``boxes`` (see the module docstring).

    ``labels`` are the mask's connected components from :func:`plan` (None for a
    whole-image box). Batches are cut to what ``budget`` bytes allow per pass; running
    out of memory halves the batch, and with one crop per pass raises the error (the
    caller reports it).

    Returns:
        HxWx3 float32 RGB in 0..1 (the fill where ``mask`` is True, the input elsewhere)
        and what was done.
    """
    import torch

    from retouch.lib.models.budget import batch_for
    from retouch.lib.models.tiling import free_device_memory, is_out_of_memory

    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    per_px = BYTES_PER_PIXEL_FP32 * (0.5 if dtype == "bf16" else 1.0)
    height, width = mask.shape
    out = rgb.copy()
    stats = FillStats(boxes=len(boxes))
    for group in batches(boxes, width, height, grow=device.startswith("cuda")):
        items = [_prepare(box, rgb, mask) for box in group]
        ih, iw = items[0].rgb.shape[:2]
        most = batch_for(budget, per_px * _padded(ih) * _padded(iw), most=MAX_BATCH)
        start = 0
        while start < len(items):
            chunk = items[start : start + most]
            try:
                fills = _forward(network, chunk, device, torch_dtype)
            except Exception as exc:
                if not is_out_of_memory(exc) or len(chunk) == 1:
                    raise
                free_device_memory()
                most = max(1, len(chunk) // 2)
                continue
            stats.forward_passes += 1
            stats.batch_sizes.append(len(chunk))
            stats.pixels += len(chunk) * _padded(ih) * _padded(iw)
            for item, filled in zip(chunk, fills, strict=True):
                box = item.box
                if box.size is not None:
                    filled = cv2.resize(filled, (box.w, box.h), interpolation=cv2.INTER_CUBIC)
                    filled = np.clip(filled, 0.0, 1.0)
                region = mask[box.y0 : box.y1, box.x0 : box.x1]
                if labels is not None and -1 not in box.labels:
                    own = np.isin(labels[box.y0 : box.y1, box.x0 : box.x1], list(box.labels))
                    region = region & own
                target = out[box.y0 : box.y1, box.x0 : box.x1]
                target[region] = filled[region]
            start += len(chunk)
    return out, stats
