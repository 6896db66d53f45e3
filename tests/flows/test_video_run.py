"""`retouch run` on folders holding videos beside images: frame-exact, audio kept, enhanced,
delivered in the ZIP and manifest; hostile videos each a per-file outcome."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from tests.video_clips import (
    audio_spans,
    colour_tags,
    first_frame,
    frame_times,
    make_audio_only,
    make_clip,
    make_flat_clip,
    make_zero_frames,
)


def _photo(path: Path, seed: int, w: int = 64, h: int = 48) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], axis=2)
    arr = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, "JPEG", quality=90)
    path.write_bytes(buf.getvalue())


def _run(src: Path, dest: Path) -> tuple[int, str, dict]:
    from retouch.cli.main import app

    result = CliRunner().invoke(app, ["run", str(src), "--preset", "quick", "--out", str(dest)])
    manifest = json.loads((dest / "manifest.json").read_text())
    return result.exit_code, result.output, manifest


def _frames(path: Path) -> list[tuple[Fraction, np.ndarray]]:
    """Every frame of a video file: its time and its pixels (HxWx3 BGR)."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        return [
            (Fraction(f.pts) * vs.time_base, f.to_ndarray(format="bgr24")) for f in c.decode(vs)
        ]


def _preview_clips(report: str, tmp_path: Path) -> dict[str, Path]:
    """The preview clips the report embeds, by the name of the video whose section holds
    each (written to files to be decoded)."""
    clips = {}
    for section in report.split('<section class="image')[1:]:
        name = html.unescape(re.search(r"<h3>(.*?)</h3>", section).group(1))
        found = re.findall(
            r'<video controls loop muted playsinline[^>]*src="data:video/mp4;base64,([^"]+)"',
            section,
        )
        if found:
            assert len(found) == 1
            clips[name] = tmp_path / f"preview-{name}.mp4"
            clips[name].write_bytes(base64.b64decode(found[0]))
    return clips


def _unzip(dest: Path, out: Path) -> list[str]:
    with zipfile.ZipFile(dest / "results.zip") as zf:
        assert zf.testzip() is None
        zf.extractall(out)
        return sorted(zf.namelist())


def test_run_on_a_vfr_clip_with_audio_and_two_images(prefect_server, tmp_path):
    src = tmp_path / "shoot"
    src.mkdir()
    clip = src / "party.mp4"
    times = make_clip(clip)  # 14 frames at irregular intervals, AAC sound
    _photo(src / "a.jpg", 1)
    _photo(src / "b.jpg", 2)

    code, output, manifest = _run(src, tmp_path / "out")
    assert code == 0, output
    names = _unzip(tmp_path / "out", tmp_path / "got")
    assert names == ["a.jpg", "b.jpg", "party.mp4"]

    got = tmp_path / "got" / "party.mp4"
    assert frame_times(got) == times  # frame count and every timestamp, exactly
    assert len(audio_spans(got)) == 1
    assert audio_spans(got) == audio_spans(clip)  # audio copied: the same duration
    assert first_frame(got).shape == (64, 96, 3)  # enhanced: x2

    by_name = {img["name"]: img for img in manifest["images"]}
    video = by_name["party.mp4"]
    assert video["status"] == "ok"
    assert video["input"]["kind"] == "video" and video["input"]["vfr"] is True
    assert video["input"]["frames"] == len(times)
    assert video["output"]["frames"] == len(times)
    assert (video["output"]["width"], video["output"]["height"]) == (96, 64)
    assert video["output_name"] == "party.mp4"
    assert video["outputs"][0]["sha256"] == hashlib.sha256(got.read_bytes()).hexdigest()
    assert video["model_calls"] > 0  # the compact x2 model ran on the frames
    # Review on sampled frames, said so; the image review is untouched.
    assert len(video["scores"]["frames"]) >= 2
    assert any(p.startswith("review: ") for p in video["problems"])
    # The temporal check measured each sample and found the steady x2 steady.
    assert all(f["change_after"] is not None for f in video["scores"]["frames"][:-1])
    assert not any(p.startswith("flicker") for p in video["problems"])
    # The report shows each sampled moment as a before/after slider with its time.
    report = (tmp_path / "out" / "report.html").read_text()
    assert "Moments of the clip" in report
    moments = video["scores"]["frames"]
    assert report.count('<figure class="moment">') == len(moments)
    for frame in moments:
        assert f"at {frame['time']:.2f} s · score" in report
    # Under the moments, a short before/after clip: every frame of this short clip, at the
    # source's frame times, the source on the left and the result (reduced) on the right.
    clips = _preview_clips(report, tmp_path)
    assert set(clips) == {"party.mp4"}
    info = video["scores"]["preview_clip"]
    assert (info["width"], info["height"], info["frames"]) == (96, 32, len(times))
    assert info["start"] == 0 and info["end"] == pytest.approx(video["input"]["duration"])
    assert "Before | After · 0.00–" in report
    shown = _frames(clips["party.mp4"])
    assert [t for t, _ in shown] == times
    for (_t, picture), (_ts, source), (_tr, result) in zip(
        shown, _frames(clip), _frames(got), strict=True
    ):
        assert picture.shape == (32, 96, 3)
        reduced = cv2.resize(result, (48, 32), interpolation=cv2.INTER_AREA)
        # Within what H.264 at the preview's quality changes in frames this small.
        assert np.abs(picture[:, :48].astype(int) - source).mean() < 12
        assert np.abs(picture[:, 48:].astype(int) - reduced).mean() < 12
    assert "frames" not in by_name["a.jpg"]["scores"]
    for name in ("a.jpg", "b.jpg"):
        with PILImage.open(tmp_path / "got" / name) as im:
            assert im.size == (128, 96)
    report = (tmp_path / "out" / "report.html").read_text()
    assert "party.mp4" in report

    # The same command again: the video's result is reused, byte for byte.
    code, output, again = _run(src, tmp_path / "out2")
    assert code == 0, output
    assert again["summary"]["reused"] == 3
    video2 = {img["name"]: img for img in again["images"]}["party.mp4"]
    assert video2["outputs"][0]["sha256"] == video["outputs"][0]["sha256"]
    assert video2["model_calls"] == 0


