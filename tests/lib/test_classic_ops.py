"""Classic operations: shapes, dtypes, alpha, gray and 16-bit kept; each op does its job."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from retouch.lib.errors import OperationError
from retouch.lib.image import Image
from retouch.lib.ops.auto_color import AutoColor
from retouch.lib.ops.base import OpContext
from retouch.lib.ops.denoise import Denoise
from retouch.lib.ops.fit import Fit
from retouch.lib.ops.inpaint import Inpaint
from retouch.lib.ops.sharpen import Sharpen
from retouch.lib.ops.stylize import Stylize
from retouch.lib.quality import measures

OPS = [Fit(), Denoise(), Sharpen(), AutoColor(), Stylize(), Inpaint()]
DEFAULTS = {
    "fit": {"max_side": 20},
    "inpaint": {"rect_rel": [0.25, 0.25, 0.5, 0.5]},
}


def scene(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """HxWx3 BGR uint8: smooth colour gradients plus a textured square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack(
        [40 + 150 * xx / max(w, 1), 60 + 120 * yy / max(h, 1), 180 - 100 * xx / max(w, 1)], axis=2
    )
    img[h // 4 : h // 2, w // 4 : w // 2] += rng.normal(
        0, 40, (h // 2 - h // 4, w // 2 - w // 4, 3)
    )
    return np.clip(img, 0, 255).astype(np.uint8)


def make_image(kind: str, h: int = 48, w: int = 64) -> Image:
    px = scene(h, w)
    if kind == "gray":
        g = cv2.cvtColor(px, cv2.COLOR_BGR2GRAY)
        return Image(np.repeat(g[:, :, None], 3, axis=2), is_gray=True)
    if kind == "alpha":
        alpha = np.tile(np.linspace(0, 255, w, dtype=np.float32), (h, 1)).astype(np.uint8)
        return Image(px, alpha=alpha, info={"dpi": (72, 72)})
    if kind == "16bit":
        return Image(px.astype(np.uint16) * 257 + 100)
    return Image(px)


def run(op, image: Image, ctx: OpContext | None = None, **params) -> Image:
    return op(image, op.Params(**params), ctx or OpContext(name="photo.png"))


@pytest.mark.parametrize("op", OPS, ids=lambda o: o.id)
@pytest.mark.parametrize("kind", ["color", "gray", "alpha", "16bit"])
def test_op_keeps_dtype_flags_and_input(op, kind):
    image = make_image(kind)
    before = copy.deepcopy(image)
    out = run(op, image, **DEFAULTS.get(op.id, {}))
    assert out.pixels.dtype == image.pixels.dtype
    assert out.pixels.ndim == 3 and out.pixels.shape[2] == 3
    assert out.pixels.flags["C_CONTIGUOUS"]
    assert out.is_gray == image.is_gray
    if image.is_gray:
        assert np.array_equal(out.pixels[:, :, 0], out.pixels[:, :, 1])
        assert np.array_equal(out.pixels[:, :, 0], out.pixels[:, :, 2])
    if image.alpha is None:
        assert out.alpha is None
    else:
        assert out.alpha.shape == out.pixels.shape[:2] and out.alpha.dtype == image.alpha.dtype
    assert out.info == image.info
    if op.id != "fit":
        assert out.pixels.shape == image.pixels.shape
    # the input is never modified in place
    assert np.array_equal(image.pixels, before.pixels)
    assert (image.alpha is None) or np.array_equal(image.alpha, before.alpha)
    assert image.is_gray == before.is_gray and image.info == before.info


@pytest.mark.parametrize("op", OPS, ids=lambda o: o.id)
@pytest.mark.parametrize("size", [(1, 1), (3, 3), (1, 7)])
def test_tiny_images_do_not_crash(op, size):
    image = Image(np.full((*size, 3), 120, np.uint8), alpha=np.full(size, 200, np.uint8))
    out = run(op, image, **DEFAULTS.get(op.id, {}))
    assert out.pixels.dtype == np.uint8 and out.alpha.shape == out.pixels.shape[:2]


@pytest.mark.parametrize(
    "style", ["stylization", "pencil_sketch", "pencil_color", "cartoon", "detail_enhance"]
)
@pytest.mark.parametrize("kind", ["color", "16bit"])
def test_stylize_styles_keep_shape(style, kind):
    image = make_image(kind)
    out = run(Stylize(), image, style=style)
    assert out.pixels.shape == image.pixels.shape and out.pixels.dtype == image.pixels.dtype
    assert out.is_gray == (style == "pencil_sketch")
    assert not np.array_equal(out.pixels, image.pixels)


# -- fit --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w", "expect"), [(60, 120, (15, 30)), (120, 60, (30, 15))])
def test_fit_max_side_landscape_and_portrait(h, w, expect):
    out = run(Fit(), make_image("alpha", h, w), max_side=30)
    assert out.pixels.shape[:2] == expect and out.alpha.shape == expect


def test_fit_never_enlarges_unless_asked():
    image = make_image("color", 40, 50)
    assert run(Fit(), image, max_side=500).pixels.shape[:2] == (40, 50)
    assert run(Fit(), image, max_side=100, upscale_small=True).pixels.shape[:2] == (80, 100)


def test_fit_keeps_16bit():
    out = run(Fit(), make_image("16bit", 40, 80), width=30, height=30, mode="cover")
    assert out.pixels.dtype == np.uint16 and out.pixels.shape == (30, 30, 3)
    assert out.pixels.max() > 255


def test_fit_contain_pads_to_exact_size_with_pad_color():
    out = run(Fit(), make_image("color", 50, 100), width=100, height=100, pad_color="#ff0000")
    assert out.pixels.shape == (100, 100, 3)
    assert out.pixels[0, 50].tolist() == [0, 0, 255]  # BGR red in the top band
    assert out.pixels[99, 50].tolist() == [0, 0, 255]
    assert out.pixels[50, 50].tolist() != [0, 0, 255]


def test_fit_contain_pads_transparent_when_alpha():
    out = run(Fit(), make_image("alpha", 50, 100), width=100, height=100)
    assert out.alpha.shape == (100, 100)
    assert out.alpha[0, 50] == 0 and out.alpha[50, 99] > 200


def test_fit_cover_and_stretch_give_exact_size():
    image = make_image("alpha", 50, 100)
    for mode in ("cover", "stretch"):
        out = run(Fit(), image, width=40, height=40, mode=mode)
        assert out.pixels.shape == (40, 40, 3) and out.alpha.shape == (40, 40)


def test_fit_smart_crop_keeps_detailed_region():
    rng = np.random.default_rng(1)
    h, w = 100, 300
    xx = np.tile(np.linspace(80, 120, w, dtype=np.float32), (h, 1))
    px = np.repeat(xx[:, :, None], 3, axis=2)
    px[20:80, 245:290] = rng.integers(0, 256, (60, 45, 3))  # texture near the right edge
    image = Image(px.astype(np.uint8))

    def texture(im: Image) -> float:
        return float(cv2.Laplacian(im.pixels[:, :, 1].astype(np.float32), cv2.CV_32F).var())

    smart = run(Fit(), image, width=100, height=100, mode="cover", anchor="smart")
    centre = run(Fit(), image, width=100, height=100, mode="cover", anchor="center")
    assert smart.pixels.shape == centre.pixels.shape == (100, 100, 3)
    assert texture(smart) > 50 * max(texture(centre), 1.0)


def test_fit_params_need_a_target():
    with pytest.raises(ValidationError, match="max_side"):
        Fit.Params()
    with pytest.raises(ValidationError, match="not both"):
        Fit.Params(max_side=10, width=5, height=5)
    with pytest.raises(ValidationError):
        Fit.Params(max_side=10, colour="red")


# -- denoise / sharpen / auto_color -------------------------------------------------------------


def noisy_scene(dtype=np.uint8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    clean = cv2.GaussianBlur(scene(96, 96), (0, 0), 3)
    noisy = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
    if dtype == np.uint16:
        return clean.astype(np.uint16) * 257, noisy.astype(np.uint16) * 257
    return clean, noisy


@pytest.mark.parametrize("method", ["nlmeans", "bilateral"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_denoise_reduces_noise(method, dtype):
    _, noisy = noisy_scene(dtype)
    out = run(Denoise(), Image(noisy), strength=12, method=method)
    assert out.pixels.dtype == dtype
    assert measures.noise_sigma(out.pixels) < 0.6 * measures.noise_sigma(noisy)


def test_sharpen_increases_sharpness_and_threshold_protects_flat_areas():
    soft = cv2.GaussianBlur(scene(96, 96), (0, 0), 2)
    out = run(Sharpen(), Image(soft), amount=1.5, radius=2, threshold=0)
    assert measures.sharpness(out.pixels) > 1.5 * measures.sharpness(soft)
    flat = Image(np.full((32, 32, 3), 100, np.uint8))
    flat.pixels[16, 16] = 102  # a 2-level bump stays below threshold 4
    assert np.array_equal(run(Sharpen(), flat, amount=3, threshold=4).pixels, flat.pixels)


def test_auto_color_removes_cast_and_stretches_contrast():
    g = cv2.cvtColor(scene(64, 64), cv2.COLOR_BGR2GRAY).astype(np.float32)
    neutral = np.repeat(g[:, :, None], 3, axis=2)
    cast = np.clip(neutral * [0.6, 0.9, 1.3] * 0.5 + 60, 0, 255).astype(
        np.uint8
    )  # warm, low contrast
    assert measures.color_cast(cast) > 10
    out = run(AutoColor(), Image(cast), strength=1.0, white_balance="grayworld")
    assert measures.color_cast(out.pixels) < 0.5 * measures.color_cast(cast)
    assert measures.exposure(out.pixels)["contrast"] > measures.exposure(cast)["contrast"] + 0.2


def test_auto_color_neutral_balance_fixes_a_cast_on_gray_content():
    g = cv2.cvtColor(scene(64, 64), cv2.COLOR_BGR2GRAY).astype(np.float32)
    cast = np.clip(np.repeat(g[:, :, None], 3, axis=2) * [0.85, 1.0, 1.15], 0, 255).astype(np.uint8)
    out = run(AutoColor(), Image(cast), strength=1.0, levels=False)
    assert measures.color_cast(out.pixels) < 0.5 * measures.color_cast(cast)


def test_auto_color_neutral_balance_leaves_a_colourful_scene_alone():
    """A sunset is orange on purpose: the default balance must not "correct" it to gray."""
    yy, xx = np.mgrid[0:100, 0:150].astype(np.float32)
    sunset = np.stack([40 + 0.2 * yy, 90 + 0.8 * yy, 200 + 0.3 * xx], axis=2).clip(0, 255)
    sunset = sunset.astype(np.uint8)
    out = run(AutoColor(), Image(sunset), strength=1.0, levels=False)
    assert np.array_equal(out.pixels, sunset)
    tinted = run(AutoColor(), Image(sunset), strength=1.0, levels=False, white_balance="grayworld")
    assert measures.color_cast(tinted.pixels) < measures.color_cast(sunset) - 10


def test_auto_color_16bit_keeps_fine_levels():
    ramp = np.tile(np.linspace(20000, 30000, 256).astype(np.uint16), (8, 1))
    out = run(
        AutoColor(), Image(np.repeat(ramp[:, :, None], 3, axis=2), is_gray=True), strength=1.0
    )
    assert out.pixels.dtype == np.uint16
    assert len(np.unique(out.pixels)) > 200  # an 8-bit round trip would leave at most ~40
    assert int(out.pixels.max()) - int(out.pixels.min()) > 50000


# -- inpaint -----------------------------------------------------------------------------------


def red_square_on_gradient() -> np.ndarray:
    yy, xx = np.mgrid[0:80, 0:80].astype(np.float32)
    g = np.stack([60 + xx, 80 + yy, 100 + 0.5 * (xx + yy)], axis=2)
    g[30:45, 30:45] = (0, 0, 255)
    return g.astype(np.uint8)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_inpaint_rect_fills_and_leaves_the_rest_bit_identical(dtype):
    px = red_square_on_gradient()
    if dtype == np.uint16:
        px = px.astype(np.uint16) * 257 + 3  # +3: not an exact x257 value, must survive
    image = Image(px)
    out = run(Inpaint(), image, rect=[28, 28, 19, 19], dilate=0)
    scale = 257.0 if dtype == np.uint16 else 1.0
    filled = out.pixels[30:45, 30:45].astype(np.float32) / scale
    expected_bg = (60 + 37, 80 + 37, 100 + 37)  # gradient at the centre, roughly
    assert np.abs(filled.mean(axis=(0, 1)) - expected_bg).max() < 12
    assert filled[:, :, 2].max() < 200  # no red left
    outside = np.ones((80, 80), bool)
    outside[28:47, 28:47] = False
    assert np.array_equal(out.pixels[outside], px[outside])


def test_inpaint_uses_mask_from_ctx_and_resizes_it():
    px = red_square_on_gradient()
    mask = np.zeros((40, 40), np.uint8)
    mask[15:23, 15:23] = 255  # half-size mask: covers 30..46 at full size
    asked = []

    def masks(stem):
        asked.append(stem)
        return mask

    ctx = OpContext(name="holiday/beach.jpg", masks=masks)
    out = run(Inpaint(), Image(px), ctx=ctx)
    assert asked == ["holiday/beach.jpg"]  # the lookup gets the relative name
    assert out.pixels[30:45, 30:45, 2].max() < 200
    assert np.array_equal(out.pixels[:20], px[:20])


def test_inpaint_missing_mask_skip_or_error():
    image = Image(red_square_on_gradient())
    ctx = OpContext(name="dir/portrait_07.png", masks=lambda stem: None)
    out = run(Inpaint(), image, ctx=ctx)
    assert np.array_equal(out.pixels, image.pixels)
    with pytest.raises(OperationError, match="portrait_07") as err:
        run(Inpaint(), image, ctx=ctx, missing_mask="error")
    assert "--masks" in str(err.value)


def test_inpaint_step_mask_dir_is_read_from_storage(tmp_path):
    """A mask folder named in the step itself is listed and read (here a local folder)."""
    px = red_square_on_gradient()
    mask = np.zeros(px.shape[:2], np.uint8)
    mask[28:52, 28:52] = 255
    folder = tmp_path / "masks"
    folder.mkdir()
    cv2.imwrite(str(folder / "beach.png"), mask)
    out = run(Inpaint(), Image(px), ctx=OpContext(name="beach.jpg"), mask_dir=str(folder))
    assert out.pixels[30:45, 30:45, 2].max() < 200
    with pytest.raises(OperationError, match="no inpaint mask for stem 'other'") as err:
        run(
            Inpaint(),
            Image(px),
            ctx=OpContext(name="other.jpg"),
            mask_dir=str(folder),
            missing_mask="error",
        )
    assert str(folder) in str(err.value)
