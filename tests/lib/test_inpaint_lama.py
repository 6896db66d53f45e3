"""inpaint with LaMa: the files big-lama comes in, the strategies, the mask rules.

The weights are random but full size (big-lama's architecture, tests/lama_models.py), and
they are loaded through the real code paths (registry, model dir, LaMa family, pool).
Fills are compared with spandrel's own call within 2/255 (float convolutions differ across
CPUs); pixels outside the mask must be exactly the input's.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from pydantic import ValidationError

from retouch.lib.errors import OperationError
from retouch.lib.image import Image
from retouch.lib.masks import BesideMasks, MaskSource
from retouch.lib.models.pool import ModelPool
from retouch.lib.ops.base import OpContext
from retouch.lib.ops.inpaint import Inpaint, InpaintParams
from tests import lama_models

TOL = 2  # /255: the fill may differ this much from spandrel's (CPU float differences)
POOL = ModelPool()  # one load of the random big-lama for the module


@pytest.fixture
def big_lama(tmp_path_factory, monkeypatch, retouch_home):
    """The random big-lama in a model dir shared by this module's tests (one pool load)."""
    from retouch.lib.settings import reload_settings

    folder = tmp_path_factory.getbasetemp() / "lama-model-dir"
    if not (folder / "big-lama.safetensors").is_file():
        lama_models.install_big_lama(folder)
    monkeypatch.setenv("RETOUCH_MODEL_DIR", str(folder))
    reload_settings()
    return folder


def scene(h: int = 80, w: int = 96) -> np.ndarray:
    """HxWx3 BGR uint8: gradients, texture and a red block (the "object")."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([40 + xx, 60 + yy * 1.5, 180 - xx], axis=2) + rng.normal(0, 12, (h, w, 3))
    img[20:40, 30:60] = (0, 0, 255)
    return np.clip(img, 0, 255).astype(np.uint8)


def block_mask(h: int = 80, w: int = 96, box=(18, 42, 28, 62)) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = 255
    return m


def reference(bgr: np.ndarray, mask: np.ndarray, state=None) -> np.ndarray:
    """spandrel's own call (descriptor, whole image), as BGR float 0..255."""
    top = 65535.0 if bgr.dtype == np.uint16 else 255.0
    rgb = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1], np.float32) / top)
    m = torch.from_numpy((mask > 0).astype(np.float32))[None, None]
    with torch.inference_mode():
        out = lama_models.descriptor(state)(rgb.permute(2, 0, 1)[None], m)
    return out[0].permute(1, 2, 0).numpy()[:, :, ::-1] * 255.0


def lama(image: Image, mask_lookup=None, name="photo.png", **params) -> Image:
    ctx = OpContext(name=name, pool=POOL, masks=mask_lookup)
    return Inpaint()(image, InpaintParams(method="lama", **params), ctx)


def assert_fill(out: np.ndarray, src: np.ndarray, mask: np.ndarray, ref: np.ndarray) -> None:
    sel = mask > 0
    assert np.array_equal(out[~sel], src[~sel])  # exactly the input outside the mask
    scale = 257.0 if out.dtype == np.uint16 else 1.0
    diff = np.abs(out[sel].astype(np.float64) / scale - ref[sel])
    assert diff.max() <= TOL, diff.max()
    assert np.abs(out[sel].astype(np.float64) / scale - src[sel] / scale).mean() > 20  # changed


# -- the files big-lama comes in -----------------------------------------------------------


SAVERS = {
    "torchscript": ("big-lama.pt", lama_models.save_torchscript),
    "lightning": ("best.ckpt", lama_models.save_lightning),
    "state-dict": ("generator.pth", lama_models.save_bare),
}


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
@pytest.mark.parametrize("kind", list(SAVERS))
@pytest.mark.parametrize("how", ["shipped", "named"])
def test_big_lama_imports_from_each_file_it_comes_in_and_runs(tmp_path, kind, how):
    from retouch.lib.models import fetch
    from retouch.lib.models.imported import import_into_shipped, import_model
    from retouch.lib.models.specs import get_spec, names
    from retouch.lib.models.weightfile import read_state_dict

    filename, save = SAVERS[kind]
    file = save(tmp_path / filename)
    assert any(k.endswith("bn_l.running_mean") for k in read_state_dict(file))
    if how == "shipped":
        stored = import_into_shipped(get_spec("big-lama"), file)
        assert stored.name == "big-lama.safetensors"
        assert fetch.resolve("big-lama") == stored
        model = "big-lama"
    else:
        spec = import_model(file, name="my-lama")
        assert spec.kind == "lama" and spec.purpose == "inpaint"
        assert "my-lama" in names(purpose="inpaint")
        model = "my-lama"
    px, mask = scene(), block_mask()
    out = lama(Image(px), lambda _n: mask, model=model, strategy="original", dilate=0)
    assert_fill(out.pixels, px, mask, reference(px, mask))


