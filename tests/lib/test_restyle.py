"""restyle, method generator: AnimeGANv2 generators with random weights, loaded through the
model layer (a released-style state dict in the model dir, or `retouch models import`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retouch.lib.errors import ModelError, RecipeError
from retouch.lib.image import Image
from retouch.lib.ops.base import OpContext
from retouch.lib.ops.registry import registry
from tests import animegan_models

TOL = 1  # levels of 255: the reference truncates to uint8, the op rounds


def _model_dir():
    from retouch.lib.settings import get_settings

    return get_settings().resolved_model_dir()


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([40 + xx * 2, 200 - yy, 90 + xx - yy], axis=2) + rng.normal(0, 10, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _restyle(pixels: np.ndarray, **params) -> Image:
    op = registry().get("restyle")
    return op(Image(pixels), op.Params(**params), OpContext())


def test_the_released_key_layout_is_the_generators():
    sd = animegan_models.state()
    assert len(sd) == 77
    assert sum(v.numel() for v in sd.values()) == 2_143_552
    assert sd["block_a.0.1.weight"].shape == (32, 3, 7, 7)  # 7x7 stem, no bias
    assert sd["block_c.1.layers.1.1.weight"].shape == (256, 1, 3, 3)  # depthwise
    assert sd["block_c.1.layers.1.1.bias"].shape == (256,)
    assert sd["block_c.1.layers.3.weight"].shape == (256,)  # the block's last group norm
    assert sd["out_layer.0.weight"].shape == (3, 32, 1, 1)


@pytest.mark.parametrize(
    "name, align", [("animeganv2-paprika", False), ("animeganv2-face-paint-v2", True)]
)
def test_a_shipped_name_runs_as_the_ports_own_loop(name, align):
    animegan_models.install(_model_dir(), name)
    rgb = _photo(64, 96)
    out = _restyle(np.ascontiguousarray(rgb[:, :, ::-1]), model=name).pixels[:, :, ::-1]
    ref = animegan_models.reference_loop(rgb, align_corners=align)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= TOL
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() > 10  # it was re-drawn


def test_any_size_bit_depth_gray_and_alpha_are_kept():
    animegan_models.install(_model_dir())
    # odd sides: padded to the generator's multiple of 4 and cropped back
    odd = _restyle(_photo(37, 53))
    assert odd.pixels.shape == (37, 53, 3) and odd.pixels.dtype == np.uint8
    tiny = _restyle(_photo(5, 7))  # below the minimum: mirrored up, cropped back
    assert tiny.pixels.shape == (5, 7, 3)
    deep = (_photo(40, 48).astype(np.uint16) * 257) + 3
    out16 = _restyle(deep).pixels
    assert out16.dtype == np.uint16 and out16.shape == deep.shape
    assert np.any(out16 % 257 != 0)  # 16-bit precision, not 8-bit values scaled up
    op = registry().get("restyle")
    gray = Image(np.repeat(_photo(32, 32)[:, :, :1], 3, axis=2), is_gray=True)
    g = op(gray, op.Params(), OpContext())
    assert g.is_gray and np.array_equal(g.pixels[..., 0], g.pixels[..., 2])
    alpha = np.tile(np.arange(48, dtype=np.uint8), (40, 1))
    a = op(Image(_photo(40, 48), alpha=alpha), op.Params(), OpContext())
    assert np.array_equal(a.alpha, alpha)


def test_work_side_draws_smaller_and_gives_the_images_size_back():
    animegan_models.install(_model_dir())
    px = _photo(120, 200)
    full = _restyle(px).pixels
    small = _restyle(px, work_side=100).pixels
    assert small.shape == full.shape == px.shape
    assert not np.array_equal(small, full)


def test_an_imported_file_under_any_name_is_detected_and_runs(tmp_path):
    from retouch.lib.models.imported import import_model
    from retouch.lib.models.specs import names

    file = animegan_models.save(tmp_path / "my_style_generator.pth", seed=3)
    spec = import_model(file, "my-style")
    assert (spec.kind, spec.arch, spec.purpose, spec.scale) == (
        "animegan",
        "AnimeGANv2",
        "restyle",
        1,
    )
    assert "my-style" in names(purpose="restyle")
    rgb = _photo(32, 48)
    out = _restyle(np.ascontiguousarray(rgb[:, :, ::-1]), model="my-style").pixels[:, :, ::-1]
    ref = animegan_models.reference_loop(rgb, seed=3, align_corners=True)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= TOL


def test_an_incomplete_generator_file_is_refused_naming_it(tmp_path):
    from retouch.lib.models.imported import import_model

    sd = animegan_models.state()
    del sd["block_d.1.2.bias"]
    bad = tmp_path / "broken.pt"
    torch.save(sd, bad)
    with pytest.raises(ModelError, match="broken.pt.*not a complete AnimeGANv2 generator"):
        import_model(bad, "broken")


def test_params_refuse_what_the_method_does_not_use_and_other_purposes():
    op = registry().get("restyle")
    with pytest.raises(ValueError, match="prompt only apply to method=diffusion"):
        op.Params(prompt="an oil painting")
    with pytest.raises(ValueError, match="model and tile only apply to method=generator"):
        op.Params(method="diffusion", model="animeganv2-paprika")
    with pytest.raises(ValueError, match="re-drawing"):
        op.Params(model="realesrgan-x4plus")  # an upscaler is not a style model


def test_without_weights_the_anime_preset_is_refused_before_a_run_saying_how():
    from retouch.lib.phases.keys import weights_ids
    from retouch.lib.recipe import load_preset

    with pytest.raises(ModelError) as err:
        weights_ids(load_preset("anime"))
    text = str(err.value)
    assert "paprika.pt" in text and "retouch models pull animeganv2-paprika" in text


def test_style_variants_name_presets_and_models_and_refuse_others():
    from retouch.lib.quality.preview import style_variants

    cols = style_variants("anime, animeganv2-celeba-distill,quick")
    assert [c.label for c in cols] == ["anime", "animeganv2-celeba-distill", "quick"]
    assert cols[1].recipe.steps[0].parsed().model == "animeganv2-celeba-distill"
    with pytest.raises(RecipeError, match="neither a preset nor a re-drawing model"):
        style_variants("anime,watercolour")


# --------------------------------------------------------------------------- diffusion


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    pytest.importorskip("diffusers")
    from tests import diffusion_models

    return diffusion_models.make_tiny_pipeline_folder(tmp_path_factory.mktemp("sd") / "tiny")


def _sd_params(checkpoint, **extra):
    op = registry().get("restyle")
    return op.Params(method="diffusion", checkpoint=str(checkpoint), steps=4, strength=0.5, **extra)


def test_diffusion_seed_comes_from_the_picture_or_from_the_clip(tiny_sd, monkeypatch):
    """Two pictures get two seeds; the frames of one clip (clip_id set, as the video path
    sets it) share the clip's seed, so a clip does not flicker from seed changes."""
    from retouch.lib.models import diffusion

    seen: list[int] = []
    real = diffusion.seed_for

    def spy(digest, params_json, seed):
        seen.append(real(digest, params_json, seed))
        return seen[-1]

    monkeypatch.setattr(diffusion, "seed_for", spy)
    op, params = registry().get("restyle"), _sd_params(tiny_sd)
    a, b = Image(_photo(24, 32, seed=1)), Image(_photo(24, 32, seed=2))
    out_a = op(a, params, OpContext())
    op(b, params, OpContext())
    assert seen[0] != seen[1]
    op(a, params, OpContext(clip_id="clip-sha"))
    op(b, params, OpContext(clip_id="clip-sha"))
    assert seen[2] == seen[3]
    again = op(a, params, OpContext())  # same picture, same parameters: same bytes
    assert seen[4] == seen[0] and np.array_equal(again.pixels, out_a.pixels)
    other = op(a, _sd_params(tiny_sd, seed=7), OpContext())
    assert seen[5] != seen[0] and not np.array_equal(other.pixels, out_a.pixels)