def test_hostile_videos_are_each_a_per_file_outcome(prefect_server, tmp_path):
    src = tmp_path / "mixed"
    src.mkdir()
    make_audio_only(src / "voice.mp4")
    whole = tmp_path / "whole.mp4"
    make_clip(whole, frames=40, width=64, height=48)
    data = whole.read_bytes()
    (src / "cut.mp4").write_bytes(data[: len(data) // 2])
    (src / "empty.mp4").write_bytes(b"")
    make_zero_frames(src / "nothing.mkv")
    make_clip(src / "still.mp4", frames=1)
    make_clip(src / "odd.mov", width=47, height=33, frames=5, codec="mjpeg", pix_fmt="yuvj420p")
    _photo(src / "photo.jpg", 3)

    code, output, manifest = _run(src, tmp_path / "out")
    assert code == 2, output
    by_name = {img["name"]: img for img in manifest["images"]}
    failed = {n: img["reason"] for n, img in by_name.items() if img["status"] == "failed"}
    assert set(failed) == {"voice.mp4", "cut.mp4", "empty.mp4", "nothing.mkv"}
    assert failed["voice.mp4"] == "no video stream (it holds only audio)"
    assert "truncated" in failed["cut.mp4"] or "corrupt" in failed["cut.mp4"]
    assert failed["empty.mp4"] == "empty file (0 bytes)"
    assert "zero-length clip" in failed["nothing.mkv"]
    for name in failed:
        assert name in output

    names = _unzip(tmp_path / "out", tmp_path / "got")
    assert names == ["odd.mov", "photo.jpg", "still.mp4"]
    # A one-frame clip is reviewed like the others, without a preview clip and without error.
    still = by_name["still.mp4"]
    assert still["scores"]["score"] is not None and "preview_clip" not in still["scores"]
    assert not any(p.startswith(("preview clip", "review failed")) for p in still["problems"])
    report = (tmp_path / "out" / "report.html").read_text()
    assert set(_preview_clips(report, tmp_path)) == {"odd.mov"}
    assert len(frame_times(tmp_path / "got" / "still.mp4")) == 1
    assert first_frame(tmp_path / "got" / "odd.mov").shape == (66, 94, 3)  # 47x33, x2
    assert len(frame_times(tmp_path / "got" / "odd.mov")) == 5


def test_hdr_full_range_and_too_big_videos_in_one_batch(prefect_server, tmp_path, monkeypatch):
    from retouch.lib.settings import reload_settings

    # The quick preset doubles every side: 48x32 -> 96x64 (6144 pixels) fits under the
    # limit, 64x48 -> 128x96 (12288) does not; the inputs all fit.
    monkeypatch.setenv("RETOUCH_PIXEL_LIMIT", "8000")
    reload_settings()
    src = tmp_path / "mixed"
    src.mkdir()
    orange = (40, 200, 235)
    make_flat_clip(src / "hdr.mkv", orange, matrix=9, full=False, primaries=9, transfer=16,
                   bits=10, width=48, height=32)  # fmt: skip
    make_flat_clip(src / "full.mp4", orange, matrix=1, full=True, primaries=1, transfer=1,
                   width=48, height=32)  # fmt: skip
    make_clip(src / "big.mp4", width=64, height=48, frames=3)
    _photo(src / "photo.jpg", 4, w=32, h=24)

    code, output, manifest = _run(src, tmp_path / "out")
    assert code == 2, output
    by_name = {img["name"]: img for img in manifest["images"]}
    failed = {n: img["reason"] for n, img in by_name.items() if img["status"] == "failed"}
    assert failed == {
        "big.mp4": "big.mp4: output frames of 128x96 (from 64x48) are 12288 pixels, over the "
        "pixel limit of 8000 (RETOUCH_PIXEL_LIMIT; raise it where the memory allows); add a "
        "fit step (max_side) or upscale less"
    }
    assert by_name["big.mp4"]["failed_phase"] == "process"
    assert _unzip(tmp_path / "out", tmp_path / "got") == ["full.mp4", "hdr.mkv", "photo.jpg"]

    hdr = by_name["hdr.mkv"]
    assert hdr["input"]["bit_depth"] == 10
    assert any(p.startswith("10-bit video (yuv420p10le) processed and encoded in 8 bits")
               for p in hdr["problems"])  # fmt: skip
    assert any(p.startswith("HDR video (PQ, smpte2084 transfer, bt2020 primaries)")
               for p in hdr["problems"])  # fmt: skip
    pq = {"range": "tv", "matrix": "bt2020nc", "primaries": "bt2020", "transfer": "smpte2084"}
    assert hdr["input"]["colour"] == pq and hdr["output"]["colour"] == pq
    got = tmp_path / "got" / "hdr.mkv"
    assert colour_tags(got) == {"range": 1, "matrix": 9, "primaries": 9, "transfer": 16}
    assert first_frame(got).shape == (64, 96, 3) and len(frame_times(got)) == 3

    full = by_name["full.mp4"]
    sdr = {"range": "pc", "matrix": "bt709", "primaries": "bt709", "transfer": "bt709"}
    assert full["input"]["colour"] == sdr and full["output"]["colour"] == sdr
    assert colour_tags(tmp_path / "got" / "full.mp4") == {
        "range": 2, "matrix": 1, "primaries": 1, "transfer": 1
    }  # fmt: skip
    assert not any("HDR" in p or "bit" in p for p in full["problems"])


def test_nvenc_asked_for_where_it_does_not_open_fails_the_video_only(prefect_server, tmp_path):
    from retouch.cli.main import app
    from retouch.lib.video import media

    refusal = media.nvenc_refusal("h264")
    if refusal is None:
        import pytest

        pytest.skip("NVENC opens on this machine")
    src = tmp_path / "src"
    src.mkdir()
    make_clip(src / "clip.mp4", frames=6)
    _photo(src / "photo.jpg", 5)
    dest = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["run", str(src), "--preset", "quick", "--set", "export.video.encoder=nvenc",
         "--out", str(dest)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    by_name = {i["name"]: i for i in json.loads((dest / "manifest.json").read_text())["images"]}
    assert by_name["photo.jpg"]["status"] == "ok"
    assert by_name["clip.mp4"]["status"] == "failed"
    assert by_name["clip.mp4"]["reason"].startswith("export.video.encoder=nvenc: h264_nvenc")