def test_an_upscaler_as_inpaint_model_is_refused_with_the_choices():
    with pytest.raises(ValidationError) as err:
        InpaintParams(method="lama", model="realesrgan-x4plus")
    text = str(err.value)
    assert "'realesrgan-x4plus' is an upscaling model, not an inpainting model" in text
    assert "big-lama" in text


def test_schema_lists_the_inpaint_models_as_choices():
    schema = InpaintParams.model_json_schema()
    assert schema["properties"]["model"]["enum"] == ["big-lama"]


def test_models_needed_only_for_lama():
    assert Inpaint().models(InpaintParams(method="lama")) == ["big-lama"]
    assert Inpaint().models(InpaintParams(method="telea")) == []


# -- strategies --------------------------------------------------------------------------


def test_original_equals_spandrel_and_keeps_every_other_pixel(big_lama):
    px, mask = scene(), block_mask()
    out = lama(Image(px), lambda _n: mask, strategy="original", dilate=0)
    assert out.pixels.dtype == np.uint8 and out.pixels.shape == px.shape
    assert_fill(out.pixels, px, mask, reference(px, mask))


def test_size_not_a_multiple_of_8_is_padded_and_cropped_back(big_lama):
    px = scene(77, 101)
    mask = block_mask(77, 101, (30, 50, 40, 70))
    out = lama(Image(px), lambda _n: mask, strategy="original", dilate=0)
    assert out.pixels.shape == (77, 101, 3)
    assert np.array_equal(out.pixels[mask == 0], px[mask == 0])


def test_crop_fills_each_region_as_spandrel_fills_its_crop(big_lama):
    """Two regions far apart, margin 16: each crop is the region's box grown by 16 px (and
    to a multiple of 8), and its fill is spandrel's fill of that crop."""
    h, w = 64, 256
    px = scene(h, w)
    mask = np.zeros((h, w), np.uint8)
    mask[20:36, 20:44] = 255  # box 4..52 x 4..60 -> 48x56, multiples of 8 already
    mask[24:40, 200:216] = 255  # box 184..232 x 8..56 -> 48x48
    ctx = OpContext(name="p.png", pool=POOL, masks=lambda _n: mask)
    params = InpaintParams(method="lama", strategy="crop", crop_margin=16, dilate=0)
    out = Inpaint()(Image(px), params, ctx).pixels
    assert ctx.counters["forward_passes"] == 2
    for y0, y1, x0, x1 in ((4, 52, 4, 60), (8, 56, 184, 232)):
        crop, m = px[y0:y1, x0:x1], mask[y0:y1, x0:x1]
        ref = reference(crop, m)
        assert_fill(out[y0:y1, x0:x1], crop, m, ref)
    assert np.array_equal(out[mask == 0], px[mask == 0])


