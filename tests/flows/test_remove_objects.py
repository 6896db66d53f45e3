"""The remove-objects preset end to end: `retouch run --preset remove-objects --masks ...`
with random full-size big-lama weights in the model dir (tests/lama_models.py)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image as PILImage
from typer.testing import CliRunner

from tests import lama_models

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
TOL = 2  # /255 between the run's fill and spandrel's (CPU float differences)


def _photo(seed: int, h: int = 80, w: int = 96) -> np.ndarray:
    """HxWx3 RGB uint8 with a red block (the object to remove)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([180 - xx, 60 + yy * 1.5, 40 + xx], axis=2) + rng.normal(0, 12, (h, w, 3))
    img[20:40, 30:60] = (255, 0, 0)
    return np.clip(img, 0, 255).astype(np.uint8)


def _mask(h: int = 80, w: int = 96) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[20:40, 30:60] = 255
    return m


def _grown(mask: np.ndarray) -> np.ndarray:
    """The mask as the preset grows it (dilate=2: a 5x5 ellipse)."""
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))


def _spandrel(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A direct spandrel call on the whole image (HxWx3 RGB float 0..255)."""
    x = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)[None]
    m = torch.from_numpy((mask > 0).astype(np.float32))[None, None]
    with torch.inference_mode():
        out = lama_models.descriptor()(x, m)
    return out[0].permute(1, 2, 0).numpy() * 255


def _results(dest: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(dest / "results.zip") as zf:
        return {
            n: np.asarray(PILImage.open(io.BytesIO(zf.read(n))).convert("RGB"))
            for n in zf.namelist()
        }


def _install():
    from retouch.lib.settings import get_settings

    lama_models.install_big_lama(get_settings().resolved_model_dir())


def test_without_big_lama_remove_objects_stops_at_once_saying_how_to_provide_it(tmp_path):
    from retouch.cli.main import app

    masks = tmp_path / "masks"
    masks.mkdir()
    dest = tmp_path / "d"
    result = CliRunner().invoke(
        app,
        ["run", str(SAMPLES), "--preset", "remove-objects", "--masks", str(masks), "-o", str(dest)],
    )
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "big-lama" in text and "retouch models pull big-lama" in text
    assert "retouch models import big-lama" in text
    assert not dest.exists()


def test_remove_objects_equals_spandrel_and_each_bad_mask_fails_only_its_image(
    prefect_server, tmp_path
):
    """a: mask in --masks (its fill equals spandrel's whole-image call: at 96x80 the crop
    with its 128 px margin is the whole image); b: an unreadable mask; c: no mask; d: its
    mask beside it as d_mask.png (not processed as an image)."""
    from retouch.cli.main import app

    _install()
    src, masks = tmp_path / "photos", tmp_path / "masks"
    src.mkdir()
    masks.mkdir()
    photos = {name: _photo(i) for i, name in enumerate("abcd")}
    for name, px in photos.items():
        PILImage.fromarray(px).save(src / f"{name}.png")
    PILImage.fromarray(_mask()).save(masks / "a.png")
    (masks / "b.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    beside = np.zeros((80, 96), np.uint8)
    beside[50:70, 10:40] = 255
    PILImage.fromarray(beside).save(src / "d_mask.png")

    dest = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["run", str(src), "-p", "remove-objects", "--masks", str(masks), "-o", str(dest)]
    )
    assert result.exit_code == 2, result.output
    manifest = json.loads((dest / "manifest.json").read_text())
    by_name = {img["name"]: img for img in manifest["images"]}
    assert sorted(by_name) == ["a.png", "b.png", "c.png", "d.png"]
    assert by_name["a.png"]["status"] == "ok" and by_name["d.png"]["status"] == "ok"
    assert by_name["b.png"]["status"] == "failed"
    assert str(masks / "b.png") in by_name["b.png"]["reason"]
    assert "unreadable" in by_name["b.png"]["reason"]
    assert by_name["c.png"]["status"] == "failed"
    assert "no inpaint mask for stem 'c'" in by_name["c.png"]["reason"]

    out = _results(dest)
    grown = _grown(_mask()) > 0
    a, ref = out["a.png"].astype(np.float64), _spandrel(photos["a"], _grown(_mask()))
    assert np.abs(a[grown] - ref[grown]).max() <= TOL
    assert np.array_equal(out["a.png"][~grown], photos["a"][~grown])
    assert np.abs(a[grown] - photos["a"][grown]).mean() > 20  # the block was replaced
    d_area = _grown(beside) > 0
    assert np.array_equal(out["d.png"][~d_area], photos["d"][~d_area])
    assert not np.array_equal(out["d.png"][d_area], photos["d"][d_area])


def test_one_mask_file_serves_every_image(prefect_server, tmp_path):
    from retouch.cli.main import app

    _install()
    src = tmp_path / "photos"
    src.mkdir()
    photos = {name: _photo(i) for i, name in enumerate(("x", "y"))}
    for name, px in photos.items():
        PILImage.fromarray(px).save(src / f"{name}.png")
    logo = tmp_path / "logo-mask.png"
    PILImage.fromarray(_mask()).save(logo)
    dest = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["run", str(src), "-p", "remove-objects", "--masks", str(logo), "-o", str(dest)]
    )
    assert result.exit_code == 0, result.output
    out = _results(dest)
    grown = _grown(_mask()) > 0
    for name, px in photos.items():
        got = out[f"{name}.png"]
        assert np.array_equal(got[~grown], px[~grown])
        assert np.abs(got[grown].astype(int) - px[grown]).mean() > 20
