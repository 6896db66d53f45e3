"""Decode/encode of retouch.lib.imageio by file: frames, simple formats, rejected files,
metadata and format names, on tiny images built in the tests."""

from __future__ import annotations

import functools
import io

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
from tests.lib.imageio_samples import (
    LIMIT,
    exif_bytes,
    png_chunk,
    raw_png,
    reason_of,
    save,
    sixteen_bit,
    upright_rgb,
)

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


@functools.cache
def srgb_icc() -> bytes:
    # One profile for the whole module: LittleCMS stamps each new profile with the current
    # time, so two built a second apart differ in their header.
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
