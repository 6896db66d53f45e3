"""Decode/encode fidelity of retouch.lib.imageio: orientation, colour models, 16 bits, gray
and alpha, on tiny images built in the tests."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms

from retouch.lib.image import Image
from retouch.lib.imageio import (
    decode,
    encode,
    probe,
)
from tests.lib.imageio_samples import (
    LIMIT,
    block_means,
    exif_bytes,
    raw_png,
    reason_of,
    save,
    sixteen_bit,
    upright_rgb,
)

# --------------------------------------------------------------------------- orientation

# How a camera stores the upright picture for each EXIF orientation (the inverse of the
# transform a viewer applies to show it).
STORE = {
    1: None,
    2: PILImage.Transpose.FLIP_LEFT_RIGHT,
    3: PILImage.Transpose.ROTATE_180,
    4: PILImage.Transpose.FLIP_TOP_BOTTOM,
    5: PILImage.Transpose.TRANSPOSE,
    6: PILImage.Transpose.ROTATE_90,  # stored turned left; a viewer turns it right
    7: PILImage.Transpose.TRANSVERSE,
    8: PILImage.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_and_reset(orientation: int, fmt: str) -> None:
    upright = upright_rgb()
    stored = PILImage.fromarray(upright)
    if STORE[orientation] is not None:
        stored = stored.transpose(STORE[orientation])
    data = save(stored, fmt, exif=exif_bytes(orientation=orientation, make="Cam"), quality=95)

    img = decode(data, "in/o.img", pixel_limit=LIMIT)

    assert img.pixels.shape == (32, 48, 3)
    assert img.pixels.flags["C_CONTIGUOUS"]
    expected_bgr = upright[..., ::-1]
    if fmt == "PNG":
        assert np.array_equal(img.pixels, expected_bgr)
    else:
        assert np.abs(block_means(img.pixels) - block_means(expected_bgr)).max() < 6
    carried = PILImage.Exif()
    carried.load(img.info["exif"])
    assert carried[0x0112] == 1
    assert carried[0x010F] == "Cam"
    info = probe(data, "in/o.img", pixel_limit=LIMIT)
    assert (info.width, info.height) == (48, 32)


def test_tiff_orientation_is_applied_once_at_8_and_16_bits() -> None:
    tifffile = pytest.importorskip("tifffile")
    upright = upright_rgb()
    stored = np.rot90(upright, 1)  # orientation 6: stored turned left
    for dtype, scale in ((np.uint8, 1), (np.uint16, 257)):
        buf = io.BytesIO()
        arr = stored.astype(dtype) * scale
        tifffile.imwrite(buf, arr, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
        img = decode(buf.getvalue(), "in/o.tif", pixel_limit=LIMIT)
        assert img.pixels.dtype == dtype
        assert np.array_equal(img.pixels, upright[..., ::-1].astype(dtype) * scale)
        info = probe(buf.getvalue(), "in/o.tif", pixel_limit=LIMIT)
        assert (info.width, info.height) == (48, 32)


# --------------------------------------------------------------------------- colour models


def test_cmyk_jpeg_comes_back_as_the_right_rgb() -> None:
    upright = upright_rgb()
    data = save(PILImage.fromarray(upright).convert("CMYK"), "JPEG", quality=95)
    assert PILImage.open(io.BytesIO(data)).mode == "CMYK"

    img = decode(data, "in/cmyk.jpg", pixel_limit=LIMIT)

    assert img.pixels.dtype == np.uint8 and not img.is_gray and img.alpha is None
    assert np.abs(block_means(img.pixels) - block_means(upright[..., ::-1])).max() < 8


def s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def black_ink_only_profile() -> bytes:
    """An ICC v2 CMYK profile of a printer that only prints its K ink (C, M, Y ignored).

    Built by hand (no profile files here): header, desc, wtpt, cprt and an 8-bit A2B0
    lookup table to Lab with 2 grid points per ink; K=0 gives white, K=100% black.
    """
    text = b"retouch K-only test printer\x00"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(78)
    wtpt = b"XYZ " + bytes(4) + s15(0.9642) + s15(1.0) + s15(0.8249)
    cprt = b"text" + bytes(4) + b"no copyright\x00"
    ramp = bytes(range(256))
    grid = bytes([255, 128, 128, 0, 128, 128]) * 8  # K varies fastest: white, black
    identity = b"".join(s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    a2b0 = b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + identity + ramp * 4 + grid + ramp * 3
    tags = [(b"desc", desc), (b"wtpt", wtpt), (b"cprt", cprt), (b"A2B0", a2b0)]
    offset = 128 + 4 + 12 * len(tags)
    table, blobs = b"", b""
    for sig, blob in tags:
        blob += bytes(-len(blob) % 4)
        table += sig + struct.pack(">II", offset + len(blobs), len(blob))
        blobs += blob
    header = (
        struct.pack(">I", offset + len(blobs))
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"prtrCMYKLab "
        + bytes(12)
        + b"acsp"
        + bytes(28)
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
    )
    return header + bytes(128 - len(header)) + struct.pack(">I", len(tags)) + table + blobs


def test_cmyk_jpeg_is_converted_through_its_icc_profile() -> None:
    cmyk = PILImage.new("CMYK", (16, 8), (255, 0, 0, 0))  # pure cyan ink, no black
    cmyk.paste((0, 0, 0, 255), (8, 0, 16, 8))  # pure black ink
    data = save(cmyk, "JPEG", quality=100, icc_profile=black_ink_only_profile())

    img = decode(data, "in/print.jpg", pixel_limit=LIMIT)

    # Without the profile cyan ink would come out cyan (255, 255, 0 in BGR); this printer
    # ignores it, so the page stays white.
    assert np.abs(img.pixels[4, 2].astype(int) - 255).max() <= 4
    assert img.pixels[4, 12].max() <= 4
    assert "icc_profile" not in img.info  # the pixels are sRGB now


def test_cmyk_jpeg_with_a_mismatched_profile_still_decodes() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    upright = upright_rgb()
    cmyk = PILImage.fromarray(upright).convert("CMYK")
    data = save(cmyk, "JPEG", quality=95, icc_profile=srgb)

    img = decode(data, "in/cmyk.jpg", pixel_limit=LIMIT)

    assert np.abs(block_means(img.pixels) - block_means(upright[..., ::-1])).max() < 8


def test_progressive_jpeg_decodes_and_a_cut_one_is_rejected() -> None:
    upright = upright_rgb()
    data = save(PILImage.fromarray(upright), "JPEG", quality=95, progressive=True)
    img = decode(data, "in/p.jpg", pixel_limit=LIMIT)
    assert np.abs(block_means(img.pixels) - block_means(upright[..., ::-1])).max() < 6

    reason = reason_of(data[: len(data) * 2 // 3], "in/p.jpg")
    assert reason.startswith("truncated or corrupt JPEG")


def test_palette_png_with_trns_keeps_transparency() -> None:
    index = np.array([[0, 1, 2], [2, 1, 0]], np.uint8).repeat(4, 0).repeat(4, 1)
    pil = PILImage.fromarray(index, "P")
    pil.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    data = save(pil, "PNG", transparency=bytes([0, 128, 255]))

    img = decode(data, "in/pal.png", pixel_limit=LIMIT)

    assert img.alpha is not None and img.alpha.dtype == np.uint8
    assert img.alpha[0, 0] == 0 and img.alpha[0, 4] == 128 and img.alpha[0, 8] == 255
    assert tuple(img.pixels[0, 8]) == (255, 0, 0)  # index 2 is blue, BGR
    assert tuple(img.pixels[0, 4]) == (0, 255, 0)
    assert not img.is_gray


def test_palette_png_without_transparency_has_no_alpha() -> None:
    pil = PILImage.fromarray(upright_rgb()).convert("P", palette=PILImage.Palette.ADAPTIVE)
    img = decode(save(pil, "PNG"), "in/pal.png", pixel_limit=LIMIT)
    assert img.alpha is None
    assert np.abs(block_means(img.pixels) - block_means(upright_rgb()[..., ::-1])).max() < 3


# --------------------------------------------------------------------------- 16 bits


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_png_round_trip_is_exact(channels: int) -> None:
    bgra = sixteen_bit(1, channels)
    ok, buf = cv2.imencode(".png", bgra)
    assert ok

    img = decode(buf.tobytes(), "in/deep.png", pixel_limit=LIMIT)
    assert img.pixels.dtype == np.uint16 and img.bit_depth == 16
    assert np.array_equal(img.pixels, bgra[..., :3])
    if channels == 4:
        assert img.alpha is not None and np.array_equal(img.alpha, bgra[..., 3])
    else:
        assert img.alpha is None
    assert probe(buf.tobytes(), "in/deep.png", pixel_limit=LIMIT).bit_depth == 16

    again = decode(encode(img, "png"), "out/deep.png", pixel_limit=LIMIT)
    assert again.pixels.dtype == np.uint16
    assert np.array_equal(again.pixels, img.pixels)
    if channels == 4:
        assert np.array_equal(again.alpha, img.alpha)


@pytest.mark.parametrize("level", [0, 1, 6])
@pytest.mark.parametrize("depth", [8, 16])
def test_png_at_every_speed_level_round_trips_exactly(level: int, depth: int) -> None:
    """The fast levels (results stored for re-runs) filter rows differently from the default;
    the pixels and alpha come back the same at each."""
    rng = np.random.default_rng(level + depth)
    top = 255 if depth == 8 else 65535
    dtype = np.uint8 if depth == 8 else np.uint16
    # Smooth ramps plus noise: rows the "up" filter helps and rows it does not.
    ramp = np.linspace(0, top, 40 * 3, dtype=np.float64).reshape(1, 40, 3)
    pixels = np.clip(ramp + rng.normal(0, top / 50, (30, 40, 3)), 0, top).astype(dtype)
    alpha = rng.integers(0, top + 1, (30, 40), dtype=dtype)
    for image in (Image(pixels), Image(pixels, alpha=alpha)):
        data = encode(image, "png", keep_metadata=False, png_compression=level)
        again = decode(data, "out/speed.png", pixel_limit=LIMIT)
        assert again.pixels.dtype == dtype and np.array_equal(again.pixels, pixels)
        if image.alpha is None:
            assert again.alpha is None
        else:
            assert np.array_equal(again.alpha, alpha)


def test_16bit_gray_png_stays_16bit_gray() -> None:
    gray = sixteen_bit(2, 1)[..., 0]
    data = save(PILImage.fromarray(gray), "PNG")

    img = decode(data, "in/g16.png", pixel_limit=LIMIT)
    assert img.is_gray and img.pixels.dtype == np.uint16
    assert all(np.array_equal(img.pixels[..., c], gray) for c in range(3))

    out = encode(img, "png")
    with PILImage.open(io.BytesIO(out)) as reopened:
        assert reopened.mode.startswith("I;16")
        assert np.array_equal(np.asarray(reopened), gray)


def test_16bit_gray_with_alpha_png_keeps_both() -> None:
    planes = sixteen_bit(3, 2)
    rows = b"".join(b"\x00" + planes[y].astype(">u2").tobytes() for y in range(planes.shape[0]))
    data = raw_png(planes.shape[1], planes.shape[0], 16, 4, rows)

    img = decode(data, "in/la16.png", pixel_limit=LIMIT)

    assert img.is_gray and img.pixels.dtype == np.uint16
    assert np.array_equal(img.pixels[..., 1], planes[..., 0])
    assert img.alpha is not None and np.array_equal(img.alpha, planes[..., 1])
    again = decode(encode(img, "png"), "out/la16.png", pixel_limit=LIMIT)
    assert np.array_equal(again.pixels, img.pixels) and np.array_equal(again.alpha, img.alpha)


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_tiff_round_trip_is_exact(channels: int) -> None:
    bgra = sixteen_bit(4, channels)
    ok, buf = cv2.imencode(".tiff", bgra)
    assert ok

    img = decode(buf.tobytes(), "in/deep.tif", pixel_limit=LIMIT)
    assert img.pixels.dtype == np.uint16
    assert np.array_equal(img.pixels, bgra[..., :3])
    assert (img.alpha is not None) == (channels == 4)

    again = decode(encode(img, "tiff"), "out/deep.tif", pixel_limit=LIMIT)
    assert again.pixels.dtype == np.uint16
    assert np.array_equal(again.pixels, img.pixels)
    if channels == 4:
        assert np.array_equal(again.alpha, img.alpha)


def test_16_to_8_bits_rounds_instead_of_truncating() -> None:
    pixels = np.full((2, 2, 3), 257 * 100 + 200, np.uint16)  # 100.78 in 8-bit terms
    out = decode(encode(Image(pixels=pixels), "bmp"), "out/x.bmp", pixel_limit=LIMIT)
    assert out.pixels.dtype == np.uint8
    assert int(out.pixels[0, 0, 0]) == 101


# --------------------------------------------------------------------------- gray and 1-bit


def test_1bit_png_is_gray_black_and_white() -> None:
    bits = (np.indices((8, 8)).sum(0) % 2).astype(bool)
    data = save(PILImage.fromarray(bits), "PNG")
    assert PILImage.open(io.BytesIO(data)).mode == "1"

    img = decode(data, "in/bw.png", pixel_limit=LIMIT)

    assert img.is_gray and img.pixels.dtype == np.uint8
    assert set(np.unique(img.pixels)) == {0, 255}
    assert np.array_equal(img.pixels[..., 0], bits.astype(np.uint8) * 255)
    assert np.array_equal(img.pixels[..., 0], img.pixels[..., 2])
    assert probe(data, "in/bw.png", pixel_limit=LIMIT).bit_depth == 1


def test_gray_png_stays_gray_when_encoded() -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    img = decode(save(PILImage.fromarray(gray), "PNG"), "in/g.png", pixel_limit=LIMIT)
    assert img.is_gray and img.pixels.shape == (8, 8, 3)

    for fmt, pil_fmt in (("png", "PNG"), ("jpg", "JPEG"), ("tiff", "TIFF"), ("bmp", "BMP")):
        with PILImage.open(io.BytesIO(encode(img, fmt))) as out:
            assert out.format == pil_fmt
            assert out.mode == "L", fmt
    with PILImage.open(io.BytesIO(encode(img, "png"))) as out:
        assert np.array_equal(np.asarray(out), gray)


def test_gray_flag_is_ignored_when_an_operation_added_colour() -> None:
    pixels = np.zeros((4, 4, 3), np.uint8)
    pixels[..., 2] = 200
    with PILImage.open(io.BytesIO(encode(Image(pixels=pixels, is_gray=True), "png"))) as out:
        assert out.mode == "RGB"


def test_gray_with_alpha_png() -> None:
    la = np.dstack([np.full((4, 4), 90, np.uint8), np.full((4, 4), 40, np.uint8)])
    img = decode(save(PILImage.fromarray(la), "PNG"), "in/la.png", pixel_limit=LIMIT)
    assert img.is_gray and img.alpha is not None and int(img.alpha[0, 0]) == 40
    with PILImage.open(io.BytesIO(encode(img, "png"))) as out:
        assert out.mode == "LA"


# --------------------------------------------------------------------------- alpha formats


def test_webp_alpha_decodes_and_lossless_round_trips() -> None:
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, (6, 10, 4), dtype=np.uint8)
    rgba[..., 3] = np.linspace(1, 255, 10, dtype=np.uint8)[None, :]
    data = save(PILImage.fromarray(rgba), "WEBP", lossless=True, exact=True)

    img = decode(data, "in/a.webp", pixel_limit=LIMIT)
    assert img.alpha is not None
    assert np.array_equal(img.alpha, rgba[..., 3])
    assert np.array_equal(img.pixels, rgba[..., 2::-1])

    again = decode(encode(img, "webp", quality=100), "out/a.webp", pixel_limit=LIMIT)
    assert np.array_equal(again.alpha, img.alpha) and np.array_equal(again.pixels, img.pixels)


def test_jpeg_and_bmp_encode_composite_alpha_over_white() -> None:
    pixels = np.zeros((2, 3, 3), np.uint8)
    pixels[...] = (0, 0, 255)  # red, BGR
    alpha = np.array([[0, 255, 128], [0, 255, 128]], np.uint8)
    img = Image(pixels=pixels, alpha=alpha)

    bmp = decode(encode(img, "bmp"), "out/x.bmp", pixel_limit=LIMIT)
    assert bmp.alpha is None
    assert tuple(bmp.pixels[0, 0]) == (255, 255, 255)
    assert tuple(bmp.pixels[0, 1]) == (0, 0, 255)
    assert tuple(bmp.pixels[0, 2]) == (127, 127, 255)

    big = Image(
        pixels=np.repeat(np.repeat(pixels, 8, 0), 8, 1), alpha=alpha.repeat(8, 0).repeat(8, 1)
    )
    jpg = decode(encode(big, "jpg", quality=95), "out/x.jpg", pixel_limit=LIMIT)
    assert jpg.alpha is None
    assert np.abs(jpg.pixels[4, 4].astype(int) - (255, 255, 255)).max() <= 6
    assert np.abs(jpg.pixels[4, 12].astype(int) - (0, 0, 255)).max() <= 6
