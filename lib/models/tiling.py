"""Batched, blended tiling for the super-resolution networks (RRDBNet, SRVGGNetCompact).

``RealESRGANer`` runs one tile per forward pass, pastes tiles edge to edge (seams where the
tile contexts differ), prints a line per tile and, on an error, silently reuses the previous
tile. Here the network (``RealESRGANer.model``, loaded by the real helper) is driven directly:

- The input is padded as ``RealESRGANer.pre_process`` does: ``pre_pad`` reflected pixels at
  the bottom and right, then reflection to a multiple of 2 (x2 models) or 4 (x1), which the
  x2/x1 RRDBNet pixel-unshuffle needs. Tile positions and sizes keep that multiple.
- All tiles have the same size, so several go through the network in one pass (a batch;
  on a GPU as many as the memory budget allows, on CPU one unless asked, see
  :data:`CPU_TILE_BATCH`).
  Neighbouring tiles overlap by at least ``2 * tile_pad`` input pixels; in the overlap each
  tile's weight falls from 1 to 0 with a raised cosine after a margin at its edge (where it
  lacked context), and the weights of all tiles add up to exactly 1 at every pixel, so the
  result has no seams.
- With ``tile=0`` the tile size is chosen from a memory budget (:mod:`.budget`): a small
  image runs whole in one pass, a large one in tiles; an explicit ``tile`` is kept.
- The blended result is built one row of tiles at a time: only one row's float band
  (``patch_h * scale`` x ``width * scale`` x 3 float32) is held besides the output, which is
  written in its final dtype when ``out_dtype`` asks for it. Peak memory is therefore about
  the budget + that band + the input and the output, whatever the image height.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from retouch.lib.models.budget import (
    batch_for,
    memory_budget,
    sr_bytes_per_pixel,
    surely_enough_per_pixel,
)

MAX_TILE_BATCH = 8
"""Most tiles per forward pass on a GPU: past a few full-size tiles it is saturated anyway."""
CPU_TILE_BATCH = 1
"""Tiles per pass on CPU unless asked otherwise. The CPU kernels already use every core on
one tile, and batches only grow the working set: 512x512 in 128 px tiles took 1.0-1.4x longer
with 4 tiles per pass than with 1 (RRDBNet x4 and SRVGGNetCompact, 2-core machine)."""
AUTO_MAX_TILE = 512
"""Largest tile picked automatically once an image does not fit one pass: larger tiles save
little overlap (4% at 512 with the default 10 px pad) and leave fewer tiles to batch."""
MIN_TILE = 32
BLEND_MARGIN = 0.25
"""Share of an overlap, at each tile's edge, where that tile gets no weight: the network saw
too little context there. The middle of the overlap is the cosine ramp."""


class TiledOutOfMemory(Exception):
    """Out of memory with one tile per pass: the caller may retry with smaller tiles."""

    def __init__(self, tile: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.tile = tile
        self.cause = cause


def is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` says the device (GPU or CPU) ran out of memory."""
    if isinstance(exc, (MemoryError, TiledOutOfMemory)):
        return True
    oom_type = getattr(torch, "OutOfMemoryError", None)  # torch >= 2.5; CUDA's subclasses it
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def free_device_memory() -> None:
    """Give torch's cached GPU blocks back after an out-of-memory error."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles lie on the padded input (``ys``/``xs``: top-left corners).

    ``tile`` is the core tile size asked for or chosen (0 = the whole image in one pass);
    every tile is ``patch_h`` x ``patch_w`` input pixels; ``batch`` tiles go per pass.
    """

    height: int
    width: int
    patch_h: int
    patch_w: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    tile: int
    batch: int

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)


@dataclass
class TileStats:
    """What one tiled run did (tests and benchmarks read it)."""

    plan: TilePlan
    forward_passes: int = 0
    batch_retries: int = 0
    batch_sizes: list[int] = field(default_factory=list)


