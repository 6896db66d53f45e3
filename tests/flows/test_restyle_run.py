"""Learned re-drawing end to end: `retouch run --preset anime` and `retouch preview --styles`
with random-weight AnimeGANv2 generators in the model dir (tests/animegan_models.py)."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from typer.testing import CliRunner

from retouch.cli.main import app
from retouch.lib.quality import preview
from tests import animegan_models

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _model_dir():
    from retouch.lib.settings import get_settings

    return get_settings().resolved_model_dir()


def _photos(folder: Path) -> dict[str, np.ndarray]:
    folder.mkdir()
    rng = np.random.default_rng(5)
    out = {}
    for name, (h, w) in {"street.png": (72, 100), "portrait.png": (90, 61)}.items():
        px = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        PILImage.fromarray(px).save(folder / name)
        out[name] = px
    return out


def test_without_weights_anime_stops_at_once_saying_how_to_provide_them(tmp_path):
    src = tmp_path / "photos"
    _photos(src)
    dest = tmp_path / "out"
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["run", str(src), "--preset", "anime", "-o", str(dest)])
    elapsed = time.perf_counter() - started
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "paprika.pt" in text and "retouch models pull animeganv2-paprika" in text
    assert "retouch models import" in text
    assert not dest.exists()
    assert elapsed < 10, elapsed  # before Prefect starts: nothing waits on a server


def test_anime_preset_redraws_every_photo_at_its_size(prefect_server, tmp_path):
    animegan_models.install(_model_dir(), "animeganv2-paprika")
    src, dest = tmp_path / "photos", tmp_path / "out"
    photos = _photos(src)
    result = CliRunner().invoke(
        app, ["run", str(src), "--preset", "anime", "--set", "export.format=png", "-o", str(dest)]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((dest / "manifest.json").read_text())
    assert sorted(i["name"] for i in manifest["images"]) == sorted(photos)
    assert all(i["status"] == "ok" for i in manifest["images"])
    with zipfile.ZipFile(dest / "results.zip") as zf:
        for name, px in photos.items():
            out = np.asarray(PILImage.open(io.BytesIO(zf.read(name))).convert("RGB"))
            assert out.shape == px.shape
            assert np.abs(out.astype(int) - px.astype(int)).mean() > 10


def test_preview_styles_writes_one_comparison_sheet(tmp_path):
    for name in ("animeganv2-paprika", "animeganv2-face-paint-v2"):
        animegan_models.install(_model_dir(), name, seed=len(name))
    sheet = tmp_path / "styles.png"
    result = CliRunner().invoke(
        app,
        [
            "preview", str(SAMPLES / "astronaut.jpg"), "--styles",
            "anime,animeganv2-face-paint-v2,quick", "--max-side", "128",
            "--out", str(sheet), "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "styles.json").read_text())
    assert data["variants"] == ["anime", "animeganv2-face-paint-v2", "quick"]
    assert all(c["error"] is None and c["score"] is not None for c in data["cells"])
    cell, label = preview.CELL_SIDE, preview.LABEL_HEIGHT
    with PILImage.open(sheet) as im:
        assert im.size == (4 * cell, cell + label)  # the original, then one column per style
        row = np.asarray(im.convert("RGB"))[label:]
    cols = [row[:, i * cell : (i + 1) * cell].astype(int) for i in range(4)]
    assert np.abs(cols[1] - cols[2]).mean() > 5  # two styles, two different pictures


def test_preview_styles_refuses_an_unknown_style_naming_the_valid_ones(tmp_path):
    result = CliRunner().invoke(
        app, ["preview", str(SAMPLES / "astronaut.jpg"), "--styles", "anime,watercolour"]
    )
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "'watercolour' is neither a preset nor a re-drawing model" in text
    assert "animeganv2-paprika" in text and "painting-sd" in text


# --------------------------------------------------------------------------- diffusion


def _zip_bytes(dest: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(dest / "results.zip") as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _sd_args(checkpoint: Path) -> list[str]:
    # A tiny random pipeline: a few steps are enough to run the real img2img path.
    return [
        "--preset", "painting-sd", "--set", f"restyle.checkpoint={checkpoint}",
        "--set", "restyle.steps=4", "--set", "restyle.strength=0.5",
        "--set", "export.format=png", "--device", "cpu",
    ]  # fmt: skip


def test_painting_sd_without_a_checkpoint_stops_before_any_work(tmp_path, monkeypatch):
    monkeypatch.delenv("RETOUCH_DIFFUSION_CHECKPOINT", raising=False)
    src = tmp_path / "photos"
    _photos(src)
    result = CliRunner().invoke(
        app, ["run", str(src), "--preset", "painting-sd", "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "needs a Stable Diffusion checkpoint" in text
    assert "--set restyle.checkpoint=PATH" in text and "RETOUCH_DIFFUSION_CHECKPOINT" in text
    missing = tmp_path / "nowhere" / "sd15"
    result = CliRunner().invoke(
        app, ["run", str(src), *_sd_args(missing), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and str(missing) in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()


def test_painting_sd_is_reproducible_and_another_seed_is_a_new_version(prefect_server, tmp_path):
    """Same command twice (the second recomputes: --refresh) gives the same bytes; a
    regeneration with restyle.seed=7 gives other pixels as version 2."""
    from tests import diffusion_models  # imports diffusers: only where it is used

    checkpoint = diffusion_models.make_tiny_pipeline_folder(tmp_path / "sd-tiny")
    src = tmp_path / "photos"
    photos = _photos(src)
    first, second = tmp_path / "first", tmp_path / "second"
    result = CliRunner().invoke(app, ["run", str(src), *_sd_args(checkpoint), "-o", str(first)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "diffusion img2img on a CPU is slow" in text  # said before the run, with an estimate
    result = CliRunner().invoke(
        app, ["run", str(src), *_sd_args(checkpoint), "--refresh", "-o", str(second)]
    )
    assert result.exit_code == 0, result.output
    a, b = _zip_bytes(first), _zip_bytes(second)
    assert sorted(a) == sorted(photos) and a == b
    for name, px in photos.items():
        out = np.asarray(PILImage.open(io.BytesIO(a[name])).convert("RGB"))
        assert out.shape == px.shape and np.abs(out.astype(int) - px.astype(int)).mean() > 5

    run_id = json.loads((second / "manifest.json").read_text())["run_id"]
    result = CliRunner().invoke(
        app,
        ["regenerate", run_id, "--select", "street.png", "--set", "restyle.seed=7", "--keep-worse"],
    )
    assert result.exit_code == 0, result.output
    c = _zip_bytes(second)
    assert c["street.png"] != a["street.png"] and c["portrait.png"] == a["portrait.png"]
    manifest = {i["name"]: i for i in json.loads((second / "manifest.json").read_text())["images"]}
    assert manifest["street.png"]["output"]["version"] == 2


def test_painting_sd_with_a_wrong_controlnet_stops_before_any_work(tmp_path):
    """A controlnet that is not one (here the checkpoint's UNet folder) is refused before the
    run starts, naming the path; ControlNet settings without a controlnet are refused too."""
    from tests import diffusion_models  # imports diffusers: only where it is used

    checkpoint = diffusion_models.make_tiny_pipeline_folder(tmp_path / "sd-tiny")
    src = tmp_path / "photos"
    _photos(src)
    unet = checkpoint / "unet"
    args = [*_sd_args(checkpoint), "--set", f"restyle.controlnet={unet}"]
    result = CliRunner().invoke(app, ["run", str(src), *args, "-o", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert str(unet) in text and "not a ControlNetModel" in text
    args = [*_sd_args(checkpoint), "--set", "restyle.control_scale=0.5"]
    result = CliRunner().invoke(app, ["run", str(src), *args, "-o", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "only apply with a ControlNet" in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()


def test_a_clip_is_redrawn_frame_by_frame_through_the_video_path(prefect_server, tmp_path):
    from tests.video_clips import audio_spans, first_frame, frame_times, make_clip

    animegan_models.install(_model_dir(), "animeganv2-paprika")
    src, dest = tmp_path / "clips", tmp_path / "out"
    src.mkdir()
    clip = src / "walk.mp4"
    times = make_clip(clip)  # variable frame rate, AAC sound
    result = CliRunner().invoke(app, ["run", str(src), "--preset", "anime", "-o", str(dest)])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(dest / "results.zip") as zf:
        zf.extract("walk.mp4", tmp_path / "got")
    got = tmp_path / "got" / "walk.mp4"
    assert frame_times(got) == times and audio_spans(got) == audio_spans(clip)
    before, after = first_frame(clip), first_frame(got)
    assert after.shape == before.shape  # re-drawn at its size
    assert np.abs(after.astype(int) - before.astype(int)).mean() > 10
    (video,) = json.loads((dest / "manifest.json").read_text())["images"]
    assert video["status"] == "ok" and video["model_calls"] > 0
    assert {f["verdict"] for f in video["scores"]["frames"]} <= {"restyled", "worse"}
