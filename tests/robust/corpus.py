"""A hostile input corpus, generated at test time (nothing downloaded), with expected outcomes.

:func:`build_corpus` writes every case into a source folder and returns :class:`Case` records
saying what a run must do with each file: deliver it with given properties (size, mode, bit
depth, alpha, orientation marker, metadata), fail it with an exact reason, or skip it.

The orientation cases share one asymmetric picture: an upright 24x16 image, grey, with a red
block in its top-left corner and a blue block in its bottom-right. Each EXIF orientation
case stores the pixels transformed so that a viewer applying the tag sees that upright
picture; a faithful decode must put red top-left again.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageCms

UPRIGHT_W, UPRIGHT_H = 24, 16
DPI = (300, 300)
EXIF_MAKE = "RetouchTestCam"


@dataclass
class Case:
    """One file of the corpus and what a run must make of it.

    ``outcome`` is "ok" (delivered), "failed" (in the manifest with ``reason``) or
    "skipped" (left out at discovery with ``reason``). For "ok" cases ``expect`` lists the
    output properties to check: size (w, h), mode (Pillow mode of the output file),
    bit_depth (8/16), alpha (bool), upright (red top-left, blue bottom-right), exif, icc,
    dpi, frames_in (the input frame count recorded in the manifest), format (output format).
    """

    name: str
    outcome: str
    reason: str | None = None
    expect: dict[str, Any] = field(default_factory=dict)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def upright_rgb() -> np.ndarray:
    """The asymmetric orientation target, HxWx3 RGB uint8 (16x24)."""
    arr = np.full((UPRIGHT_H, UPRIGHT_W, 3), 128, np.uint8)
    arr[:6, :8] = (230, 20, 20)  # red, top-left
    arr[-6:, -8:] = (20, 20, 230)  # blue, bottom-right
    return arr


def stored_for_orientation(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels to store so that applying EXIF ``orientation`` gives ``upright``."""
    # Inverse of the transform a viewer applies for each tag value.
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.transpose(a, (1, 0, 2)),
        6: lambda a: np.rot90(a, 1),  # viewer rotates 90 CW, so store rotated 90 CCW
        7: lambda a: np.rot90(np.transpose(a, (1, 0, 2)), 2),
        8: lambda a: np.rot90(a, -1),
    }
    return np.ascontiguousarray(ops[orientation](upright))


def _exif(orientation: int | None = None, make: str | None = None) -> bytes:
    exif = PILImage.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if make is not None:
        exif[0x010F] = make
    return exif.tobytes()


def _save(arr_or_pil: Any, fmt: str, **kw: Any) -> bytes:
    pil = arr_or_pil if isinstance(arr_or_pil, PILImage.Image) else PILImage.fromarray(arr_or_pil)
    buf = io.BytesIO()
    pil.save(buf, fmt, **kw)
    return buf.getvalue()


def _photo(seed: int, w: int = 40, h: int = 28) -> np.ndarray:
    rng = _rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(1, w), yy * 255 // max(1, h), (xx + yy) % 256], axis=2)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def _png_chunk(ctype: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(ctype + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", crc)


