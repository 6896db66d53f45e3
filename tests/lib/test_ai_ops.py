"""upscale and restore_faces end to end on tiny random-weight models.

Every test goes through the real path: weight file on disk -> registry spec -> fetch.resolve
-> ModelPool -> loaders -> RealESRGANer / GFPGANer. Only the network widths are tiny
(tests/tiny_models.py); outputs are therefore meaningless pictures, so the tests check what a
user would notice besides quality: sizes, dtypes, alpha, gray, determinism, model reuse.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from retouch.lib.image import Image
from retouch.lib.models.pool import ModelPool
from retouch.lib.ops.base import OpContext
from retouch.lib.ops.restore_faces import RestoreFaces
from retouch.lib.ops.upscale import Upscale
from retouch.lib.settings import reload_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tiny_models  # noqa: E402
from tiny_models import seeded_zero  # noqa: E402, F401  (autouse fixture "_seeded")


@pytest.fixture
def sr_models(tmp_path, monkeypatch):
    return tiny_models.install_tiny_models(tmp_path / "models", monkeypatch, faces=None)


def _ctx() -> OpContext:
    return OpContext(name="test.png", device="cpu", pool=ModelPool())


def _image(h, w, *, dtype=np.uint8, alpha=False, gray=False, seed=0) -> Image:
    rng = np.random.default_rng(seed)
    top = 65535 if dtype == np.uint16 else 255
    px = rng.integers(0, top + 1, (h, w, 3), dtype=np.int64).astype(dtype)
    if gray:
        px = np.repeat(px[:, :, :1], 3, axis=2)
    a = rng.integers(0, top + 1, (h, w), dtype=np.int64).astype(dtype) if alpha else None
    return Image(pixels=px, alpha=a, is_gray=gray)


def _run(op, image, ctx, **params):
    return op(image, op.Params(**params), ctx)


# --- upscale ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "outscale", "size"),
    [
        ("realesrgan-x4plus", None, (48, 80)),
        ("realesrgan-x4plus", 2.0, (24, 40)),
        ("realesrgan-x4plus", 1.5, (18, 30)),
        ("realesrgan-x2plus", None, (24, 40)),
        ("realesr-general-x4v3", 3.5, (42, 70)),
    ],
)
def test_upscale_output_size(sr_models, model, outscale, size):
    out = _run(Upscale(), _image(12, 20), _ctx(), model=model, outscale=outscale)
    assert out.pixels.shape == (*size, 3)
    assert out.pixels.dtype == np.uint8
    assert out.pixels.flags.c_contiguous


def test_upscale_keeps_alpha_resized_to_the_output(sr_models):
    img = _image(10, 14, alpha=True)
    out = _run(Upscale(), img, _ctx(), model="realesr-general-x4v3")
    assert out.alpha is not None and out.alpha.shape == (40, 56) and out.alpha.dtype == np.uint8
    # bicubic resize of the input alpha, not model output
    assert abs(float(out.alpha.mean()) - float(img.alpha.mean())) < 8


def test_upscale_keeps_16_bit_even_for_a_dark_image(sr_models):
    # Dark: max 200 < 256, which the upstream helper would mistake for 8-bit.
    img = Image(pixels=np.random.default_rng(1).integers(0, 200, (10, 12, 3)).astype(np.uint16))
    ctx = _ctx()
    out = _run(Upscale(), img, ctx, model="realesr-general-x4v3")
    assert out.pixels.dtype == np.uint16 and out.pixels.shape == (40, 48, 3)
    # Same model on the 8-bit version: the 16-bit result is the finer version of it.
    bright = Image(pixels=(img.pixels.astype(np.uint32) * 257).astype(np.uint16))
    out16 = _run(Upscale(), bright, ctx, model="realesr-general-x4v3").pixels.astype(np.float64)
    out8 = _run(
        Upscale(), Image(pixels=img.pixels.astype(np.uint8)), ctx, model="realesr-general-x4v3"
    )
    assert np.abs(out16 / 257.0 - out8.pixels.astype(np.float64)).max() <= 1.0
    assert len(np.unique(out16)) > len(np.unique(out8.pixels))


def test_upscale_keeps_gray(sr_models):
    out = _run(Upscale(), _image(8, 8, gray=True), _ctx(), model="realesrgan-x4plus")
    assert out.is_gray
    assert np.array_equal(out.pixels[..., 0], out.pixels[..., 1])
    assert np.array_equal(out.pixels[..., 0], out.pixels[..., 2])


@pytest.mark.parametrize("side", [1, 3])
@pytest.mark.parametrize(
    "model", ["realesrgan-x4plus", "realesrgan-x2plus", "realesr-general-x4v3"]
)
def test_tiny_inputs_do_not_crash(sr_models, side, model):
    out = _run(Upscale(), _image(side, side, alpha=True), _ctx(), model=model)
    scale = 2 if model == "realesrgan-x2plus" else 4
    assert out.pixels.shape == (side * scale, side * scale, 3)
    assert out.alpha.shape == (side * scale, side * scale)


def test_model_is_loaded_once_for_several_images(sr_models):
    ctx = _ctx()
    op = Upscale()
    params = op.Params(model="realesrgan-x4plus")
    for i in range(4):
        op(_image(8, 8, seed=i), params, ctx)
    assert ctx.counters["model_calls"] == 4
    assert list(ctx.pool.loads.values()) == [1]
    assert next(iter(ctx.pool.loads))[:3] == ("realesrgan-x4plus", "cpu", "fp32")


def test_tiling_matches_the_whole_image_run_in_shape_and_is_quiet(sr_models, capsys):
    img = _image(40, 72)
    ctx = _ctx()
    whole = _run(Upscale(), img, ctx, model="realesr-general-x4v3")
    tiled = _run(Upscale(), img, ctx, model="realesr-general-x4v3", tile=32, tile_pad=4)
    assert tiled.pixels.shape == whole.pixels.shape == (160, 288, 3)
    assert capsys.readouterr().out == ""  # upstream prints a line per tile
    # Tiles see less context at their borders, but the picture is the same.
    diff = np.abs(tiled.pixels.astype(int) - whole.pixels.astype(int))
    assert np.median(diff) <= 1


def test_denoise_strength_interpolates_weights(sr_models):
    img = _image(12, 12)
    ctx = _ctx()
    outs = [
        _run(Upscale(), img, ctx, model="realesr-general-x4v3", denoise_strength=s).pixels
        for s in (None, 0.0, 0.5)
    ]
    assert len(ctx.pool.loads) == 3  # three different weight sets
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[1], outs[2])
    op = Upscale()
    assert op.models(op.Params(model="realesr-general-x4v3", denoise_strength=0.5)) == [
        "realesr-general-x4v3",
        "realesr-general-wdn-x4v3",
    ]


def test_upscale_params_are_validated():
    with pytest.raises(ValidationError, match="only supported by realesr-general-x4v3"):
        Upscale.Params(model="realesrgan-x4plus", denoise_strength=0.5)
    with pytest.raises(ValidationError, match="at least 32"):
        Upscale.Params(tile=16)
    with pytest.raises(ValidationError):
        Upscale.Params(outscale=9)
    with pytest.raises(ValidationError):
        Upscale.Params(model="realesrgan-x8")


def test_missing_weights_give_the_model_error_not_a_download(tmp_path, monkeypatch):
    from retouch.lib.errors import ModelNotAvailableError

    tiny_models.point_settings_at(tmp_path / "empty", monkeypatch)
    tiny_models.forbid_network(monkeypatch)
    monkeypatch.setenv("RETOUCH_OFFLINE", "1")
    reload_settings()
    with pytest.raises(ModelNotAvailableError, match="RealESRGAN_x4plus.pth"):
        _run(Upscale(), _image(8, 8), _ctx())


# --- restore_faces ----------------------------------------------------------------------


def _face_models(tmp_path, monkeypatch, faces):
    return tiny_models.install_tiny_models(tmp_path / "models", monkeypatch, faces=faces)


def test_restore_faces_with_one_face_upscale_1_is_deterministic(tmp_path, monkeypatch):
    _face_models(tmp_path, monkeypatch, "one")
    img = _image(64, 64)
    ctx = _ctx()
    op = RestoreFaces()
    params = op.Params(model="gfpgan-v1.4", upscale=1)
    first = op(img, params, ctx)
    second = op(img, params, ctx)
    assert ctx.counters["faces"] == 2  # one face found in each run (the hand-set detector)
    assert first.pixels.shape == (64, 64, 3) and first.pixels.dtype == np.uint8
    assert not np.array_equal(first.pixels, img.pixels)  # the face was pasted back
    assert np.array_equal(first.pixels, second.pixels)  # fixed noise: same input, same output
    assert list(ctx.pool.loads.values()) == [1]

    # The check above can fail: the same network with random noise gives different faces.
    restorer = next(iter(ctx.pool._entries.values())).value
    x = torch.zeros(1, 3, 512, 512)
    with torch.no_grad():
        a = restorer.gfpgan.inner(x, return_rgb=False, randomize_noise=True)[0]
        b = restorer.gfpgan.inner(x, return_rgb=False, randomize_noise=True)[0]
    assert not torch.equal(a, b)


def test_restore_faces_upscale_2_keeps_16_bit_alpha_and_background(tmp_path, monkeypatch):
    _face_models(tmp_path, monkeypatch, "one")
    img = _image(48, 56, dtype=np.uint16, alpha=True)
    ctx = _ctx()
    out = _run(RestoreFaces(), img, ctx, upscale=2)
    assert ctx.counters["faces"] == 1
    assert out.pixels.shape == (96, 112, 3) and out.pixels.dtype == np.uint16
    assert out.alpha.shape == (96, 112) and out.alpha.dtype == np.uint16
    # Outside the pasted face the 16-bit background is kept exactly (no 8-bit rounding).
    assert np.any(out.pixels % 257 != 0)


def test_restore_faces_without_faces_returns_the_background(tmp_path, monkeypatch):
    import cv2

    _face_models(tmp_path, monkeypatch, "none")
    ctx = _ctx()
    img = _image(40, 40, gray=True)
    same = _run(RestoreFaces(), img, ctx, model="restoreformer")
    assert same.is_gray and np.array_equal(same.pixels, img.pixels)
    up = _run(RestoreFaces(), img, ctx, model="restoreformer", upscale=3)
    expected = cv2.resize(img.pixels, (120, 120), interpolation=cv2.INTER_LANCZOS4)
    assert np.array_equal(up.pixels, expected)
    assert ctx.counters["faces"] == 0 and ctx.counters["model_calls"] == 2


def test_restore_faces_bg_upsampler_and_tiny_images(tmp_path, monkeypatch):
    _face_models(tmp_path, monkeypatch, "none")
    ctx = _ctx()
    op = RestoreFaces()
    params = op.Params(upscale=2, bg_upsampler="realesr-general-x4v3")
    out = op(_image(20, 24, alpha=True), params, ctx)
    assert out.pixels.shape == (40, 48, 3) and out.alpha.shape == (40, 48)
    assert any(k[0] == "realesr-general-x4v3" for k in ctx.pool.loads)
    assert op.models(params) == [
        "gfpgan-v1.4",
        "retinaface-resnet50",
        "parsenet",
        "realesr-general-x4v3",
    ]
    for side in (1, 3):
        tiny = op(_image(side, side), op.Params(upscale=2), ctx)
        assert tiny.pixels.shape == (2 * side, 2 * side, 3)
