"""denoise's template and search windows: the ``quick`` preset's small windows denoise as well
as the old 7/21 setting (PSNR against the clean picture), in colour, gray and 16 bits, and the
windows validate. Timings are measured by ``python -m bench.denoise_choice``, never here."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from retouch.lib.errors import RecipeError
from retouch.lib.image import Image
from retouch.lib.ops.base import OpContext
from retouch.lib.ops.denoise import Denoise, DenoiseParams
from retouch.lib.quality.measures import noise_sigma, psnr
from retouch.lib.recipe import load_preset
from retouch.lib.recipe.loading import recipe_from_dict

# The quick preset's windows may lose at most this much PSNR against the old 7/21 setting.
# Colour: 0.3-0.6 dB better on these scenes, -0.09 to +0.8 dB on the photos of
# ``python -m bench.denoise_choice``. Gray (raw levels, where a small search window finds
# fewer near-identical patches): 0.2-0.3 dB lower on these scenes, 0.8 dB on the photos at
# sigma 3, and the same PSNR after the whole quick recipe.
PSNR_TOLERANCE_DB = 0.3
GRAY_PSNR_TOLERANCE_DB = 1.0


def scene(seed: int, h: int = 128, w: int = 128) -> np.ndarray:
    """HxWx3 BGR uint8: colour gradients, anti-aliased discs and a patch of fine texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([50 + 140 * xx / w, 70 + 110 * yy / h, 190 - 110 * xx / w], axis=2)
    for _ in range(6):
        colour = rng.integers(20, 235, 3).tolist()
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, centre, int(rng.integers(6, 30)), colour, -1, cv2.LINE_AA)
    texture = rng.normal(0, 25, (h - h // 2, w // 2, 3)).astype(np.float32)
    img[h // 2 :, : w // 2] += cv2.GaussianBlur(texture, (0, 0), 1.0)
    return np.clip(img, 0, 255).astype(np.uint8)


def noisy(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).astype(np.uint8)


def quick_params() -> DenoiseParams:
    step = next(s for s in load_preset("quick").steps if s.op == "denoise")
    params = step.parsed()
    assert isinstance(params, DenoiseParams)
    return params


def old_params(params: DenoiseParams) -> DenoiseParams:
    """The same step with the windows quick used before (7/21, still the op's default)."""
    return params.model_copy(update={"template": 7, "search": 21})


def run(image: Image, params: DenoiseParams) -> Image:
    return Denoise()(image, params, OpContext(name="noisy.png"))


def test_quick_uses_smaller_windows_than_the_old_setting():
    params = quick_params()
    assert params.method == "nlmeans"
    # A quarter of the candidates or fewer: OpenCV's time grows with search^2.
    assert params.search**2 <= 21**2 / 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quick_denoise_psnr_within_tolerance_of_the_old_windows(seed):
    clean = scene(seed)
    dirty = noisy(clean, 5.0, seed + 10)
    params = quick_params()
    new = run(Image(dirty), params).pixels
    old = run(Image(dirty), old_params(params)).pixels
    assert psnr(clean, new) >= psnr(clean, old) - PSNR_TOLERANCE_DB
    assert psnr(clean, new) > psnr(clean, dirty) + 2.0  # it does denoise
    assert noise_sigma(new) < 0.7 * noise_sigma(dirty)


def test_quick_denoise_gray_stays_gray_and_denoises_within_tolerance():
    clean = cv2.cvtColor(scene(3), cv2.COLOR_BGR2GRAY)
    # Sigma 3: at quick's strength 2 the gray path (raw levels) leaves sigma 5 as it is,
    # with either window.
    dirty = noisy(clean, 3.0, 13)
    image = Image(np.repeat(dirty[:, :, None], 3, axis=2), is_gray=True)
    params = quick_params()
    out = run(image, params)
    old = run(image, old_params(params))
    assert out.is_gray and out.pixels.dtype == np.uint8
    assert np.array_equal(out.pixels[:, :, 0], out.pixels[:, :, 1])
    assert np.array_equal(out.pixels[:, :, 0], out.pixels[:, :, 2])
    new_db = psnr(clean, out.pixels[:, :, 0])
    assert new_db >= psnr(clean, old.pixels[:, :, 0]) - GRAY_PSNR_TOLERANCE_DB
    assert new_db > psnr(clean, dirty) + 1.5


def test_quick_denoise_16bit_removes_the_same_noise_and_keeps_gradation():
    dirty8 = noisy(scene(4), 5.0, 14)
    params = quick_params()
    den8 = run(Image(dirty8), params).pixels
    # 16-bit pixels that are exactly the 8-bit ones: the change is the 8-bit change x 257.
    out = run(Image(dirty8.astype(np.uint16) * 257), params).pixels
    assert out.dtype == np.uint16
    assert np.array_equal(out, den8.astype(np.uint16) * 257)
    # A fine 16-bit ramp (steps of 4 levels, below one 8-bit level) keeps its steps.
    ramp = np.tile(np.linspace(20000, 21020, 256).astype(np.uint16), (32, 1))
    smooth = run(Image(np.repeat(ramp[:, :, None], 3, axis=2), is_gray=True), params).pixels
    assert len(np.unique(smooth)) > 200  # an 8-bit result would keep at most 5


def test_windows_reach_opencv():
    dirty = noisy(scene(5), 5.0, 15)
    base = DenoiseParams(strength=4)
    out = run(Image(dirty), base).pixels
    # The op's defaults are the old windows, pixel for pixel (so its version stays the same).
    assert np.array_equal(out, cv2.fastNlMeansDenoisingColored(dirty, None, 4, 4, 7, 21))
    small = run(Image(dirty), base.model_copy(update={"template": 3, "search": 9})).pixels
    assert np.array_equal(small, cv2.fastNlMeansDenoisingColored(dirty, None, 4, 4, 3, 9))
    assert not np.array_equal(out, small)


@pytest.mark.parametrize("field", ["template", "search"])
def test_even_window_is_rejected_with_the_odd_neighbours(field):
    with pytest.raises(ValidationError, match=rf"{field} must be an odd number.*use 9 or 11"):
        DenoiseParams(**{field: 10})


@pytest.mark.parametrize(("field", "value"), [("template", 1), ("template", 17), ("search", 37)])
def test_window_out_of_range_is_rejected(field, value):
    with pytest.raises(ValidationError, match=field):
        DenoiseParams(**{field: value})


def test_recipe_with_an_even_search_names_the_step_parameter():
    bad = {"steps": [{"op": "denoise", "params": {"strength": 2, "search": 8}}]}
    with pytest.raises(RecipeError, match=r"search must be an odd number.*use 7 or 9"):
        recipe_from_dict(bad, origin="my.toml")