def bomb_png(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few hundred bytes declaring ``width`` x ``height`` RGB."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # A few rows of zeros: tiny, and never enough for the declared canvas.
    idat = zlib.compress(b"\x00" * 4096, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _cmyk_jpeg() -> bytes:
    rgb = PILImage.fromarray(_photo(5))
    return _save(rgb.convert("CMYK"), "JPEG", quality=95)


def _palette_png_with_trns() -> bytes:
    pal = PILImage.new("P", (20, 12))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    data = np.zeros((12, 20), np.uint8)
    data[:, 10:] = 1
    data[6:, :] = 2
    pal.putdata(data.flatten().tolist())
    return _save(pal, "PNG", transparency=0)  # index 0 (red) fully transparent


def _png16(channels: int) -> bytes:
    import cv2

    rng = _rng(16 + channels)
    arr = rng.integers(0, 65536, (18, 26, channels), dtype=np.uint16)
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def _tiff16() -> bytes:
    import tifffile

    rng = _rng(33)
    arr = rng.integers(0, 65536, (14, 22, 3), dtype=np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="rgb")
    return buf.getvalue()


def _rgba_png() -> bytes:
    """8-bit RGBA, the logo case: fully transparent top-left quarter, opaque bottom-right."""
    rgba = np.dstack((_photo(7, 24, 16), np.full((16, 24), 255, np.uint8)))
    rgba[:8, :12, 3] = 0
    rgba[:8, 12:, 3] = 128
    return _save(rgba, "PNG")


def _gray_alpha_png() -> bytes:
    gray = _photo(19, 22, 14)[..., 0]
    alpha = np.full((14, 22), 255, np.uint8)
    alpha[:7, :11] = 0
    return _save(PILImage.fromarray(np.dstack((gray, alpha)), "LA"), "PNG")


def _gray16_png() -> bytes:
    import cv2

    arr = _rng(20).integers(0, 65536, (12, 18), dtype=np.uint16)
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def _tiff16_alpha() -> bytes:
    import tifffile

    rng = _rng(34)
    arr = rng.integers(0, 65536, (14, 22, 4), dtype=np.uint16)
    arr[..., 3] = 65535
    arr[:7, :11, 3] = 0
    arr[:7, 11:, 3] = 30000
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="rgb", extrasamples=("unassalpha",))
    return buf.getvalue()


def _webp_alpha() -> bytes:
    rgba = np.dstack((_photo(8, 30, 20), np.tile(np.linspace(0, 255, 30, dtype=np.uint8), (20, 1))))
    return _save(rgba, "WEBP", lossless=True)


def _animated_gif() -> bytes:
    frames = [PILImage.fromarray(np.full((16, 16, 3), v, np.uint8)) for v in (30, 120, 220)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def _multipage_tiff() -> bytes:
    pages = [PILImage.fromarray(_photo(40 + i, 20, 14)) for i in range(3)]
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])
    return buf.getvalue()


def _metadata_jpeg() -> bytes:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return _save(
        _photo(21),
        "JPEG",
        quality=92,
        exif=_exif(make=EXIF_MAKE),
        icc_profile=icc,
        dpi=DPI,
    )


