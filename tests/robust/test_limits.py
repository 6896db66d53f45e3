"""The decompression-bomb guard: a tiny file declaring a huge canvas is rejected from its
header, before any pixel buffer exists, at a limit the user can set."""

from __future__ import annotations

import tracemalloc

from retouch.lib.pipeline import new_record, prepare_one
from retouch.lib.settings import reload_settings
from retouch.lib.sources import SourceItem
from tests.robust.corpus import bomb_png


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
