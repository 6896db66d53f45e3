"""Batched, blended tiling of the super-resolution networks (lib/models/tiling.py).

Tiny random-weight models through the real loading path (registry -> resolve -> pool ->
RealESRGANer), driven by ``upscale_pixels`` / the ``upscale`` operation. Tolerance for
"tiled equals untiled": at most 2 levels of 255 (2 x 257 of 65535) at every pixel, borders
included; a tile sees less context near its edges than the whole image does, and the
blending gives those pixels little weight.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from retouch.lib.image import Image
from retouch.lib.models import budget, loaders, specs
from retouch.lib.models.pool import ModelPool
from retouch.lib.models.tiling import (
    MAX_TILE_BATCH,
    axis_tiles,
    axis_weights,
    plan_tiles,
)
from retouch.lib.ops.base import OpContext
from retouch.lib.ops.upscale import Upscale, upscale_pixels

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tiny_models  # noqa: E402
from tiny_models import seeded_zero  # noqa: E402, F401  (autouse fixture "_seeded")

TOLERANCE = 2  # 8-bit levels


@pytest.fixture
def sr_models(tmp_path, monkeypatch):
    model_dir = tiny_models.install_tiny_models(tmp_path / "models", monkeypatch, faces=None)
    # Tiny random RRDBNets put out values near 0, which clamping turns into a black image
    # that would hide any tiling error: give their last layer a mid-grey bias and more gain.
    for name in ("realesrgan-x4plus", "realesrgan-x2plus"):
        path = model_dir / specs.get_spec(name).filename
        state = torch.load(path, weights_only=True)
        state["params_ema"]["conv_last.weight"] *= 4
        state["params_ema"]["conv_last.bias"].fill_(0.5)
        torch.save(state, path)
    return model_dir


class Recording(nn.Module):
    """Wraps a network and records the shape of every real (not meta-traced) input."""

    def __init__(self, inner: nn.Module, seen: list[tuple[int, ...]], refuse_batches=False):
        super().__init__()
        self.inner = inner
        self.seen = seen
        self.refuse_batches = refuse_batches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "meta":
            self.seen.append(tuple(x.shape))
            if self.refuse_batches and x.shape[0] > 1:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


@pytest.fixture
def recorded(sr_models, monkeypatch):
    """Every SR network loaded from here on records its inputs into the returned list."""
    seen: list[tuple[int, ...]] = []
    options = {"refuse_batches": False}
    real = loaders.load_realesrganer

    def load(*args, **kwargs):
        upsampler = real(*args, **kwargs)
        upsampler.model = Recording(upsampler.model, seen, options["refuse_batches"])
        return upsampler

    monkeypatch.setattr(loaders, "load_realesrganer", load)
    return seen, options


def _ctx(pool: ModelPool | None = None) -> OpContext:
    return OpContext(name="test.png", device="cpu", pool=pool or ModelPool())


def _pixels(h, w, *, dtype=np.uint8, seed=0) -> np.ndarray:
    top = 65535 if dtype == np.uint16 else 255
    rng = np.random.default_rng(seed)
    return rng.integers(0, top + 1, (h, w, 3), dtype=np.int64).astype(dtype)


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


# --- the plan and the weights -------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "core", "pad", "align"),
    [(60, 24, 8, 1), (80, 24, 8, 1), (100, 32, 10, 2), (1000, 96, 10, 4), (333, 32, 0, 1)],
)
def test_axis_tiles_cover_the_axis_with_aligned_overlapping_tiles(length, core, pad, align):
    patch, starts = axis_tiles(length, core, pad, align)
    assert starts[0] == 0 and starts[-1] + patch == length
    assert patch <= core + 2 * pad + align and patch % align == 0
    assert all(s % align == 0 for s in starts)
    overlaps = [starts[i] + patch - starts[i + 1] for i in range(len(starts) - 1)]
    assert len(starts) > 1 and min(overlaps) >= 2 * pad


@pytest.mark.parametrize(("length", "core", "pad", "scale"), [(80, 24, 8, 4), (333, 32, 10, 2)])
def test_blend_weights_add_up_to_one_and_fade_out_at_inner_edges(length, core, pad, scale):
    patch, starts = axis_tiles(length, core, pad)
    weights = axis_weights(starts, patch, scale)
    total = np.zeros(length * scale)
    for s, w in zip(starts, weights, strict=True):
        assert w.min() >= 0 and w.max() <= 1 + 1e-9
        total[s * scale : (s + patch) * scale] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-9)
    # A tile has no say at its inner edges (it lacked context there) ...
    assert weights[0][-1] == 0 and weights[1][0] == 0
    # ... and its weight changes smoothly (no step larger than a ramp allows).
    assert max(np.abs(np.diff(w)).max() for w in weights) < 0.2


def test_automatic_plan_for_a_6000x4000_image_fits_a_16_gb_card_and_cpu_budget(monkeypatch):
    # The full-size RealESRGAN_x4plus network (random weights: the shape is what counts).
    net = loaders.build_sr_network(specs.get_spec("realesrgan-x4plus"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (15 * 2**30, 16 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    card = budget.memory_budget("cuda")
    assert card == int(budget.CUDA_BUDGET_FRACTION * 15 * 2**30)
    assert budget.memory_budget("cpu") == budget.CPU_BUDGET_BYTES
    for device_budget, elem in ((card, 2), (budget.CPU_BUDGET_BYTES, 4)):
        bpp = budget.sr_bytes_per_pixel(net, scale=4, elem_bytes=elem)
        # What was measured on CPU (peak RSS): 10.7-14.2 KB per input pixel in fp32.
        assert 12_000 * elem / 4 < bpp < 40_000 * elem / 4
        plan = plan_tiles(
            4010, 6010, tile=0, tile_pad=10, bytes_per_pixel=bpp, budget=device_budget
        )
        assert plan.count > 1 and 32 <= plan.tile <= 512
        assert plan.patch_h * plan.patch_w * bpp * plan.batch <= device_budget
        if device_budget == card:
            assert plan.batch > 1  # several full-size tiles per pass on the card
        assert plan.ys[-1] + plan.patch_h == 4010 and plan.xs[-1] + plan.patch_w == 6010
    # A small image runs whole, in one pass.
    small = plan_tiles(
        74, 94, tile=0, tile_pad=10, bytes_per_pixel=bpp, budget=budget.CPU_BUDGET_BYTES
    )
    assert small.count == 1 and small.tile == 0 and (small.patch_h, small.patch_w) == (74, 94)


# --- tiled output equals untiled output ---------------------------------------------------


@pytest.mark.parametrize(
    "model", ["realesrgan-x4plus", "realesr-general-x4v3", "realesrgan-x2plus"]
)
def test_tiled_output_equals_untiled_output(recorded, model):
    seen, _ = recorded
    pixels = _pixels(50, 70)
    pool = ModelPool()
    whole_ctx, tiled_ctx = _ctx(pool), _ctx(pool)
    whole = upscale_pixels(pixels, whole_ctx, model=model)
    assert whole_ctx.counters["forward_passes"] == 1
    scale = specs.get_spec(model).scale
    padded = (60, 80)  # 10 px pre-pad, already a multiple of the x2 models' 2
    assert seen == [(1, 3, *padded)]
    seen.clear()
    # 24 px tiles (which divide neither side) with 8 px pads: 2 x 3 tiles, 3 per pass.
    tiled = upscale_pixels(pixels, tiled_ctx, model=model, tile=24, tile_pad=8, tile_batch=3)
    assert tiled_ctx.counters["forward_passes"] == 2
    assert [s[0] for s in seen] == [3, 3] and all(s[2:] < padded for s in seen)
    assert tiled.shape == whole.shape == (50 * scale, 70 * scale, 3)
    assert len(np.unique(whole)) > 50  # a real picture, not a clamped flat one
    assert _max_diff(tiled, whole) <= TOLERANCE


def test_tiled_16_bit_rgba_equals_untiled(sr_models):
    px = _pixels(44, 60, dtype=np.uint16, seed=2)
    alpha = np.random.default_rng(3).integers(0, 65536, (44, 60)).astype(np.uint16)
    image = Image(pixels=px, alpha=alpha)
    op = Upscale()
    pool = ModelPool()
    whole = op(image, op.Params(model="realesrgan-x4plus"), _ctx(pool))
    ctx = _ctx(pool)
    tiled = op(image, op.Params(model="realesrgan-x4plus", tile=32, tile_pad=8, tile_batch=4), ctx)
    assert ctx.counters["forward_passes"] == 1  # 2 x 2 tiles in one pass
    assert tiled.pixels.dtype == np.uint16 and tiled.pixels.shape == (176, 240, 3)
    assert _max_diff(tiled.pixels, whole.pixels) <= TOLERANCE * 257
    assert np.any(tiled.pixels % 257 != 0)  # 16-bit precision, not 8-bit values x 257
    assert tiled.alpha is not None and np.array_equal(tiled.alpha, whole.alpha)


def test_one_tile_per_pass_gives_the_same_output_as_many(recorded):
    seen, _ = recorded
    pixels = _pixels(50, 90, seed=4)
    pool = ModelPool()
    outs = []
    for batch in (1, 4, 6):
        seen.clear()
        outs.append(
            upscale_pixels(
                pixels,
                _ctx(pool),
                model="realesr-general-x4v3",
                tile=32,
                tile_pad=6,
                tile_batch=batch,
            )
        )
        assert [s[0] for s in seen] == {1: [1] * 6, 4: [4, 2], 6: [6]}[batch]
    # A batched convolution is not bit-identical to one image at a time on every CPU (the
    # BLAS picks other kernels per batch size; AMD EPYC differs, Intel Xeon did not): the
    # tiles must agree to rounding: at most 1 level of 255, on under 0.1% of the values.
    for other in outs[1:]:
        assert other.shape == outs[0].shape and other.dtype == outs[0].dtype
        diff = np.abs(other.astype(np.int16) - outs[0].astype(np.int16))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


def test_out_of_memory_with_several_tiles_retries_with_fewer_per_pass(recorded):
    seen, options = recorded
    pixels = _pixels(50, 90, seed=4)
    expected = upscale_pixels(
        pixels, _ctx(), model="realesr-general-x4v3", tile=32, tile_pad=6, tile_batch=1
    )
    options["refuse_batches"] = True
    seen.clear()
    ctx = _ctx()
    out = upscale_pixels(
        pixels, ctx, model="realesr-general-x4v3", tile=32, tile_pad=6, tile_batch=4
    )
    assert [s[0] for s in seen] == [4, 2] + [1] * 6
    assert ctx.counters["oom_retries"] == 2 and ctx.counters["forward_passes"] == 6
    assert np.array_equal(out, expected)


# --- automatic tile size ------------------------------------------------------------------


def test_automatic_tiles_for_a_large_image_only(recorded, capsys):
    seen, _ = recorded
    pool = ModelPool()
    upscale_pixels(_pixels(8, 8), _ctx(pool), model="realesr-general-x4v3")  # load it
    loaded = next(iter(pool._entries.values())).value
    bpp = budget.sr_bytes_per_pixel(loaded.network, scale=4, elem_bytes=4)
    limit = int(bpp * 90 * 90)  # room for a 90x90 input per pass

    seen.clear()
    small_ctx = _ctx(pool)
    small = upscale_pixels(
        _pixels(60, 70), small_ctx, model="realesr-general-x4v3", memory_budget=limit
    )
    assert small_ctx.counters["forward_passes"] == 1 and seen == [(1, 3, 70, 80)]

    seen.clear()
    big = _pixels(150, 170, seed=5)
    big_ctx = _ctx(pool)
    tiled = upscale_pixels(big, big_ctx, model="realesr-general-x4v3", memory_budget=limit)
    assert len(seen) == big_ctx.counters["forward_passes"] > 1
    assert sum(s[0] for s in seen) > 1
    assert all(n * h * w * bpp <= limit for n, _c, h, w in seen)
    whole = upscale_pixels(big, _ctx(pool), model="realesr-general-x4v3")
    assert seen[-1] == (1, 3, 160, 180)  # the default budget runs it whole
    assert small.shape == (240, 280, 3) and _max_diff(tiled, whole) <= TOLERANCE
    assert capsys.readouterr().out == ""


def test_explicit_tile_batch_is_capped_by_the_number_of_tiles_and_cpu_default_is_one(recorded):
    seen, _ = recorded
    upscale_pixels(_pixels(40, 40), _ctx(), model="realesr-general-x4v3", tile=32, tile_pad=4)
    assert [s[0] for s in seen] == [1, 1, 1, 1]  # CPU_TILE_BATCH
    seen.clear()
    upscale_pixels(
        _pixels(40, 40), _ctx(), model="realesr-general-x4v3", tile=32, tile_pad=4, tile_batch=64
    )
    assert [s[0] for s in seen] == [4]
    assert MAX_TILE_BATCH >= 4


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()))


@pytest.mark.parametrize("model", ["realesrgan-x4plus", "realesrgan-x2plus"])
def test_blending_beats_a_hard_cut_when_the_pad_is_shorter_than_the_network_reach(
    sr_models, monkeypatch, model
):
    # With 2 px pads the tiles lack context everywhere near their edges (the real networks'
    # reach is far longer than any pad). A hard cut in the middle of the overlap, as
    # RealESRGANer pastes tiles, shows that as a step; the cosine blend spreads it out.
    from retouch.lib.models import tiling

    pixels = _pixels(50, 70)
    pool = ModelPool()
    whole = upscale_pixels(pixels, _ctx(pool), model=model)
    blended = upscale_pixels(pixels, _ctx(pool), model=model, tile=24, tile_pad=2)
    monkeypatch.setattr(tiling, "BLEND_MARGIN", 0.5)  # weights step from 1 to 0 mid-overlap
    cut = upscale_pixels(pixels, _ctx(pool), model=model, tile=24, tile_pad=2)
    assert not np.array_equal(blended, cut)
    assert _max_diff(blended, whole) <= _max_diff(cut, whole)
    assert _rms(blended, whole) < _rms(cut, whole)


def test_an_input_that_surely_fits_is_not_traced(recorded, monkeypatch):
    """Tracing the network (0.4 s for RRDBNet) only to learn that a small input fits in one
    pass is skipped; a budget the input may exceed still traces it."""
    from retouch.lib.models import tiling

    seen, _ = recorded
    traced: list[int] = []
    real = tiling.sr_bytes_per_pixel

    def counting(model, **kwargs):
        traced.append(1)
        return real(model, **kwargs)

    monkeypatch.setattr(tiling, "sr_bytes_per_pixel", counting)
    pool = ModelPool()
    upscale_pixels(_pixels(60, 70), _ctx(pool), model="realesr-general-x4v3")
    assert traced == [] and seen == [(1, 3, 70, 80)]
    tight = int(budget.surely_enough_per_pixel(4, 4) * 70 * 80) - 1
    upscale_pixels(_pixels(60, 70), _ctx(pool), model="realesr-general-x4v3", memory_budget=tight)
    assert traced == [1]
