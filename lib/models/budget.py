"""How much memory one forward pass may use, and how much a network needs per pixel.

The super-resolution networks need memory in proportion to the pixels they see: a full-size
RRDBNet x4 keeps about 10-14 KB of activations per input pixel in fp32 (measured here with
the process's peak RSS), so a 1080p frame needs ~25 GB in one pass. Tiling bounds that;
these helpers say how big the tiles (and how many per pass) may be.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import Any

import torch
from torch import nn

from retouch.lib.settings import get_settings

CPU_BUDGET_BYTES = 2 * 1024**3
"""Activation memory allowed for one forward pass on CPU. A fixed amount, not a share of
the machine's RAM, because several worker processes (and the images they hold) share it:
2 GiB keeps one full-size RRDBNet x4 pass at about 360x360 input pixels, which costs only
~12% in tile overlap and keeps each worker's peak RSS flat whatever the image size."""

CUDA_BUDGET_FRACTION = 0.5
"""Share of the GPU memory that is free (to the driver, plus what torch's allocator holds
unused) that one forward pass may use. The rest stays for the input image, the blending
buffer, fragmentation and other threads' models on the same card. The ``gpu_memory_fraction``
setting caps it further (:func:`memory_budget`)."""

ACTIVATION_SAFETY = 2.0
"""Factor from the largest (input + output) of any module, as traced, to the real peak:
tracing misses temporaries inside ``forward`` (concatenations, interpolations) and
allocator slack. Measured peak RSS on CPU / traced size: RRDBNet x4 1.3-1.7, SRVGGNetCompact
1.7-2.7 (the lower values with channels-last)."""

FALLBACK_BYTES_PER_OUTPUT_PIXEL = 1024
"""fp32 bytes per *output* pixel assumed when a network cannot be traced: the RRDBNet x4 value
rounded up (the heaviest of the supported networks)."""

_PROBE_SIDE = 64  # divisible by 4, as the x1/x2 RRDBNet pixel-unshuffle needs
_cache: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], float]] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def memory_budget(device: str | torch.device) -> int:
    """Bytes of activation memory one forward pass on ``device`` may use.

    CUDA, read at each call (``torch.cuda.mem_get_info``): the smaller of
    :data:`CUDA_BUDGET_FRACTION` of what is free now (to the driver, plus the allocator's
    unused cache) and what keeps this process's tensors under the ``gpu_memory_fraction``
    setting of the card's total (that share of the total minus what torch has allocated now;
    the pass may reuse the allocator's cache, so what the allocator reserves from the card
    grows at most to the cap).
    0 once the process is at or over its cap: the callers then take their smallest tile and
    one item per pass. CPU: :data:`CPU_BUDGET_BYTES`.
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        return CPU_BUDGET_BYTES
    free, total = torch.cuda.mem_get_info(dev)
    allocated = torch.cuda.memory_allocated(dev)
    cached = torch.cuda.memory_reserved(dev) - allocated
    share = CUDA_BUDGET_FRACTION * (free + max(0, cached))
    cap = get_settings().gpu_memory_fraction * total - allocated
    return max(0, int(min(share, cap)))


def _numel(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (tuple, list)):
        return sum(_numel(v) for v in value)
    if isinstance(value, dict):
        return sum(_numel(v) for v in value.values())
    return 0


def traced_peak_elements(model: nn.Module, shape: tuple[int, ...], **kwargs: Any) -> int:
    """Largest (inputs + outputs) element count of any module of ``model`` in one forward
    pass on an input of ``shape``, traced on the meta device (no compute, no memory, the
    model's own weights untouched)."""
    from torch.func import functional_call

    peak = 0

    def hook(_module: nn.Module, args: Any, out: Any) -> None:
        nonlocal peak
        peak = max(peak, _numel(args) + _numel(out))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    state = {
        name: torch.empty_like(t, device="meta")
        for name, t in model.state_dict(keep_vars=True).items()
    }
    try:
        with torch.inference_mode():
            x = torch.empty(shape, device="meta")
            functional_call(model, state, (x,), kwargs, strict=False)
    finally:
        for h in handles:
            h.remove()
    return peak


def activation_bytes(
    model: Any,
    shape: tuple[int, ...],
    *,
    elem_bytes: int,
    fallback: float,
    safety: float = ACTIVATION_SAFETY,
    **kwargs: Any,
) -> float:
    """Estimated peak activation bytes of ``model`` on one input of ``shape`` (N=1).

    Traced once per model and shape (cached while the model lives) and multiplied by
    ``safety``; ``fallback`` (bytes, fp32) when ``model`` is not a plain ``nn.Module`` or
    cannot be traced. ``elem_bytes``: 4 for fp32, 2 for fp16.
    """
    key = (tuple(shape), safety, tuple(sorted(kwargs.items())))
    try:
        with _cache_lock:
            known = _cache.get(model, {}).get(key)
    except TypeError:  # not weak-referenceable
        known = None
    if known is None:
        known = fallback
        if isinstance(model, nn.Module):
            try:
                known = traced_peak_elements(model, shape, **kwargs) * 4 * safety
            except Exception:  # an op without a meta kernel: keep the conservative guess
                known = fallback
        try:
            with _cache_lock:
                _cache.setdefault(model, {})[key] = known
        except TypeError:
            pass
    return known * elem_bytes / 4


def sr_bytes_per_pixel(model: Any, *, scale: int, elem_bytes: int) -> float:
    """Peak activation bytes per input pixel of a super-resolution network."""
    side = _PROBE_SIDE
    fallback = FALLBACK_BYTES_PER_OUTPUT_PIXEL * scale * scale * side * side
    total = activation_bytes(model, (1, 3, side, side), elem_bytes=elem_bytes, fallback=fallback)
    return total / (side * side)


def surely_enough_per_pixel(scale: int, elem_bytes: int) -> float:
    """Bytes per input pixel that no supported network exceeds: twice the untraced guess
    (:data:`FALLBACK_BYTES_PER_OUTPUT_PIXEL`, itself the heaviest network rounded up). An input
    that fits the budget at this rate fits in one pass without tracing the network."""
    return 2 * FALLBACK_BYTES_PER_OUTPUT_PIXEL * scale * scale * elem_bytes / 4


def batch_for(budget: int, bytes_per_item: float, *, most: int) -> int:
    """How many items of ``bytes_per_item`` fit ``budget`` in one pass: 1..``most``."""
    if bytes_per_item <= 0:
        return most
    return max(1, min(most, math.floor(budget / bytes_per_item)))
