"""Tiny images and hand-made files shared by the imageio tests."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image as PILImage

from retouch.lib.errors import InvalidImageError
from retouch.lib.imageio import (
    decode,
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


def sixteen_bit(seed: int, channels: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 65536, (7, 9, channels), dtype=np.uint16)
