"""The AI presets end to end: tiny random-weight models on disk -> registry -> pool -> flow."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
from PIL import Image as PILImage
from typer.testing import CliRunner

from tests.tiny_models import install_tiny_models


def _write_images(folder, count, size=(40, 28)):
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(count):
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        PILImage.fromarray(arr).save(folder / f"img{i}.png")


def _zip_sizes(path):
    with zipfile.ZipFile(path) as zf:
        return {n: PILImage.open(io.BytesIO(zf.read(n))).size for n in zf.namelist()}


def test_upscale_preset_runs_the_model_once_per_image_and_export_changes_reuse_it(
    prefect_server, tmp_path, monkeypatch
):
    from retouch.cli.main import app

    install_tiny_models(tmp_path / "models", monkeypatch, faces=None)
    src = tmp_path / "src"
    _write_images(src, 3)

    def run_upscale(dest: str, *overrides: str, json_out: bool = False) -> dict:
        """One `retouch run` of the upscale-x4 preset; returns the run's manifest."""
        args = ["run", str(src), "-p", "upscale-x4", "--out", str(tmp_path / dest)]
        args += ["--json"] if json_out else []
        for item in overrides:
            args += ["--set", item]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / dest / "manifest.json").read_text())

    from retouch.lib.models.pool import default_pool

    default_pool().clear()  # so this run loads the model (and reports the time it took)
    manifest = run_upscale("a", "upscale.tile=0", json_out=True)
    assert _zip_sizes(tmp_path / "a" / "results.zip") == {
        f"img{i}.png": (160, 112) for i in range(3)
    }
    assert [img["model_calls"] for img in manifest["images"]] == [1, 1, 1]
    assert manifest["performance"]["model_load_s"] > 0
    assert manifest["performance"]["model_calls"] == 3

    # Only the export format changes: the stored results are re-encoded, no model runs.
    manifest = run_upscale("b", "upscale.tile=0", "export.format=webp")
    assert [img["model_calls"] for img in manifest["images"]] == [0, 0, 0]
    assert manifest["summary"]["reused"] == 3
    assert manifest["performance"]["model_load_s"] == 0
    assert _zip_sizes(tmp_path / "b" / "results.zip") == {
        f"img{i}.webp": (160, 112) for i in range(3)
    }

    # A different parameter of the model step is a different result: the model runs again.
    manifest = run_upscale("c", "upscale.outscale=2")
    assert [img["model_calls"] for img in manifest["images"]] == [1, 1, 1]
    assert set(_zip_sizes(tmp_path / "c" / "results.zip").values()) == {(80, 56)}


def test_portrait_restore_preset_goes_through_gfpganer(prefect_server, tmp_path, monkeypatch):
    from retouch.cli.main import app

    # The tiny detector reports exactly one face per image (see tests/tiny_models.py).
    install_tiny_models(tmp_path / "models", monkeypatch, faces="one")
    src = tmp_path / "src"
    _write_images(src, 1, size=(64, 64))
    result = CliRunner().invoke(
        app, ["run", str(src), "-p", "portrait-restore", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert _zip_sizes(tmp_path / "o" / "results.zip") == {"img0.jpg": (128, 128)}
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["images"][0]["model_calls"] >= 1
