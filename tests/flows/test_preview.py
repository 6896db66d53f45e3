"""`retouch preview` and `retouch tune`: contact sheets with a score per cell, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from typer.testing import CliRunner

from retouch.cli.main import app
from retouch.lib.quality import preview

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
CELL, LABEL = preview.CELL_SIDE, preview.LABEL_HEIGHT


def test_preview_grid_on_samples_writes_a_sheet_with_three_result_columns(tmp_path):
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(
        app,
        [
            "preview", str(SAMPLES), "--preset", "web-ready", "--sample", "2",
            "--grid", "sharpen.amount=0.2,0.8,1.6", "--out", str(sheet), "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "sheet.json").read_text())
    assert scores["variants"] == [f"sharpen.amount={v}" for v in ("0.2", "0.8", "1.6")]
    assert len(scores["images"]) == 2
    cells = scores["cells"]
    assert len(cells) == 6 and all(0 <= c["score"] <= 100 and c["error"] is None for c in cells)
    with PILImage.open(sheet) as im:
        # one row per sampled image: the original, then one column per grid value
        assert im.size == (4 * CELL, 2 * (CELL + LABEL))
        arr = np.asarray(im.convert("RGB"))
    # The three result cells of a row are different pictures (the parameter did something).
    row = arr[LABEL : LABEL + CELL]
    cols = [row[:, i * CELL : (i + 1) * CELL].astype(int) for i in range(4)]
    assert np.abs(cols[1] - cols[3]).mean() > 0.5


def test_preview_region_and_style_comparison_across_presets(tmp_path):
    sheet = tmp_path / "styles.png"
    result = CliRunner().invoke(
        app,
        [
            "preview", str(SAMPLES / "astronaut.jpg"), "--preset", "web-ready",
            "--preset", "quick", "--region", "0.25,0.1,0.5,0.5", "--out", str(sheet), "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "styles.json").read_text())
    assert data["variants"] == ["web-ready", "quick"] and data["images"] == ["astronaut.jpg"]
    with PILImage.open(sheet) as im:
        assert im.size == (3 * CELL, CELL + LABEL)


def test_preview_bad_grid_and_region_are_clear_errors(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["preview", str(SAMPLES), "--grid", "sharpen.amount=1"])
    assert bad.exit_code == 1 and "at least two values" in bad.output
    bad = runner.invoke(app, ["preview", str(SAMPLES), "--grid", "sharpen.nope=1,2"])
    assert bad.exit_code == 1 and "nope" in bad.output
    bad = runner.invoke(app, ["preview", str(SAMPLES), "--region", "1,2,3"])
    assert bad.exit_code == 1 and "X,Y,W,H" in bad.output
    assert not (tmp_path / "retouch-preview.png").exists()


def test_tune_reports_the_best_value_and_saves_it_as_a_user_preset(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "tune", str(SAMPLES), "--preset", "web-ready", "--sample", "2",
            "--grid", "sharpen.amount=0.3,2.5", "--out", str(tmp_path / "t.png"),
            "--save", "studio-web",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "t.json").read_text())
    best = data["best"]["variant"]
    means = {
        v: np.mean([c["score"] for c in data["cells"] if c["variant"] == v])
        for v in data["variants"]
    }
    assert best == max(means, key=means.get)
    assert f"best: {best}" in result.output
    shown = runner.invoke(app, ["presets", "show", "studio-web"])
    assert shown.exit_code == 0, shown.output
    saved = json.loads(shown.output)
    amount = [s for s in saved["steps"] if s["op"] == "sharpen"][0]["params"]["amount"]
    assert f"sharpen.amount={amount}" == best
    assert "studio-web" in runner.invoke(app, ["presets", "list"]).output


def _synthetic(path: Path, w: int, h: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 200 / w + 20, yy * 200 / h + 20, (xx + yy) * 100 / (w + h) + 60], 2)
    base[(xx // 40 + yy // 40) % 2 == 0] += 25  # edges: detail to keep it from reading blurry
    arr = np.clip(base + rng.normal(0, 1.5, base.shape), 0, 255).astype(np.uint8)
    PILImage.fromarray(arr).save(path, "PNG")


def test_recommend_groups_images_and_run_auto_uses_each_groups_preset(
    prefect_server, tmp_path, monkeypatch
):
    from tests.tiny_models import install_tiny_models

    install_tiny_models(tmp_path / "models", monkeypatch, faces=None)
    src = tmp_path / "in"
    src.mkdir()
    _synthetic(src / "big_1.png", 1200, 900, 1)
    _synthetic(src / "big_2.png", 1100, 850, 2)
    _synthetic(src / "small_1.png", 160, 120, 3)
    (src / "broken.png").write_bytes(b"not an image")
    runner = CliRunner()

    shown = runner.invoke(app, ["recommend", str(src), "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert data["groups"] == {"quick": ["big_1.png", "big_2.png"], "upscale-x4": ["small_1.png"]}
    small = next(i for i in data["images"] if i["name"] == "small_1.png")
    assert any("small image" in t for t in small["tips"])
    broken = next(i for i in data["images"] if i["name"] == "broken.png")
    assert broken["preset"] is None and broken["error"]

    dest = tmp_path / "out"
    result = runner.invoke(app, ["run", str(src), "--auto", "--out", str(dest)])
    assert result.exit_code == 2, result.output  # the unreadable file is reported, not delivered
    quick = json.loads((dest / "quick" / "manifest.json").read_text())
    upscaled = json.loads((dest / "upscale-x4" / "manifest.json").read_text())
    assert quick["recipe"]["name"] == "quick" and upscaled["recipe"]["name"] == "upscale-x4"
    assert sorted(i["name"] for i in quick["images"]) == ["big_1.png", "big_2.png"]
    (only,) = upscaled["images"]
    assert only["name"] == "small_1.png" and only["output"]["width"] == 4 * 160


def test_without_the_weights_recommend_and_run_auto_fall_back_to_a_runnable_preset(
    prefect_server, tmp_path
):
    """Offline with no model files: upscale-x4 would suit the small image, but it can't run
    here; recommend says what it needs and run --auto delivers everything with quick."""
    src = tmp_path / "in"
    src.mkdir()
    _synthetic(src / "big_1.png", 1200, 900, 1)
    _synthetic(src / "small_1.png", 160, 120, 3)
    runner = CliRunner()

    shown = runner.invoke(app, ["recommend", str(src), "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert data["groups"] == {"quick": ["big_1.png", "small_1.png"]}
    (note,) = data["notes"]
    assert note.startswith("upscale-x4 would suit 1 image(s) but cannot run here")
    assert "RealESRGAN_x4plus.pth" in note

    dest = tmp_path / "out"
    result = runner.invoke(app, ["run", str(src), "--auto", "--out", str(dest)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "upscale-x4 would suit 1 image(s)" in result.output
    quick = json.loads((dest / "quick" / "manifest.json").read_text())
    assert sorted(i["name"] for i in quick["images"]) == ["big_1.png", "small_1.png"]
    assert not (dest / "upscale-x4").exists()


def test_presets_save_writes_a_complete_shareable_recipe(tmp_path):
    runner = CliRunner()
    saved = runner.invoke(
        app, ["presets", "save", "studio-soft", "-p", "web-ready", "--set", "sharpen.amount=0.25"]
    )
    assert saved.exit_code == 0, saved.output
    from retouch.lib.recipe import user_preset_dir

    assert "saved preset studio-soft" in saved.output
    path = user_preset_dir() / "studio-soft.json"
    assert path.is_file()
    data = json.loads(path.read_text())
    # every parameter written out, defaults included, so the file stands on its own
    sharpen = [s for s in data["steps"] if s["op"] == "sharpen"][0]["params"]
    assert sharpen["amount"] == 0.25 and "radius" in sharpen and "threshold" in sharpen
    shared = tmp_path / "shared.json"
    shared.write_text(path.read_text())
    again = runner.invoke(app, ["presets", "show", str(shared)])
    assert again.exit_code == 0 and json.loads(again.output)["name"] == "studio-soft"
    clash = runner.invoke(app, ["presets", "save", "quick", "-p", "web-ready"])
    assert clash.exit_code == 1 and "shipped preset" in clash.output