def build_corpus(folder: Path) -> list[Case]:
    """Write the corpus into ``folder`` (created) and return one :class:`Case` per file."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(name: str, data: bytes, outcome: str, reason: str | None = None, **expect: Any):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        cases.append(Case(name, outcome, reason, expect))

    good_jpeg = _save(_photo(1, 80, 60), "JPEG", quality=92)
    good_png = _save(_photo(2), "PNG")

    # -- broken files: failed, with the exact reason ---------------------------------------
    add("zero-byte.jpg", b"", "failed", "empty file (0 bytes)")
    add("text-renamed.jpg", b"this is a shopping list, not a photo\n" * 20, "failed",
        "not an image (looks like text)")  # fmt: skip
    jcut = len(good_jpeg) - 200  # inside the scan data, after every header
    add("truncated.jpg", good_jpeg[:jcut], "failed",
        f"truncated or corrupt JPEG: file ends before the end-of-image marker ({jcut} bytes)")  # fmt: skip
    cut = len(good_png) - 30
    add("truncated.png", good_png[:cut], "failed",
        f"truncated or corrupt PNG: file ends inside the IDAT chunk ({cut} bytes)")  # fmt: skip
    add("bomb.png", bomb_png(50_000, 50_000), "failed",
        "image is 50000x50000 = 2500.0 MP, over the pixel limit of 100.0 MP "
        "(set RETOUCH_PIXEL_LIMIT to raise it)")  # fmt: skip

    # -- faithful decode -------------------------------------------------------------------
    add("png-named.jpg", good_png, "ok", size=(40, 28), format="png", mode="RGB")
    upright = upright_rgb()
    for o in range(1, 9):
        stored = stored_for_orientation(upright, o)
        add(f"orient-{o}.jpg", _save(stored, "JPEG", quality=95, exif=_exif(o)), "ok",
            size=(UPRIGHT_W, UPRIGHT_H), upright=True, mode="RGB", orientation_tag=o)  # fmt: skip
    add("cmyk.jpg", _cmyk_jpeg(), "ok", size=(40, 28), mode="RGB", bit_depth=8)
    add("progressive.jpg", _save(_photo(6), "JPEG", quality=90, progressive=True), "ok",
        size=(40, 28), mode="RGB")  # fmt: skip
    add("palette-trns.png", _palette_png_with_trns(), "ok", size=(20, 12), alpha=True,
        transparent_top_left=True)  # fmt: skip
    add("rgb16.png", _png16(3), "ok", size=(26, 18), bit_depth=16, alpha=False)
    add("rgba16.png", _png16(4), "ok", size=(26, 18), bit_depth=16, alpha=True)
    add("rgb16.tif", _tiff16(), "ok", size=(22, 14), bit_depth=16, alpha=False, format="tiff")
    add("rgba16.tif", _tiff16_alpha(), "ok", size=(22, 14), bit_depth=16, alpha=True,
        format="tiff", transparent_top_left=True)  # fmt: skip
    add("gray16.png", _gray16_png(), "ok", size=(18, 12), bit_depth=16, alpha=False, gray=True)
    add("rgba.png", _rgba_png(), "ok", size=(24, 16), alpha=True, mode="RGBA",
        transparent_top_left=True)  # fmt: skip
    add("gray-alpha.png", _gray_alpha_png(), "ok", size=(22, 14), alpha=True, mode="LA",
        gray=True, transparent_top_left=True)  # fmt: skip
    bw = (_rng(3).random((15, 17)) > 0.5).astype(np.uint8) * 255
    add("bilevel.png", _save(PILImage.fromarray(bw).convert("1"), "PNG"), "ok",
        size=(17, 15), mode="L", gray=True)  # fmt: skip
    add("gray.jpg", _save(_photo(9)[..., 0], "JPEG", quality=92), "ok", size=(40, 28),
        mode="L", gray=True)  # fmt: skip
    add("alpha.webp", _webp_alpha(), "ok", size=(30, 20), alpha=True, format="webp")
    add("animated.gif", _animated_gif(), "ok", size=(16, 16), frames_in=3, format="png",
        first_frame_value=30)  # fmt: skip
    add("pages.tif", _multipage_tiff(), "ok", size=(20, 14), frames_in=3, format="tiff")
    add("plain.bmp", _save(_photo(11), "BMP"), "ok", size=(40, 28), format="bmp")
    add("one-pixel.png", _save(np.array([[[200, 10, 10]]], np.uint8), "PNG"), "ok", size=(1, 1))
    add("three.png", _save(_photo(12, 3, 3), "PNG"), "ok", size=(3, 3))
    add("wide.png", _save(_photo(13, 10_000, 8), "PNG"), "ok", size=(10_000, 8))
    add("metadata.jpg", _metadata_jpeg(), "ok", size=(40, 28), exif=True, icc=True, dpi=DPI)

    # -- names and layout ------------------------------------------------------------------
    add("with space.jpg", _save(_photo(14), "JPEG"), "ok", size=(40, 28))
    add("café ünïcode 写真.jpg", _save(_photo(15), "JPEG"), "ok", size=(40, 28))
    add("-leading-dash.jpg", _save(_photo(16), "JPEG"), "ok", size=(40, 28))
    dup = _save(_photo(17), "PNG")
    add("dup-a.png", dup, "ok", size=(40, 28), same_as="dup-b.png")
    add("dup-b.png", dup, "ok", size=(40, 28), same_as="dup-a.png")
    add("sub/inner.jpg", _save(_photo(18), "JPEG"), "ok", size=(40, 28))
    add("notes.txt", b"shoot notes\n", "skipped", "not an image file extension (.txt)")
    add("sub/data.csv", b"a,b\n1,2\n", "skipped", "not an image file extension (.csv)")
    return cases