def test_diffusion_keeps_size_depth_gray_and_alpha(tiny_sd):
    op, params = registry().get("restyle"), _sd_params(tiny_sd)
    deep = _photo(21, 30).astype(np.uint16) * 257
    alpha = np.full((21, 30), 40000, np.uint16)
    out = op(Image(deep, alpha=alpha), params, OpContext())
    assert out.pixels.shape == (21, 30, 3) and out.pixels.dtype == np.uint16
    assert np.array_equal(out.alpha, alpha)
    gray = op(
        Image(np.repeat(_photo(16, 16)[:, :, :1], 3, axis=2), is_gray=True), params, OpContext()
    )
    assert gray.is_gray and np.array_equal(gray.pixels[..., 0], gray.pixels[..., 1])


def test_diffusion_refuses_a_picture_too_large_to_run_whole_saying_how(tiny_sd):
    from retouch.lib.errors import OperationError

    op = registry().get("restyle")
    huge = np.zeros((2100, 2100, 3), np.uint8)
    with pytest.raises(OperationError, match="restyle.work_side"):
        op(Image(huge), _sd_params(tiny_sd), OpContext())


def test_a_diffusion_recipe_runs_on_the_device_and_a_generator_one_too():
    from retouch.lib.recipe import load_preset

    assert load_preset("painting-sd").uses_models() and load_preset("anime").uses_models()
    assert not load_preset("web-ready").uses_models()