def test_crop_merges_overlapping_boxes_and_batches_equal_crops():
    from retouch.lib.models.inpainting import batches, plan

    mask = np.zeros((200, 300), bool)
    mask[50:60, 50:60] = True
    mask[55:65, 70:80] = True  # its box overlaps the first: one crop
    mask[150:160, 250:260] = True
    boxes, labels = plan(mask, "crop", margin=20, resize_limit=1280)
    assert labels is not None and len(boxes) == 2
    for box in boxes:
        assert box.w % 8 == 0 and box.h % 8 == 0
        assert 0 <= box.x0 < box.x1 <= 300 and 0 <= box.y0 < box.y1 <= 200
    assert sorted(len(b.labels) for b in boxes) == [1, 2]
    # Near the border the box slides inside the image and keeps its size.
    edge = np.zeros((200, 300), bool)
    edge[0:10, 0:10] = True
    (box,), _ = plan(edge, "crop", margin=20, resize_limit=1280)
    assert (box.x0, box.y0, box.w, box.h) == (0, 0, 56, 56)
    # Equal sizes share a pass; different sizes on CPU do not (no growing there).
    two = np.zeros((200, 300), bool)
    two[50:60, 50:60] = True
    two[150:160, 200:210] = True
    boxes, _ = plan(two, "crop", margin=20, resize_limit=1280)
    assert [len(g) for g in batches(boxes, 300, 200, grow=False)] == [2]
    three = two.copy()
    three[100:112, 120:150] = True
    boxes, _ = plan(three, "crop", margin=20, resize_limit=1280)
    assert sorted(len(g) for g in batches(boxes, 300, 200, grow=False)) == [1, 2]
    assert [len(g) for g in batches(boxes, 300, 200, grow=True)] == [3]


def test_a_crop_larger_than_resize_limit_and_resize_strategy_run_smaller(big_lama):
    px, mask = scene(), block_mask()
    mask[5:75, 5:90] = 255  # one region almost the size of the image
    for strategy in ("crop", "resize"):
        ctx = OpContext(name="p.png", pool=POOL, masks=lambda _n: mask)
        params = InpaintParams(
            method="lama", strategy=strategy, resize_limit=64, crop_margin=8, dilate=0
        )
        out = Inpaint()(Image(px), params, ctx).pixels
        assert out.shape == px.shape
        assert np.array_equal(out[mask == 0], px[mask == 0])
        assert np.abs(out[mask > 0].astype(int) - px[mask > 0]).mean() > 20


