"""The decompression-bomb guards: a tiny file declaring a huge canvas is rejected from its
header, before any pixel buffer exists, at a limit the user can set; a file (a ZIP member,
an HTTP body) declaring more bytes than the file-size limit is refused before it is read;
hostile images are refused in the user's words, not a decoder library's."""

from __future__ import annotations

import contextlib
import io
import struct
import threading
import tracemalloc
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image as PILImage

from retouch.lib.phases.prepare import new_record, prepare_one
from retouch.lib.settings import reload_settings
from retouch.lib.sources import SourceItem
from tests.robust.corpus import _png_chunk, bomb_png


def _prepare(path):
    record = new_record(SourceItem(str(path), path.name, path.stat().st_size), 1)
    return prepare_one(record, reload_settings())


def test_bomb_is_rejected_before_allocation_at_the_configured_limit(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(30_000, 30_000))  # 900 MP, 2.7 GB of RGB if decoded
    assert path.stat().st_size < 1000
    tracemalloc.start()
    record = _prepare(path)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert record.status == "failed"
    assert record.reason == (
        "image is 30000x30000 = 900.0 MP, over the pixel limit of 100.0 MP "
        "(set RETOUCH_PIXEL_LIMIT to raise it)"
    )
    assert peak < 20 * 1024 * 1024  # nothing near the declared canvas was allocated


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    path.write_bytes(bomb_png(100, 100))
    monkeypatch.setenv("RETOUCH_PIXEL_LIMIT", "5000")
    record = _prepare(path)
    assert record.reason == (
        "image is 100x100 = 0.0 MP, over the pixel limit of 0.0 MP "
        "(set RETOUCH_PIXEL_LIMIT to raise it)"
    )
    monkeypatch.setenv("RETOUCH_PIXEL_LIMIT", "10000")
    record = _prepare(path)
    # Accepted by the limit; the data (a few zero rows for a 100x100 canvas) is incomplete.
    assert record.reason is not None and "pixel limit" not in record.reason


def _zip_with_bomb(path, member_bytes: int) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.png", b"\0" * member_bytes)


def test_over_limit_zip_member_is_refused_from_its_declared_size_without_reading_it(
    tmp_path, monkeypatch
):
    archive = tmp_path / "shoot.zip"
    _zip_with_bomb(archive, 64 << 20)  # 64 MB of zeros, ~64 kB compressed
    limit = 16 << 20
    monkeypatch.setenv("RETOUCH_MAX_FILE_BYTES", str(limit))
    item = SourceItem(f"zip://bomb.png::{archive}", "bomb.png", None)
    settings = reload_settings()
    tracemalloc.start()
    record = prepare_one(new_record(item, 1), settings)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert record.reason == (
        f"file is larger than the limit of {limit} bytes (raise RETOUCH_MAX_FILE_BYTES to accept it)"
    )
    assert peak < 4 << 20  # nothing near the 16 MB limit was decompressed


class _HugeBody(BaseHTTPRequestHandler):
    """Declares a 50 GB body and sends zeros until the client goes away."""

    def log_message(self, format, *args):  # noqa: A002
        pass

    def _headers(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(50 * 10**9))
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802
        self._headers()

    def do_GET(self) -> None:  # noqa: N802
        self._headers()
        with contextlib.suppress(OSError):
            for _ in range(1 << 14):  # at most 16 GB, never reached: the client hangs up
                self.wfile.write(b"\0" * (1 << 20))


@pytest.fixture
def huge_body_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HugeBody)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/huge.png"
    server.shutdown()
    server.server_close()


def test_http_body_declared_over_the_limit_is_refused_before_reading(huge_body_url):
    record = prepare_one(
        new_record(SourceItem(huge_body_url, "huge.png", None), 1), reload_settings()
    )
    assert record.reason == (
        "file is larger than the limit of 524288000 bytes (raise RETOUCH_MAX_FILE_BYTES to "
        "accept it)"
    )


def _png_with_text_bomb() -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "PNG")
    png = buf.getvalue()
    ztxt = _png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * (2 << 20)))
    return png[:33] + ztxt + png[33:]  # right after IHDR


def _cut_webp() -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(buf, "WEBP")
    data = buf.getvalue()
    return data[:20] + b"\0" * (len(data) - 20)  # the VP8 frame zeroed


def _tiff_with_bad_lzw() -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    (ifd,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[ifd : ifd + 2])
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if struct.unpack("<H", data[entry : entry + 2])[0] == 259:  # Compression
            data[entry + 8 : entry + 10] = struct.pack("<H", 5)  # LZW, but the strip is raw
    return bytes(data)


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        (
            "text-bomb.png",
            _png_with_text_bomb,
            "a metadata text chunk of the PNG expands to more than 1 MB: refused as a "
            "decompression bomb",
        ),
        (
            "zeroed.webp",
            _cut_webp,
            "truncated or corrupt WebP: the image data could not be decoded",
        ),
        (
            "bad-lzw.tif",
            _tiff_with_bad_lzw,
            "truncated or corrupt TIFF: the image data could not be decoded (damaged, or an "
            "unsupported compression)",
        ),
    ],
)
def test_hostile_images_are_refused_in_the_users_words(tmp_path, name, make, reason):
    path = tmp_path / name
    path.write_bytes(make())
    assert _prepare(path).reason == reason
