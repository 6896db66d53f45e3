"""A model error on one image fails (or retries) that image only; the batch goes on."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from retouch.cli.main import app
from retouch.lib.models import loaders
from retouch.lib.models.pool import default_pool
from tests.tiny_models import install_tiny_models

RECIPE = """
name = "oom"
[[steps]]
op = "upscale"
params = { model = "realesr-general-x4v3", tile = %d, tile_pad = 4, pre_pad = 2 }
[export]
format = "png"
"""


class _MemoryHungry:
    """Wraps a network: any input with more than ``limit`` pixels raises like a full GPU."""

    def __init__(self, inner, limit: int, seen: list[tuple[int, int]]):
        self.inner, self.limit, self.seen = inner, limit, seen

    def __call__(self, x):
        h, w = x.shape[-2:]
        self.seen.append((h, w))
        if h * w > self.limit:
            raise RuntimeError(
                f"CUDA out of memory. Tried to allocate {h * w * 4 // 1024} KiB (tile {w}x{h})"
            )
        return self.inner(x)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def hungry_models(tmp_path, monkeypatch):
    install_tiny_models(tmp_path / "models", monkeypatch, faces=None)
    seen: list[tuple[int, int]] = []
    real = loaders.load_realesrganer
    limit = {"pixels": 0}

    def load(*args, **kwargs):
        upsampler = real(*args, **kwargs)
        upsampler.model = _MemoryHungry(upsampler.model, limit["pixels"], seen)
        return upsampler

    monkeypatch.setattr(loaders, "load_realesrganer", load)
    default_pool().clear()
    yield limit, seen
    default_pool().clear()


def _images(folder, sizes):
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name, (w, h) in sizes.items():
        PILImage.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)


def _run(tmp_path, tile: int):
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE % tile)
    dest = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["run", str(tmp_path / "src"), "-p", str(recipe), "-o", str(dest)]
    )
    manifest = json.loads((dest / "manifest.json").read_text())
    with zipfile.ZipFile(dest / "results.zip") as zf:
        sizes = {n: PILImage.open(io.BytesIO(zf.read(n))).size for n in zf.namelist()}
    return result, {i["name"]: i for i in manifest["images"]}, sizes


def test_out_of_memory_on_a_big_image_is_retried_with_smaller_tiles(
    prefect_server, tmp_path, hungry_models
):
    limit, seen = hungry_models
    # 150x150 (154x154 pre-padded) is too big whole; 75 px tiles with their overlap fit.
    limit["pixels"] = 100 * 100
    _images(
        tmp_path / "src", {"big.png": (150, 150), "small1.png": (40, 30), "small2.png": (30, 40)}
    )
    result, by_name, sizes = _run(tmp_path, tile=0)
    assert result.exit_code == 0, result.output
    assert sizes == {"big.png": (600, 600), "small1.png": (160, 120), "small2.png": (120, 160)}
    assert all(img["model_calls"] == 1 for img in by_name.values())
    # The big image really was refused whole, then run in tiles that fit (several tiles
    # may share one forward pass, so count passes from the last refusal, not from the end).
    refused = [i for i, (h, w) in enumerate(seen) if h * w > limit["pixels"]]
    assert refused and all(h * w <= limit["pixels"] for h, w in seen[refused[-1] + 1 :])
    assert any(h < 150 and w < 150 and h * w > 44 * 44 for h, w in seen[refused[-1] + 1 :])


def test_out_of_memory_even_on_small_tiles_fails_that_image_only(
    prefect_server, tmp_path, hungry_models
):
    limit, _seen = hungry_models
    # 32 px tiles with their 4 px overlap (40x40) don't fit; the small image (16x16 after
    # mirroring, 20x20 with pre-padding) does.
    limit["pixels"] = 30 * 30
    _images(tmp_path / "src", {"big.png": (130, 90), "small.png": (16, 12)})
    result, by_name, sizes = _run(tmp_path, tile=64)
    assert result.exit_code == 2, result.output
    assert sizes == {"small.png": (64, 48)}
    big = by_name["big.png"]
    assert big["status"] == "failed" and big["failed_phase"] == "process"
    assert big["reason"].startswith(
        "step 1 (upscale): out of memory upscaling 130x90 with 32 px tiles"
    )
    assert "CUDA out of memory" in big["reason"] and "smaller model" in big["reason"]
    assert by_name["small.png"]["status"] == "ok"