def test_sixteen_bit_gray_and_alpha_are_kept(big_lama):
    px8, mask = scene(), block_mask()
    px16 = px8.astype(np.uint16) * 257 + 5  # +5: not an exact 8-bit value
    alpha = np.full(px8.shape[:2], 40000, np.uint16)
    out = lama(Image(px16, alpha=alpha), lambda _n: mask, strategy="original", dilate=0)
    assert out.pixels.dtype == np.uint16
    assert np.array_equal(out.alpha, alpha)
    assert_fill(out.pixels, px16, mask, reference(px16, mask))

    gray = np.repeat(px8.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    out = lama(Image(gray, is_gray=True), lambda _n: mask, dilate=0)
    assert out.is_gray
    assert np.array_equal(out.pixels[..., 0], out.pixels[..., 1])
    assert np.array_equal(out.pixels[..., 1], out.pixels[..., 2])
    assert np.array_equal(out.pixels[mask == 0], gray[mask == 0])


def test_feather_blends_inside_the_mask_only(big_lama):
    px, mask = scene(), block_mask()
    hard = lama(Image(px), lambda _n: mask, dilate=0).pixels
    soft = lama(Image(px), lambda _n: mask, dilate=0, feather=4).pixels
    assert np.array_equal(soft[mask == 0], px[mask == 0])
    edge, core = (18, 40), (30, 45)  # first masked row; a pixel deep inside
    assert np.array_equal(soft[core], hard[core])
    between = np.abs(soft[edge].astype(int) - px[edge]) <= np.abs(hard[edge].astype(int) - px[edge])
    assert between.all() and not np.array_equal(soft[edge], hard[edge])


# -- mask rules --------------------------------------------------------------------------


def _write_png(path, array, mode=None):
    PILImage.fromarray(array, mode=mode).save(path) if mode else cv2.imwrite(str(path), array)
    return path


def _filled(out: Image, px: np.ndarray) -> np.ndarray:
    return np.any(out.pixels != px, axis=2)


def test_mask_of_another_size_is_resized_nearest(big_lama):
    px = scene()
    small = np.zeros((40, 48), np.uint8)
    small[10:20, 15:30] = 255  # covers rows 20..39, columns 30..59 at full size
    out = lama(Image(px), lambda _n: small, dilate=0)
    changed = _filled(out, px)
    assert not changed[:20].any() and not changed[40:].any()
    assert not changed[:, :30].any() and not changed[:, 60:].any()
    assert changed[20:40, 30:60].mean() > 0.9


@pytest.mark.parametrize("kind", ["8bit", "16bit", "palette", "rgba-alpha", "rgb-white"])
def test_mask_file_kinds_all_mark_the_same_area(tmp_path, big_lama, kind):
    px, mask = scene(), block_mask()
    folder = tmp_path / "masks"
    folder.mkdir()
    path = folder / "photo.png"
    if kind == "8bit":
        _write_png(path, mask)
    elif kind == "16bit":
        _write_png(path, mask.astype(np.uint16) * 257)
    elif kind == "palette":
        PILImage.fromarray(mask).convert("P").save(path)
        assert PILImage.open(path).mode == "P"
    elif kind == "rgba-alpha":  # black colour, painted alpha: the alpha is the mask
        rgba = np.zeros((*mask.shape, 4), np.uint8)
        rgba[..., 3] = mask
        _write_png(path, rgba, "RGBA")
    else:  # opaque RGBA: its colour is the mask
        rgba = np.zeros((*mask.shape, 4), np.uint8)
        rgba[..., 3] = 255
        rgba[mask > 0, :3] = 255
        _write_png(path, rgba, "RGBA")
    source = MaskSource(str(folder), 10**8)
    assert np.array_equal(source("photo.png") > 127, mask > 0)
    out = lama(Image(px), source, dilate=0)
    assert np.array_equal(_filled(out, px) & (mask == 0), np.zeros_like(mask, bool))


def test_all_black_mask_fails_with_missing_mask_error_and_skips_otherwise(big_lama):
    px = scene()
    black = np.zeros((80, 96), np.uint8)
    with pytest.raises(OperationError, match="photo.png: its inpaint mask .* is empty"):
        lama(Image(px), lambda _n: black, missing_mask="error")
    out = lama(Image(px), lambda _n: black, missing_mask="skip")
    assert np.array_equal(out.pixels, px)


def test_missing_mask_fails_naming_the_image(big_lama):
    with pytest.raises(OperationError, match="shoot/photo.png: no inpaint mask for stem 'photo'"):
        lama(Image(scene()), lambda _n: None, name="shoot/photo.png", missing_mask="error")


def test_all_white_mask_replaces_the_whole_image(big_lama):
    """Documented: nothing is left as context, every pixel is the model's."""
    px = scene()
    white = np.full((80, 96), 255, np.uint8)
    out = lama(Image(px), lambda _n: white, dilate=0)
    assert out.pixels.shape == px.shape
    assert _filled(out, px).mean() > 0.9


def test_one_mask_file_is_the_mask_of_every_image(tmp_path):
    path = _write_png(tmp_path / "logo.png", block_mask())
    source = MaskSource(str(path), 10**8)
    for name in ("a.jpg", "sub/b.png", "zzz.tif"):
        assert source.uri_for(name) == str(path)
        assert np.array_equal(source(name), block_mask())


def test_mask_beside_the_image_is_found(tmp_path):
    (tmp_path / "beach.jpg").write_bytes(b"")
    _write_png(tmp_path / "beach_mask.png", block_mask())
    _write_png(tmp_path / "beach-other.png", block_mask())
    beside = BesideMasks(10**8)
    assert beside.uri_for(str(tmp_path / "beach.jpg")) == str(tmp_path / "beach_mask.png")
    assert beside.uri_for(str(tmp_path / "beach-other.png")) is None
    assert np.array_equal(beside(str(tmp_path / "beach.jpg")), block_mask())


def test_an_unreadable_mask_names_the_file(tmp_path, big_lama):
    folder = tmp_path / "masks"
    folder.mkdir()
    (folder / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    source = MaskSource(str(folder), 10**8)
    with pytest.raises(OperationError, match=r"inpaint mask .*photo\.png is unreadable"):
        lama(Image(scene()), source)


def test_beside_masks_are_not_sources(tmp_path):
    from retouch.lib.masks import masks_beside

    names = ["a.jpg", "a_mask.png", "b_mask.png", "sub/c.png", "sub/c_mask_v2.PNG", "d_mask.jpg"]
    assert masks_beside(names) == {"a_mask.png": "a.jpg", "sub/c_mask_v2.PNG": "sub/c.png"}
