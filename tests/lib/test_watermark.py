"""What an export profile does to pixels: watermarks, resizing without enlarging, sRGB."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms

from retouch.lib.delivery.watermark import apply_profile, apply_watermark, resize, to_srgb
from retouch.lib.errors import RecipeError
from retouch.lib.image import Image
from retouch.lib.recipe import ExportProfile, Resize, Watermark


def _gray_card(w: int = 200, h: int = 120, dtype=np.uint8) -> Image:
    full = 65535 if dtype == np.uint16 else 255
    pixels = np.full((h, w, 3), full // 2, dtype=dtype)
    return Image(pixels=pixels)


def _diff(a: Image, b: Image) -> np.ndarray:
    return np.abs(a.pixels.astype(np.int32) - b.pixels.astype(np.int32)).max(axis=2)


def test_text_mark_sits_in_its_corner_and_nowhere_else():
    image = _gray_card()
    marked = apply_watermark(image, Watermark(text="PROOF", opacity=0.9, scale=0.3))
    changed = _diff(image, marked) > 10
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 100  # the text is really there
    assert xs.min() > 200 * 0.5 and ys.min() > 120 * 0.5  # bottom-right quarter only
    assert xs.max() < 200 - 3 and ys.max() < 120 - 3  # inside the margin
    assert image.pixels.max() == 127  # the input is untouched


def test_opacity_scales_the_change_and_zero_is_invisible():
    image = _gray_card()
    strong = _diff(image, apply_watermark(image, Watermark(text="X", opacity=1.0))).sum()
    weak = _diff(image, apply_watermark(image, Watermark(text="X", opacity=0.3))).sum()
    assert 0 < weak < strong * 0.5
    assert _diff(image, apply_watermark(image, Watermark(text="X", opacity=0.0))).sum() == 0


def test_tiling_covers_the_whole_image():
    image = _gray_card(300, 300)
    tiled = _diff(image, apply_watermark(image, Watermark(text="PROOF", tile=True, scale=0.2)))
    for qy in (0, 150):
        for qx in (0, 150):
            assert (tiled[qy : qy + 150, qx : qx + 150] > 5).sum() > 50, (qx, qy)


def test_image_mark_keeps_16_bit_and_honours_position(tmp_path):
    logo = np.zeros((20, 40, 4), np.uint8)
    logo[..., 0] = 255  # red, opaque in its middle only
    logo[5:15, 10:30, 3] = 255
    path = tmp_path / "logo.png"
    PILImage.fromarray(logo, "RGBA").save(path)
    image = _gray_card(400, 200, np.uint16)
    marked = apply_watermark(image, Watermark(image=str(path), position="top-left", scale=0.5))
    assert marked.pixels.dtype == np.uint16
    diff = _diff(image, marked)
    ys, xs = np.nonzero(diff > 1000)
    assert xs.max() < 200 and ys.max() < 100  # top-left
    y, x = np.unravel_index(np.argmax(diff), diff.shape)
    b, g, r = marked.pixels[y, x].astype(int)
    assert r > b + 5000 and r > g + 5000  # red, in BGR order


def test_unreadable_mark_image_names_the_file(tmp_path):
    bad = tmp_path / "logo.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(RecipeError, match="logo.png"):
        apply_watermark(_gray_card(), Watermark(image=str(bad)))


def test_a_watermark_needs_text_or_image_not_both():
    with pytest.raises(ValueError):
        Watermark()
    with pytest.raises(ValueError):
        Watermark(text="a", image="b.png")


@pytest.mark.parametrize(
    ("spec", "size", "expected"),
    [
        (Resize(max_side=100), (400, 200), (100, 50)),
        (Resize(max_side=1000), (400, 200), (400, 200)),  # never enlarged by default
        (Resize(max_side=800, upscale=True), (400, 200), (800, 400)),
        (Resize(width=100, height=100), (400, 200), (100, 100)),  # crop
        (Resize(width=100, height=100, mode="pad"), (400, 200), (100, 100)),
        (Resize(width=500, height=500), (400, 200), (500, 500)),  # padded, not enlarged
    ],
)
def test_resize_reaches_the_size_without_enlarging_unless_asked(spec, size, expected):
    w, h = size
    rng = np.random.default_rng(0)
    image = Image(pixels=rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    out = resize(image, spec)
    assert (out.width, out.height) == expected
    if spec.width == 500:  # the picture sits 1:1 in the middle of white padding
        assert np.array_equal(out.pixels[150:350, 50:450], image.pixels)
        assert (out.pixels[:150] == 255).all()


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _rgb_icc(primaries: list[tuple[float, float, float]]) -> bytes:
    """A minimal ICC v2 RGB display profile: matrix/TRC (gamma 2.2) with the given primaries."""

    def xyz(v):
        return b"XYZ \0\0\0\0" + b"".join(_s15(c) for c in v)

    desc_text = b"retouch test RGB\0"
    tags = [
        (b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(desc_text)) + desc_text
         + b"\0" * 8 + b"\0" * 3 + b"\0" * 67),
        (b"wtpt", xyz((0.9642, 1.0, 0.8249))),
        (b"rXYZ", xyz(primaries[0])),
        (b"gXYZ", xyz(primaries[1])),
        (b"bXYZ", xyz(primaries[2])),
        *((sig, b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0233) + b"\0\0")
          for sig in (b"rTRC", b"gTRC", b"bTRC")),
    ]  # fmt: skip
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body + b"\0" * (-len(body) % 4)
    size = offset + len(data)
    header = (
        struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
        + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0)
        + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 48
    )  # fmt: skip
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


SRGB_D50 = [(0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)]


def test_to_srgb_converts_through_the_embedded_profile():
    swapped = _rgb_icc([SRGB_D50[1], SRGB_D50[0], SRGB_D50[2]])  # red and green exchanged
    ImageCms.ImageCmsProfile(io.BytesIO(swapped))  # a valid profile
    pixels = np.zeros((4, 4, 3), np.uint8)
    pixels[..., 2] = 255  # pure "red" (BGR) in the swapped space is sRGB green
    image = Image(pixels=pixels, info={"icc_profile": swapped, "exif": b"Exif\0\0x"})
    out = to_srgb(image)
    b, g, r = out.pixels[0, 0].astype(int)
    assert g > 200 and r < 60 and b < 60, (b, g, r)
    desc = ImageCms.getProfileDescription(
        ImageCms.ImageCmsProfile(io.BytesIO(out.info["icc_profile"]))
    )
    assert "srgb" in desc.lower()
    assert out.info["exif"] == b"Exif\0\0x"
    assert np.array_equal(image.pixels[..., 2], np.full((4, 4), 255))  # input untouched

    same = _rgb_icc(SRGB_D50)
    near = to_srgb(Image(pixels=pixels, info={"icc_profile": same}))
    assert int(near.pixels[0, 0, 2]) > 240  # an sRGB-like profile leaves red red
    untagged = to_srgb(Image(pixels=pixels))
    assert np.array_equal(untagged.pixels, pixels) and "icc_profile" in untagged.info


def test_profile_order_resize_then_mark():
    profile = ExportProfile(
        resize=Resize(max_side=100), watermark=Watermark(text="P", scale=0.5, opacity=1.0)
    )
    out = apply_profile(_gray_card(400, 200), profile)
    assert (out.width, out.height) == (100, 50)
    ys, xs = np.nonzero(_diff(_gray_card(100, 50), out) > 10)
    assert xs.max() - xs.min() > 20  # half of the delivered width, not of the original