# --------------------------------------------------------------------------- controlnet


@pytest.fixture(scope="module")
def tiny_cn(tiny_sd):
    from tests import diffusion_models

    return diffusion_models.make_tiny_controlnet_folder(tiny_sd.parent / "controlnet")


def test_diffusion_with_a_controlnet_keeps_size_and_gives_the_same_bytes_again(tiny_sd, tiny_cn):
    op = registry().get("restyle")
    px = _photo(24, 32, seed=4)
    px[:, 16:] //= 3  # a vertical edge for the canny condition
    params = _sd_params(tiny_sd, controlnet=str(tiny_cn), control_scale=1.5)
    assert params.control == "canny" and params.uses_controlnet
    out = op(Image(px), params, OpContext())
    assert out.pixels.shape == px.shape and out.pixels.dtype == np.uint8
    assert np.array_equal(op(Image(px), params, OpContext()).pixels, out.pixels)
    plain = op(Image(px), _sd_params(tiny_sd), OpContext()).pixels
    assert not np.array_equal(out.pixels, plain)
    deep = op(Image(px.astype(np.uint16) * 257), params, OpContext()).pixels
    assert deep.dtype == np.uint16 and deep.shape == px.shape


def test_the_controlnet_is_checked_before_a_run_naming_the_path(tiny_sd, tiny_cn, tmp_path):
    from retouch.lib.errors import ModelNotAvailableError
    from tests import diffusion_models

    op = registry().get("restyle")
    op.check(_sd_params(tiny_sd, controlnet=str(tiny_cn)))
    missing = tmp_path / "canny-controlnet"
    not_cn = diffusion_models.make_not_diffusion_file(tmp_path / "upscaler.safetensors")
    xl = diffusion_models.make_tiny_controlnet_file(tmp_path / "xl.safetensors", sdxl=True)
    cases = [
        (missing, ModelNotAvailableError, "does not exist"),
        (tiny_sd / "unet", ModelError, "not a ControlNetModel"),  # a UNet, not a ControlNet
        (not_cn, ModelError, "is not a ControlNet"),
        (xl, ModelError, "ControlNet for SDXL"),  # does not fit the SD 1.x checkpoint
    ]
    for path, error, what in cases:
        with pytest.raises(error, match=what) as info:
            op.check(_sd_params(tiny_sd, controlnet=str(path)))
        assert str(path) in str(info.value)
    # control=none leaves the controlnet unused: neither checked nor loaded
    off = _sd_params(tiny_sd, controlnet=str(missing), control="none")
    op.check(off)
    assert not off.uses_controlnet


def test_the_controlnet_is_part_of_the_result_key(tiny_sd, tiny_cn, tmp_path):
    import shutil

    op = registry().get("restyle")
    plain = op.key_inputs(_sd_params(tiny_sd), OpContext())
    with_cn = op.key_inputs(_sd_params(tiny_sd, controlnet=str(tiny_cn)), OpContext())
    assert set(plain) == {"checkpoint"} and with_cn["checkpoint"] == plain["checkpoint"]
    other = shutil.copytree(tiny_cn, tmp_path / "other")
    weights = other / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    changed = op.key_inputs(_sd_params(tiny_sd, controlnet=str(other)), OpContext())
    assert len({with_cn["controlnet"], changed["controlnet"]}) == 2


def test_controlnet_params_are_refused_where_they_do_nothing():
    op = registry().get("restyle")
    with pytest.raises(ValueError, match="controlnet only apply to method=diffusion"):
        op.Params(controlnet="/models/control_canny")
    with pytest.raises(ValueError, match="control_scale only apply to method=diffusion"):
        op.Params(control_scale=0.5)
    with pytest.raises(ValueError, match="control, canny_low only apply with a ControlNet"):
        op.Params(method="diffusion", control="canny", canny_low=50)
    with pytest.raises(ValueError, match="restyle.controlnet=PATH"):
        op.Params(method="diffusion", control_scale=0.5)
    op.Params(method="diffusion", control="none")  # off without a controlnet: nothing to refuse
    with pytest.raises(ValueError, match="canny_low \\(150\\) must not be above canny_high"):
        op.Params(method="diffusion", controlnet="/cn", canny_low=150, canny_high=120)
    with pytest.raises(ValueError, match="'none' or 'canny'"):  # lineart: not supported
        op.Params(method="diffusion", controlnet="/cn", control="lineart")