def _align_up(value: int, align: int) -> int:
    return -(-value // align) * align


def axis_tiles(length: int, core: int, pad: int, align: int = 1) -> tuple[int, tuple[int, ...]]:
    """Patch size and start offsets covering ``length`` pixels with tiles of ``core`` plus
    ``pad`` on each side, neighbours overlapping by at least ``2 * pad``.

    The count is the smallest that covers; then the patch shrinks to the smallest size that
    still covers with that count, and the starts are spread evenly. ``length`` must be a
    multiple of ``align``; sizes and starts are kept multiples of it.
    """
    patch = _align_up(core + 2 * pad, align)
    if patch >= length:
        return length, (0,)
    overlap = _align_up(2 * pad, align)
    step = patch - overlap
    n = math.ceil((length - patch) / step) + 1
    patch = min(patch, _align_up(math.ceil((length + (n - 1) * overlap) / n), align))
    span = length - patch
    starts = tuple((i * span // (n - 1)) // align * align for i in range(n))
    return patch, starts


def plan_tiles(
    height: int,
    width: int,
    *,
    tile: int,
    tile_pad: int,
    bytes_per_pixel: float,
    budget: int,
    align: int = 1,
    batch: int = 0,
    max_batch: int = MAX_TILE_BATCH,
) -> TilePlan:
    """The tiles for a padded input of ``height`` x ``width`` (multiples of ``align``).

    ``tile=0``: the whole image in one pass when ``height * width * bytes_per_pixel`` fits
    ``budget``, else the largest tile (up to :data:`AUTO_MAX_TILE`) whose padded patch fits.
    ``batch=0``: as many tiles per pass as fit the budget, up to ``max_batch``.
    """
    if tile <= 0:
        if height * width * bytes_per_pixel <= budget:
            return TilePlan(height, width, height, width, (0,), (0,), 0, 1)
        side = math.isqrt(max(1, int(budget / max(bytes_per_pixel, 1e-9))))
        tile = max(MIN_TILE, min(AUTO_MAX_TILE, side - 2 * tile_pad)) // align * align
    patch_h, ys = axis_tiles(height, tile, tile_pad, align)
    patch_w, xs = axis_tiles(width, tile, tile_pad, align)
    count = len(ys) * len(xs)
    if batch <= 0:
        batch = batch_for(budget, patch_h * patch_w * bytes_per_pixel, most=max_batch)
    return TilePlan(height, width, patch_h, patch_w, ys, xs, tile, max(1, min(batch, count)))


def axis_weights(starts: tuple[int, ...], patch: int, scale: int) -> list[np.ndarray]:
    """Per-tile blending weights along one axis, in output pixels (``patch * scale`` each).

    In each overlap the left tile's weight falls from 1 to 0 and the right one's rises, as a
    raised cosine between margins of :data:`BLEND_MARGIN` of the overlap; the weights are then
    normalised so that all tiles add up to exactly 1 at every output pixel.
    """
    size = patch * scale
    centres = np.arange(size, dtype=np.float64) + 0.5
    weights = [np.ones(size, dtype=np.float64) for _ in starts]
    for i in range(len(starts) - 1):
        lo, hi = starts[i + 1], starts[i] + patch
        if hi <= lo:
            continue
        margin = (hi - lo) * BLEND_MARGIN
        a, b = (lo + margin) * scale, (hi - margin) * scale
        for j, rising in ((i + 1, True), (i, False)):
            g = starts[j] * scale + centres
            t = np.clip((g - a) / (b - a), 0.0, 1.0) if b > a else (g >= a).astype(np.float64)
            ramp = 0.5 - 0.5 * np.cos(np.pi * t)
            weights[j] *= ramp if rising else 1.0 - ramp
    total = np.zeros((starts[-1] + patch) * scale, dtype=np.float64)
    for s, w in zip(starts, weights, strict=True):
        total[s * scale : s * scale + size] += w
    total = np.maximum(total, 1e-12)
    return [w / total[s * scale : s * scale + size] for s, w in zip(starts, weights, strict=True)]


def mod_align(scale: int) -> int:
    """The multiple the input sides must have (``RealESRGANer.pre_process``'s mod pad)."""
    return {2: 2, 1: 4}.get(int(scale), 1)


def upscale_tiled(
    model: Any,
    pixels: np.ndarray,
    *,
    scale: int,
    top: float,
    device: str | torch.device = "cpu",
    half: bool = False,
    channels_last: bool = False,
    tile: int = 0,
    tile_pad: int = 10,
    pre_pad: int = 10,
    batch: int = 0,
    budget: int | None = None,
    out_dtype: Any = None,
    align: int | None = None,
) -> tuple[np.ndarray, TileStats]:
    """Run super-resolution network ``model`` over ``pixels``, tiled and batched.

    Args:
        model: the network (``RealESRGANer.model``): NCHW RGB 0..1 -> NCHW RGB x ``scale``.
        pixels: HxWx3 BGR, any dtype; ``pixels / top`` is the 0..1 input.
        scale: the network's native scale.
        half: run the network in fp16 (it must already be fp16).
        channels_last: feed the network channels-last inputs (faster on CPU).
        tile, tile_pad, pre_pad: see :func:`plan_tiles`; ``pre_pad`` is clamped below the
            shorter side (reflection needs it).
        batch: tiles per pass; 0 = from the memory budget.
        budget: activation bytes per pass; None = :func:`memory_budget` of ``device``.
        out_dtype: None for float32 0..1 output; ``np.uint8``/``np.uint16`` for
            ``rint(clip(out, 0, 1) * top)`` in that dtype.
        align: the multiple the padded input and the tiles keep (the network's
            ``multiple_of``); None = :func:`mod_align` of ``scale``.

    Returns:
        (H*scale)x(W*scale)x3 BGR output and the run's :class:`TileStats`.

    Raises:
        TiledOutOfMemory: out of memory even with one tile per pass (retry smaller tiles).
    """
    h, w = pixels.shape[:2]
    dev = torch.device(device)
    dtype = torch.float16 if half else torch.float32
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(pixels))
        if x.dtype not in (torch.uint8, torch.float16, torch.float32):
            x = x.to(torch.float32)  # uint16 has few kernels (none on CUDA): convert here
        x = x.to(dev).permute(2, 0, 1).flip(0).unsqueeze(0)
        x = x.to(torch.float32, copy=True).div_(top).to(dtype)  # never the caller's array
        pre = min(pre_pad, min(h, w) - 1)
        if pre > 0:
            x = F.pad(x, (0, pre, 0, pre), "reflect")
        align = mod_align(scale) if align is None else max(1, int(align))
        mod_h, mod_w = (-x.shape[2]) % align, (-x.shape[3]) % align
        if mod_h or mod_w:
            x = F.pad(x, (0, mod_w, 0, mod_h), "reflect")
        height, width = int(x.shape[2]), int(x.shape[3])
        if budget is None:
            budget = memory_budget(dev)
        elem = 2 if half else 4
        if tile <= 0 and height * width * surely_enough_per_pixel(scale, elem) <= budget:
            # One pass for sure: no need to trace the network (0.4 s for RRDBNet) to know it.
            bpp = surely_enough_per_pixel(scale, elem)
        else:
            bpp = sr_bytes_per_pixel(model, scale=scale, elem_bytes=elem)
        plan = plan_tiles(
            height,
            width,
            tile=tile,
            tile_pad=tile_pad,
            bytes_per_pixel=bpp,
            budget=budget,
            align=align,
            batch=batch,
            max_batch=MAX_TILE_BATCH if dev.type == "cuda" else CPU_TILE_BATCH,
        )
        stats = TileStats(plan)
        out = _run_plan(model, x, plan, stats, scale, channels_last, (h, w), top, out_dtype)
    return out, stats


def _run_plan(
    model: Any,
    x: torch.Tensor,
    plan: TilePlan,
    stats: TileStats,
    scale: int,
    channels_last: bool,
    size: tuple[int, int],
    top: float,
    out_dtype: Any,
) -> np.ndarray:
    h_out, w_out = size[0] * scale, size[1] * scale
    dest = np.empty((h_out, w_out, 3), dtype=out_dtype or np.float32)
    out_is_u8 = dest.dtype == np.uint8
    wy = [
        torch.from_numpy(v).to(x.device, torch.float32)
        for v in axis_weights(plan.ys, plan.patch_h, scale)
    ]
    wx = [
        torch.from_numpy(v).to(x.device, torch.float32)
        for v in axis_weights(plan.xs, plan.patch_w, scale)
    ]
    band_h, band_w = plan.patch_h * scale, plan.width * scale
    band: torch.Tensor | None = None
    band_top = 0

    def write(src: torch.Tensor, row0: int) -> None:
        """src: 3xRxW float32 RGB rows starting at output row ``row0``."""
        stop = min(row0 + src.shape[1], h_out)
        if stop <= row0:
            return
        v = src[:, : stop - row0, :w_out].clamp(0, 1)
        if out_dtype is not None:
            v = torch.round(v * top).to(torch.uint8 if out_is_u8 else torch.int32)
        dest[row0:stop] = v.permute(1, 2, 0).flip(-1).cpu().numpy()

    def flush(upto: int) -> None:
        nonlocal band, band_top
        if band is None:
            band_top = upto
            return
        write(band[:, : upto - band_top], band_top)
        shift = upto - band_top
        keep = max(0, band_h - shift)
        # Move the unfinished rows up in place, in chunks whose source and destination do
        # not overlap, instead of holding a second band.
        for start in range(0, keep, shift):
            n = min(shift, keep - start)
            band[:, start : start + n] = band[:, start + shift : start + shift + n]
        band[:, keep:] = 0
        band_top = upto

    tiles = [(r, c) for r in range(len(plan.ys)) for c in range(len(plan.xs))]
    batch = plan.batch
    i = 0
    while i < len(tiles):
        chunk = tiles[i : i + batch]
        if plan.count == 1:
            inp = x
        else:
            inp = torch.cat(
                [
                    x[
                        :,
                        :,
                        plan.ys[r] : plan.ys[r] + plan.patch_h,
                        plan.xs[c] : plan.xs[c] + plan.patch_w,
                    ]
                    for r, c in chunk
                ]
            )
        if channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        try:
            y = model(inp)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            del inp
            free_device_memory()
            if batch > 1:
                batch = max(1, batch // 2)
                stats.batch_retries += 1
                continue
            raise TiledOutOfMemory(plan.tile, exc) from exc
        del inp
        stats.forward_passes += 1
        stats.batch_sizes.append(len(chunk))
        y = y.float()
        if plan.count == 1:
            write(y[0], 0)
            break
        if band is None:
            band = torch.zeros((3, band_h, band_w), dtype=torch.float32, device=x.device)
        for k, (r, c) in enumerate(chunk):
            if plan.ys[r] * scale > band_top:
                flush(plan.ys[r] * scale)
            oy, ox = plan.ys[r] * scale - band_top, plan.xs[c] * scale
            part = y[k].mul_(wy[r].view(1, -1, 1)).mul_(wx[c].view(1, 1, -1))
            band[:, oy : oy + band_h, ox : ox + plan.patch_w * scale] += part
        del y
        i += len(chunk)
    if band is not None:
        flush(band_top + band_h)
    return dest
