"""The full-size images of the zoomable comparison: the input (before) and the delivered
result (after) of a finished batch, in a format a browser shows, revalidated cheaply, behind
the same token and source checks as the other downloads, and refused above the pixel bound
with a reason the page can show."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.web.conftest import SAMPLES, stored_batch


def _png16_rgba(width: int, height: int) -> tuple[bytes, np.ndarray]:
    """A 16-bit RGBA PNG (as OpenCV writes it: BGRA) with a gradient and a transparent
    left half; returns its bytes and its RGBA pixels."""
    import cv2

    y, x = np.mgrid[0:height, 0:width]
    rgba = np.zeros((height, width, 4), np.uint16)
    rgba[..., 0] = x * 65535 // (width - 1)
    rgba[..., 1] = y * 65535 // (height - 1)
    rgba[..., 2] = 30000
    rgba[..., 3] = np.where(x < width // 2, 0, 65535)
    ok, data = cv2.imencode(".png", rgba[..., [2, 1, 0, 3]])
    assert ok
    return data.tobytes(), rgba


def _tiff(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(buffer, format="TIFF")
    return buffer.getvalue()


@pytest.fixture
def upscaled(serve):
    """A finished upload batch: two inputs, each delivered at twice its size, one as a
    16-bit PNG with alpha, one as a TIFF. Returns (server, batch id, the PNG's pixels)."""
    from retouch.lib.settings import get_settings
    from retouch.web.runner import Runner

    root = get_settings().home / "web" / "batches"
    png, rgba = _png16_rgba(902, 600)
    batch_id = stored_batch(
        root,
        {"chelsea.png": png, "rocket.tif": _tiff(1024, 684)},
        inputs={
            "chelsea.png": (SAMPLES / "chelsea.jpg").read_bytes(),
            "rocket.tif": (SAMPLES / "rocket.jpg").read_bytes(),
        },
    )
    return serve(runner=Runner(root, max_running=0)), batch_id, rgba


def test_full_size_before_and_after_are_browser_images_at_their_own_size(upscaled):
    web, batch_id, rgba = upscaled
    c = web.client
    images = c.get(f"/api/batches/{batch_id}").json()["images"]
    base = f"/api/batches/{batch_id}/full"
    assert images[0]["full"] == {"before": f"{base}/1/before", "after": f"{base}/1/after"}
    assert images[0]["size"] == {"width": 902, "height": 600}
    assert images[1]["size"] == {"width": 1024, "height": 684}

    # The input, a JPEG, is sent as it was uploaded (the page scales it to the result).
    before = c.get(f"{base}/1/before")
    assert before.status_code == 200
    assert before.headers["content-type"] == "image/jpeg"
    assert before.content == (SAMPLES / "chelsea.jpg").read_bytes()

    # The 16-bit result with alpha becomes an 8-bit PNG of the same size, alpha kept.
    after = c.get(f"{base}/1/after")
    assert after.status_code == 200 and after.headers["content-type"] == "image/png"
    shown = Image.open(io.BytesIO(after.content))
    assert (shown.size, shown.mode) == ((902, 600), "RGBA")
    pixels = np.asarray(shown).astype(int)
    expected = (rgba.astype(float) / 257).round().astype(int)
    assert np.abs(pixels[..., 3] - expected[..., 3]).max() == 0
    opaque = expected[..., 3] == 255
    assert np.abs(pixels[opaque][:, :3] - expected[opaque][:, :3]).max() <= 1

    # The TIFF becomes a JPEG of the same size and colour.
    tiff = c.get(f"{base}/2/after")
    assert tiff.headers["content-type"] == "image/jpeg"
    shown = Image.open(io.BytesIO(tiff.content))
    assert shown.format == "JPEG" and shown.size == (1024, 684)
    assert np.abs(np.asarray(shown).astype(int) - (200, 40, 90)).max() <= 3
    assert c.get(f"{base}/2/before").headers["content-type"] == "image/jpeg"

    # Asked again, the browser revalidates: same ETag, 304 and no body.
    assert after.headers["cache-control"] == "private, no-cache"
    again = c.get(f"{base}/1/after", headers={"If-None-Match": after.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert c.get(f"{base}/1/after").content == after.content
    head = c.head(f"{base}/1/after")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(after.content))

    for missing in (f"{base}/9/after", f"{base}/1/sideways", "/api/batches/nope/full/1/after"):
        assert c.get(missing).status_code == 404, missing


def test_images_above_the_pixel_bound_are_refused_with_the_reason(upscaled, monkeypatch):
    from retouch.web import results

    web, batch_id, _ = upscaled
    monkeypatch.setattr(results, "FULL_VIEW_MAX_PIXELS", 500_000)
    refused = web.client.get(f"/api/batches/{batch_id}/full/1/after")
    assert refused.status_code == 413
    detail = refused.json()["detail"]
    assert detail.startswith("chelsea.png: the after image is 902x600 = 0.5 MP")
    assert "0.5 MP the full-size view shows" in detail and "download" in detail
    # The input (451x300) is within the bound.
    assert web.client.get(f"/api/batches/{batch_id}/full/1/before").status_code == 200


def test_the_token_and_the_source_roots_guard_the_full_size_images(serve, tmp_path, monkeypatch):
    from retouch.lib.settings import get_settings, reload_settings
    from retouch.web.runner import Runner

    photos = tmp_path / "photos"
    monkeypatch.setenv("RETOUCH_WEB_SOURCE_ROOTS", json.dumps([str(photos)]))
    reload_settings()
    root = get_settings().home / "web" / "batches"
    jpeg = (SAMPLES / "coffee.jpg").read_bytes()
    batch_id = stored_batch(
        root, {"coffee.jpg": jpeg}, inputs={"coffee.jpg": jpeg}, source=str(photos)
    )
    web = serve(runner=Runner(root, max_running=0), token="tok-9")
    c = web.client
    url = f"/api/batches/{batch_id}/full/1/before"
    assert c.get(url).status_code == 401
    assert c.get(url, params={"token": "wrong"}).status_code == 401
    shown = c.get(url, params={"token": "tok-9"})
    assert shown.status_code == 200 and shown.content == jpeg
    # The folder is no longer one the server may read: its files are not served any more.
    monkeypatch.setenv("RETOUCH_WEB_SOURCE_ROOTS", json.dumps([str(tmp_path / "elsewhere")]))
    reload_settings()
    refused = c.get(url, headers={"Authorization": "Bearer tok-9"})
    assert refused.status_code == 400
    assert "RETOUCH_WEB_SOURCE_ROOTS" in refused.json()["detail"]
