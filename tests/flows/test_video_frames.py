"""`retouch run ... --set export.video.container=frames`: a video delivered as an image
sequence (numbered frames as processed, frames.csv with every frame's source time, the audio
beside them), and a bad frames format refused before any work."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from typer.testing import CliRunner

from tests.video_clips import audio_spans, make_clip


def _run(src: Path, dest: Path, *sets: str) -> tuple[int, str]:
    from retouch.cli.main import app

    args = ["run", str(src), "--preset", "quick", "--out", str(dest)]
    for value in sets:
        args += ["--set", value]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def test_a_vfr_clip_with_audio_is_delivered_as_numbered_frames_with_times_and_audio(
    prefect_server, tmp_path
):
    src = tmp_path / "shoot"
    src.mkdir()
    clip = src / "party.mp4"
    times = make_clip(clip)  # 14 frames at irregular intervals, AAC sound
    PILImage.fromarray(np.full((24, 32, 3), 120, np.uint8)).save(src / "a.jpg", quality=90)

    code, output = _run(src, tmp_path / "out", "export.video.container=frames")
    assert code == 0, output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    with zipfile.ZipFile(tmp_path / "out" / "results.zip") as zf:
        assert zf.testzip() is None
        names = sorted(zf.namelist())
        zf.extractall(tmp_path / "got")
    frames = [f"party/party_{i:06d}.png" for i in range(1, len(times) + 1)]
    assert names == sorted(["a.jpg", *frames, "party/frames.csv", "party/audio.m4a"])

    folder = tmp_path / "got" / "party"
    for name in frames:  # enhanced: x2 of 48x32, 8-bit RGB
        with PILImage.open(tmp_path / "got" / name) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", (96, 64))

    with open(folder / "frames.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == [Path(n).name for n in frames]
    assert [int(r["index"]) for r in rows] == list(range(1, len(times) + 1))
    exact = [Fraction(int(r["pts"])) * Fraction(r["time_base"]) for r in rows]
    assert exact == times  # every frame's source time, exactly
    for row, t in zip(rows, times, strict=True):
        assert abs(Fraction(row["time"]) - t) < Fraction(1, 10**9)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    for row, gap in zip(rows, gaps, strict=False):
        assert abs(Fraction(row["duration"]) - gap) < Fraction(1, 10**9)

    assert audio_spans(folder / "audio.m4a") == audio_spans(clip)  # copied: same length

    video = {img["name"]: img for img in manifest["images"]}["party.mp4"]
    assert video["status"] == "ok" and video["output_name"] == "party"
    out = video["outputs"][0]
    files = sorted(p for p in folder.iterdir())
    assert (out["kind"], out["folder"], out["format"]) == ("frames", "party", "png")
    assert (out["frames"], out["files"], out["audio"]) == (len(times), len(files), ["audio.m4a"])
    assert out["bytes"] == sum(p.stat().st_size for p in files)
    assert (out["width"], out["height"]) == (96, 64)
    assert video["output"]["kind"] == "frames" and video["output"]["frames"] == len(times)
    assert "codec" not in video["output"]
    assert video["model_calls"] > 0

    # The same command again: the stored frames are reused, the same files delivered.
    code, output = _run(src, tmp_path / "out2", "export.video.container=frames")
    assert code == 0, output
    again = json.loads((tmp_path / "out2" / "manifest.json").read_text())
    video2 = {img["name"]: img for img in again["images"]}["party.mp4"]
    assert video2["model_calls"] == 0 and video2["reused"] is True
    assert video2["outputs"][0]["sha256"] == out["sha256"]
    with zipfile.ZipFile(tmp_path / "out2" / "results.zip") as zf:
        first = hashlib.sha256(zf.read(frames[0])).hexdigest()
    assert first == hashlib.sha256((tmp_path / "got" / frames[0]).read_bytes()).hexdigest()

    # Another frame format from the same stored frames: JPEG, nothing recomputed.
    code, output = _run(
        src, tmp_path / "out3", "export.video.container=frames", "export.video.frames_format=jpg"
    )
    assert code == 0, output
    again = json.loads((tmp_path / "out3" / "manifest.json").read_text())
    video3 = {img["name"]: img for img in again["images"]}["party.mp4"]
    assert video3["model_calls"] == 0 and video3["outputs"][0]["format"] == "jpg"
    with zipfile.ZipFile(tmp_path / "out3" / "results.zip") as zf:
        jpgs = [n for n in zf.namelist() if n.endswith(".jpg") and n.startswith("party/")]
        assert len(jpgs) == len(times)
        with PILImage.open(io.BytesIO(zf.read("party/party_000001.jpg"))) as im:
            assert (im.format, im.size) == ("JPEG", (96, 64))


def test_a_bad_frames_format_is_refused_naming_the_setting_before_any_work(
    prefect_server, tmp_path
):
    src = tmp_path / "clips"
    src.mkdir()
    make_clip(src / "party.mp4", frames=3)

    code, output = _run(
        src, tmp_path / "out", "export.video.container=frames", "export.video.frames_format=gif"
    )
    assert code == 1, output
    assert "export.video.frames_format" in output
    assert "'png', 'jpg' or 'tiff'" in output
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not (tmp_path / "out" / "results.zip").exists()
