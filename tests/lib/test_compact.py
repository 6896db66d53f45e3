"""retouch's own compact upscaler: the shipped weight files, how they resolve, and that the
x2 model really upscales better than bicubic on a photo it was not trained on."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from typer.testing import CliRunner

from retouch.lib.errors import ModelChecksumError, ModelError, ModelNotAvailableError
from retouch.lib.models import fetch, specs
from retouch.lib.models.loaders import load_realesrganer
from retouch.lib.settings import reload_settings
from tests.tiny_models import seeded_zero  # noqa: F401  (autouse fixture "_seeded")

NAMES = ("retouch-compact-x2", "retouch-compact-x4")
MAX_BYTES = 2_000_000


@pytest.mark.parametrize("name", NAMES)
def test_shipped_file_exists_is_small_and_matches_the_registry(name):
    spec = specs.get_spec(name)
    path = fetch.BUNDLED_DIR / spec.filename
    assert spec.bundled and path.is_file()
    data = path.read_bytes()
    assert len(data) < MAX_BYTES
    assert len(data) == spec.size
    assert hashlib.sha256(data).hexdigest() == spec.sha256


@pytest.mark.parametrize("name", NAMES)
def test_loads_through_realesrganer_offline_without_a_model_dir(name, tmp_path, monkeypatch):
    # An empty model dir, no mirror, offline: a bundled model still resolves and runs.
    monkeypatch.setenv("RETOUCH_MODEL_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("RETOUCH_OFFLINE", "1")
    monkeypatch.delenv("RETOUCH_MODEL_MIRROR", raising=False)
    reload_settings()
    spec = specs.get_spec(name)
    assert fetch.resolve(name) == fetch.BUNDLED_DIR / spec.filename
    upsampler = load_realesrganer(name, device="cpu")
    assert type(upsampler).__name__ == "RealESRGANer" and upsampler.scale == spec.scale
    bgr = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    out, mode = upsampler.enhance(bgr, outscale=spec.scale)
    assert out.shape == (20 * spec.scale, 24 * spec.scale, 3) and out.dtype == np.uint8
    assert mode == "RGB"
    assert not (tmp_path / "empty").exists()  # nothing was fetched or copied


def test_models_list_shows_the_bundled_models_as_present(tmp_path, monkeypatch):
    from retouch.cli.main import app

    monkeypatch.setenv("RETOUCH_MODEL_DIR", str(tmp_path / "empty"))
    reload_settings()
    listing = CliRunner().invoke(app, ["models", "list"], terminal_width=250)
    assert listing.exit_code == 0, listing.output
    for name in NAMES:
        row = [line for line in listing.output.splitlines() if name in line][0]
        assert " bundled " in row
    st = fetch.status("retouch-compact-x2")
    assert st["bundled"] is True and st["present"] is True and st["verified"] is True


def test_a_tampered_bundled_file_is_refused_with_what_to_do(tmp_path, monkeypatch):
    spec = specs.get_spec("retouch-compact-x2")
    folder = tmp_path / "weights"
    folder.mkdir()
    data = bytearray((fetch.BUNDLED_DIR / spec.filename).read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes: only the sha256 can tell
    (folder / spec.filename).write_bytes(bytes(data))
    monkeypatch.setattr(fetch, "BUNDLED_DIR", folder)
    with pytest.raises(ModelChecksumError) as err:
        fetch.resolve(spec.name)
    text = str(err.value)
    assert spec.filename in text and spec.sha256 in text and "reinstall retouch" in text


def test_a_missing_bundled_file_says_the_install_is_incomplete(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "BUNDLED_DIR", tmp_path / "weights")
    with pytest.raises(ModelNotAvailableError) as err:
        fetch.resolve("retouch-compact-x4")
    assert "retouch-compact-x4.pth" in str(err.value) and "Reinstall retouch" in str(err.value)


def test_importing_over_a_bundled_model_is_refused(tmp_path):
    other = tmp_path / "mine.pth"
    shutil.copy(fetch.BUNDLED_DIR / "retouch-compact-x2.pth", other)
    with pytest.raises(ModelError, match="ships with retouch"):
        fetch.import_file("retouch-compact-x2", other)


def test_registry_shape_is_small():
    for name in NAMES:
        spec = specs.get_spec(name)
        assert spec.arch == "SRVGGNetCompact" and spec.kind == "realesrgan"
        assert spec.arch_kwargs["upscale"] == spec.scale
    assert dataclasses.asdict(specs.get_spec("retouch-compact-x2"))["url"] == ""


def _y(rgb: np.ndarray) -> np.ndarray:
    # BT.601 luma in 16..235, the usual super-resolution convention.
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def _psnr_y(a: np.ndarray, b: np.ndarray, border: int) -> float:
    ya = _y(a)[border:-border, border:-border]
    yb = _y(b)[border:-border, border:-border]
    return float(10 * np.log10(255.0**2 / np.mean((ya - yb) ** 2)))


def test_x2_beats_bicubic_on_a_held_out_photo():
    skimage_data = pytest.importorskip("skimage.data")
    # The motorcycle of the stereo pair is held out: the training script never sees it.
    left = np.asarray(skimage_data.stereo_motorcycle()[0])
    hr = np.ascontiguousarray(left[200:328, 300:428])  # 128x128 RGB uint8, engine detail
    lr = np.asarray(PILImage.fromarray(hr).resize((64, 64), PILImage.Resampling.BICUBIC))
    bicubic = np.asarray(PILImage.fromarray(lr).resize((128, 128), PILImage.Resampling.BICUBIC))
    upsampler = load_realesrganer("retouch-compact-x2", device="cpu")
    out_bgr, _ = upsampler.enhance(np.ascontiguousarray(lr[..., ::-1]), outscale=2)
    model = out_bgr[..., ::-1]
    gain = _psnr_y(hr, model, 2) - _psnr_y(hr, bicubic, 2)
    assert gain > 0.5, f"x2 model gains only {gain:.2f} dB over bicubic"


def test_quick_preset_enlarges_with_the_bundled_x2_model():
    import tomllib
    from pathlib import Path

    import retouch.lib

    preset = Path(retouch.lib.__file__).parent / "presets" / "quick.toml"
    steps = tomllib.loads(preset.read_text())["steps"]
    upscale = [s for s in steps if s["op"] == "upscale"]
    assert [s["params"]["model"] for s in upscale] == ["retouch-compact-x2"]
    assert specs.get_spec("retouch-compact-x2").bundled  # works offline, nothing to fetch


REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_fine_tune_starts_from_init_and_logs_the_target_filter(tmp_path):
    # lr 0: the network never moves, so the written average must equal the starting file;
    # a fine-tune that silently started from random weights would differ everywhere.
    import json
    import subprocess
    import sys

    start = fetch.BUNDLED_DIR / "retouch-compact-x2.pth"
    out = tmp_path / "tuned.pth"
    cmd = [sys.executable, "-m", "training.train_compact", "--scale", "2", "--init", str(start)]
    cmd += ["--iters", "1", "--batch", "1", "--lr", "0", "--target-sharpen", "-0.5"]
    cmd += ["--out", str(out)]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=300)
    before = torch.load(start, weights_only=True)["params_ema"]
    after = torch.load(out, weights_only=True)["params_ema"]
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.allclose(value, after[key], atol=1e-7), key
    log = json.loads(out.with_suffix(".json").read_text())
    assert log["init"] == str(start) and log["target_sharpen"] == -0.5


def test_target_filter_softens_or_sharpens_and_keeps_range(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from training.train_compact import sharpen_targets

    rng = np.random.default_rng(0)
    hr = rng.random((2, 3, 24, 24), dtype=np.float32)  # NxCxHxW RGB 0..1, busy

    def detail(x: np.ndarray) -> float:
        return float(np.abs(np.diff(x, axis=-1)).mean())

    softer, sharper = sharpen_targets(hr, -0.5, 1.0), sharpen_targets(hr, 0.5, 1.0)
    assert softer.shape == sharper.shape == hr.shape and softer.dtype == np.float32
    assert detail(softer) < detail(hr) < detail(sharper)
    assert sharper.min() >= 0.0 and sharper.max() <= 1.0
    np.testing.assert_allclose(sharpen_targets(hr, 0.0, 1.0), hr, atol=1e-6)
