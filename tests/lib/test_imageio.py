"""Decode/encode fidelity of retouch.lib.imageio on tiny images built in the tests."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms, ImageFile

from retouch.lib.errors import InvalidImageError, UnknownNameError
from retouch.lib.image import Image
from retouch.lib.imageio import (
    ImageInfo,
    decode,
    encode,
    format_extension,
    format_from_name,
    load_uint8_bgr,
    probe,
    sniff_format,
)

LIMIT = 100_000_000

# Upright reference: 2 rows x 3 columns of 16x16 blocks, every block a different colour, so
# any flip or rotation moves some colour somewhere else. RGB.
COLOURS = [
    [(220, 20, 20), (20, 200, 20), (20, 20, 220)],
    [(230, 230, 30), (30, 220, 220), (200, 30, 200)],
]


def upright_rgb() -> np.ndarray:
    rows = [np.concatenate([np.full((16, 16, 3), c, np.uint8) for c in row], 1) for row in COLOURS]
    return np.concatenate(rows, 0)


def block_means(bgr: np.ndarray, block: int = 16) -> np.ndarray:
    """Mean colour of the centre of each block, (rows, cols, 3)."""
    h, w = bgr.shape[0] // block, bgr.shape[1] // block
    out = np.zeros((h, w, 3))
    for r in range(h):
        for c in range(w):
            y, x = r * block, c * block
            out[r, c] = bgr[y + 4 : y + 12, x + 4 : x + 12].reshape(-1, 3).mean(0)
    return out


def save(pil: PILImage.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(ctype + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", crc)


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand (filter 0 on every row), for layouts Pillow cannot write."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def exif_bytes(**tags: int | str) -> bytes:
    exif = PILImage.Exif()
    names = {"orientation": 0x0112, "make": 0x010F}
    for key, value in tags.items():
        exif[names[key]] = value
    return exif.tobytes()


def reason_of(data: bytes, name: str = "in/photo.jpg", **kwargs) -> str:
    with pytest.raises(InvalidImageError) as err:
        decode(data, name, pixel_limit=kwargs.get("pixel_limit", LIMIT))
    assert err.value.uri == name
    assert name in str(err.value)
    return err.value.reason


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


def sixteen_bit(seed: int, channels: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 65536, (7, 9, channels), dtype=np.uint16)


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


# --------------------------------------------------------------------------- multi-frame


def test_animated_gif_gives_first_frame_and_frame_count() -> None:
    frames = [PILImage.new("RGB", (8, 6), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)

    img = decode(buf.getvalue(), "in/anim.gif", pixel_limit=LIMIT)

    assert img.info["frames"] == 3
    assert img.pixels.shape == (6, 8, 3)
    assert tuple(img.pixels[0, 0]) == (0, 0, 255)
    assert probe(buf.getvalue(), "in/anim.gif", pixel_limit=LIMIT).frames == 3
    assert format_from_name("same", sniff_format(buf.getvalue())) == "png"


def test_multi_page_tiff_gives_first_page_and_page_count() -> None:
    pages = [PILImage.new("RGB", (5, 4), c) for c in ((10, 20, 30), (200, 100, 0))]
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])

    img = decode(buf.getvalue(), "in/pages.tif", pixel_limit=LIMIT)

    assert img.info["frames"] == 2
    assert tuple(img.pixels[0, 0]) == (30, 20, 10)


def test_still_image_reports_one_frame() -> None:
    img = decode(save(PILImage.new("RGB", (3, 3)), "PNG"), "in/a.png", pixel_limit=LIMIT)
    assert img.info["frames"] == 1 and img.info["format"] == "png"


# --------------------------------------------------------------------------- simple formats


def test_bmp_decodes_exactly() -> None:
    data = save(PILImage.fromarray(upright_rgb()), "BMP")
    img = decode(data, "in/a.bmp", pixel_limit=LIMIT)
    assert np.array_equal(img.pixels, upright_rgb()[..., ::-1])
    assert format_from_name("same", sniff_format(data)) == "bmp"


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tiff", "bmp"])
def test_one_pixel_image_round_trips_through_every_format(fmt: str) -> None:
    src = decode(
        save(PILImage.new("RGB", (1, 1), (10, 120, 240)), "PNG"), "in/1.png", pixel_limit=LIMIT
    )
    assert src.pixels.shape == (1, 1, 3)

    out = decode(encode(src, fmt, quality=100), f"out/1.{format_extension(fmt)}", pixel_limit=LIMIT)

    assert out.pixels.shape == (1, 1, 3)
    assert np.abs(out.pixels[0, 0].astype(int) - (240, 120, 10)).max() <= 3


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tiff", "bmp"])
@pytest.mark.parametrize("depth", [np.uint8, np.uint16])
def test_encode_never_modifies_its_input(fmt: str, depth: type) -> None:
    rng = np.random.default_rng(6)
    top = 255 if depth is np.uint8 else 65535
    pixels = rng.integers(0, top + 1, (5, 6, 3)).astype(depth)
    alpha = rng.integers(0, top + 1, (5, 6)).astype(depth)
    info = {"exif": b"Exif\x00\x00" + exif_bytes(orientation=6)[6:], "dpi": (72.0, 72.0)}
    img = Image(pixels=pixels, alpha=alpha, info=info)
    before = (pixels.copy(), alpha.copy(), dict(info))

    encode(img, fmt)

    assert np.array_equal(img.pixels, before[0]) and np.array_equal(img.alpha, before[1])
    assert img.info == before[2] and img.pixels is pixels and img.alpha is alpha


# --------------------------------------------------------------------------- rejects


def test_zero_byte_file() -> None:
    assert reason_of(b"", "in/empty.jpg") == "empty file (0 bytes)"
    with pytest.raises(InvalidImageError, match="empty file"):
        probe(b"", "in/empty.jpg", pixel_limit=LIMIT)


def test_text_renamed_jpg() -> None:
    text = b"BMW owners club, minutes of the meeting\nnothing to see here\n" * 3
    assert sniff_format(text) is None
    assert reason_of(text, "in/notes.jpg") == "not an image (looks like text)"


def test_unknown_binary_is_unsupported_and_named_when_known() -> None:
    assert reason_of(bytes(range(256)) * 4, "in/blob.jpg").startswith("unsupported format")
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    assert "HEIC" in reason_of(heic, "in/phone.jpg")


def test_truncated_jpeg_and_png_are_rejected_with_a_reason() -> None:
    rng = np.random.default_rng(7)
    noisy = PILImage.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    jpg, png = save(noisy, "JPEG", quality=90), save(noisy, "PNG")

    assert reason_of(jpg[: len(jpg) // 2], "in/cut.jpg").startswith("truncated or corrupt JPEG")
    assert reason_of(png[: len(png) // 2], "in/cut.png").startswith("truncated or corrupt PNG")
    assert "IEND" in reason_of(png[:-12], "in/cut.png")
    assert reason_of(jpg[:40], "in/cut.jpg").startswith("truncated or corrupt JPEG")


def test_truncation_is_caught_even_if_pillow_is_told_to_accept_it(monkeypatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    rng = np.random.default_rng(8)
    noisy = PILImage.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    jpg, png = save(noisy, "JPEG", quality=90), save(noisy, "PNG")
    assert reason_of(jpg[: len(jpg) - 200], "in/cut.jpg").startswith("truncated or corrupt JPEG")
    assert reason_of(png[: len(png) - 200], "in/cut.png").startswith("truncated or corrupt PNG")


def test_corrupt_png_byte_is_reported() -> None:
    data = bytearray(save(PILImage.fromarray(upright_rgb()), "PNG"))
    data[60] ^= 0xFF
    assert "CRC" in reason_of(bytes(data), "in/bad.png")


def test_png_named_jpg_is_decoded_by_content() -> None:
    data = save(PILImage.fromarray(upright_rgb()), "PNG")
    assert sniff_format(data) == "png"
    img = decode(data, "in/really_png.jpg", pixel_limit=LIMIT)
    assert np.array_equal(img.pixels, upright_rgb()[..., ::-1])
    assert img.info["format"] == "png"
    assert format_from_name("same", sniff_format(data)) == "png"


def test_decompression_bomb_is_rejected_from_the_header() -> None:
    # 100000 x 100000 RGB would need 30 GB; the file is a few dozen bytes.
    bomb = raw_png(100_000, 100_000, 8, 2, b"\x00" * 16)
    assert len(bomb) < 100
    expected = (
        "image is 100000x100000 = 10000.0 MP, over the pixel limit of 100.0 MP "
        "(set RETOUCH_PIXEL_LIMIT to raise it)"
    )
    with pytest.raises(InvalidImageError) as err:
        probe(bomb, "in/bomb.png", pixel_limit=LIMIT)
    assert err.value.reason == expected
    assert reason_of(bomb, "in/bomb.png") == expected


def test_pixel_limit_boundary() -> None:
    data = save(PILImage.new("RGB", (10, 10)), "PNG")
    assert decode(data, "in/a.png", pixel_limit=100).pixels.shape == (10, 10, 3)
    reason = reason_of(data, "in/a.png", pixel_limit=99)
    assert reason.startswith("image is 10x10 = 0.0 MP, over the pixel limit")


def test_probe_reads_the_header() -> None:
    rgba = PILImage.new("RGBA", (7, 5), (1, 2, 3, 4))
    info = probe(save(rgba, "PNG"), "in/a.png", pixel_limit=LIMIT)
    assert info == ImageInfo("png", 7, 5, "RGBA", 8, True, 1)
    info = probe(save(PILImage.new("RGB", (3, 2)), "JPEG"), "in/a.jpg", pixel_limit=LIMIT)
    assert (info.format, info.width, info.height, info.has_alpha) == ("jpeg", 3, 2, False)


# --------------------------------------------------------------------------- metadata


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def source_with_metadata() -> bytes:
    pil = PILImage.fromarray(upright_rgb())
    exif = exif_bytes(orientation=3, make="RetouchCam")
    return save(pil, "JPEG", quality=95, icc_profile=srgb_icc(), exif=exif, dpi=(300, 300))


def test_icc_exif_dpi_survive_decode_then_jpeg_encode() -> None:
    img = decode(source_with_metadata(), "in/meta.jpg", pixel_limit=LIMIT)
    assert img.info["icc_profile"] == srgb_icc()
    assert img.info["dpi"] == (300.0, 300.0)

    with PILImage.open(io.BytesIO(encode(img, "jpg"))) as out:
        assert out.info.get("icc_profile") == srgb_icc()
        assert out.getexif()[0x010F] == "RetouchCam"
        assert out.getexif()[0x0112] == 1
        assert tuple(round(v) for v in out.info["dpi"]) == (300, 300)

    with PILImage.open(io.BytesIO(encode(img, "jpg", keep_metadata=False))) as out:
        assert not out.info.get("icc_profile")
        assert "exif" not in out.info and not out.getexif()
        assert "dpi" not in out.info


@pytest.mark.parametrize(
    ("fmt", "depth"), [("png", 8), ("png", 16), ("webp", 8), ("tiff", 8), ("tiff", 16)]
)
def test_metadata_in_other_formats(fmt: str, depth: int) -> None:
    img = decode(source_with_metadata(), "in/meta.jpg", pixel_limit=LIMIT)
    if depth == 16:
        img = img.with_pixels(img.pixels.astype(np.uint16) * 257)

    out = decode(encode(img, fmt), f"out/meta.{format_extension(fmt)}", pixel_limit=LIMIT)

    assert out.pixels.dtype == (np.uint16 if depth == 16 else np.uint8)
    assert out.info.get("icc_profile") == srgb_icc()
    if fmt != "webp":  # WebP has no resolution field
        assert out.info["dpi"] == pytest.approx((300.0, 300.0), abs=0.01)
    if not (fmt == "tiff" and depth == 16):  # documented: 16-bit TIFF carries no EXIF
        exif = PILImage.Exif()
        exif.load(out.info["exif"])
        assert exif[0x010F] == "RetouchCam" and exif.get(0x0112, 1) == 1
    stripped = decode(encode(img, fmt, keep_metadata=False), "out/x", pixel_limit=LIMIT)
    assert not {"icc_profile", "exif", "dpi"} & set(stripped.info)


def test_rgb_profile_is_not_attached_to_a_gray_jpeg() -> None:
    gray = np.full((4, 4, 3), 77, np.uint8)
    img = Image(pixels=gray, is_gray=True, info={"icc_profile": srgb_icc()})
    with PILImage.open(io.BytesIO(encode(img, "jpg"))) as out:
        assert out.mode == "L" and not out.info.get("icc_profile")


# --------------------------------------------------------------------------- names


def test_format_names() -> None:
    assert [format_extension(f) for f in ("jpg", "jpeg", "png", "webp", "tiff", "tif", "bmp")] == [
        "jpg",
        "jpg",
        "png",
        "webp",
        "tif",
        "tif",
        "bmp",
    ]
    same = {"jpeg": "jpg", "png": "png", "webp": "webp", "tiff": "tiff", "bmp": "bmp", "gif": "png"}
    for sniffed, expected in same.items():
        assert format_from_name("same", sniffed) == expected
    assert format_from_name("JPEG", "png") == "jpg"
    with pytest.raises(UnknownNameError, match="valid formats: bmp, jpg, png, tiff, webp"):
        encode(Image(pixels=np.zeros((1, 1, 3), np.uint8)), "heic")


def test_sniff_format_uses_magic_bytes() -> None:
    assert sniff_format(save(PILImage.new("RGB", (2, 2)), "WEBP")) == "webp"
    assert sniff_format(save(PILImage.new("RGB", (2, 2)), "TIFF")) == "tiff"
    assert sniff_format(save(PILImage.new("RGB", (2, 2)), "GIF")) == "gif"
    assert sniff_format(save(PILImage.new("RGB", (2, 2)), "BMP")) == "bmp"
    assert sniff_format(save(PILImage.new("RGB", (2, 2)), "JPEG")) == "jpeg"
    assert sniff_format(b"BM is also how this sentence starts") is None


def test_load_uint8_bgr_rounds_16bit() -> None:
    ok, buf = cv2.imencode(".png", np.full((2, 2, 3), 257 * 10 + 200, np.uint16))
    arr = load_uint8_bgr(buf.tobytes(), "in/a.png", LIMIT)
    assert arr.dtype == np.uint8 and int(arr[0, 0, 0]) == 11


def test_probe_reads_only_the_header_and_decode_checks_the_data() -> None:
    data = bytearray(save(PILImage.fromarray(upright_rgb()), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 10 : idat + 14] = b"\x00\x00\x00\x00"  # damage the pixels, not the header
    info = probe(bytes(data), "in/a.png", pixel_limit=LIMIT)
    assert (info.width, info.height) == (48, 32)
    assert reason_of(bytes(data), "in/a.png").startswith("truncated or corrupt PNG")


def test_exif_chunk_after_the_pixels_of_a_16bit_png_is_honoured() -> None:
    upright = sixteen_bit(9, 3)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(np.rot90(upright, 1)))  # orientation 6
    png = buf.tobytes()
    iend = len(png) - 12
    late = png_chunk(b"eXIf", exif_bytes(orientation=6, make="Late")[6:])
    data = png[:iend] + late + png[iend:]

    img = decode(data, "in/late.png", pixel_limit=LIMIT)

    assert np.array_equal(img.pixels, upright)
    carried = PILImage.Exif()
    carried.load(img.info["exif"])
    assert carried[0x0112] == 1 and carried[0x010F] == "Late"
