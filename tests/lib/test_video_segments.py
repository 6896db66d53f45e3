"""Segments of a video: planned at the clip's key frames, processed and encoded one by one,
joined into one file that keeps every frame time and the audio (real PyAV clips)."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import av
import cv2
import pytest

from retouch.lib.image import Image
from retouch.lib.video import media, segments
from tests.video_clips import VFR_STEPS, audio_spans, frame_times, make_clip

LIMIT = 100_000_000


def _x2(image: Image) -> Image:
    return Image(pixels=cv2.resize(image.pixels, (image.width * 2, image.height * 2)))


def test_plan_cuts_only_at_key_frames_and_holds_every_frame_once():
    tb = Fraction(1, 100)
    pts = list(range(0, 300, 10))  # 30 frames, 0.1 s apart
    keys = [0, 40, 80, 90, 150, 260]
    plan = segments.plan_segments(pts, keys, tb, 0.5)
    # 0.4 s is too short for a cut at 40, 90 is 0.1 s after the cut at 80.
    assert plan == [(None, 80, 8), (80, 150, 7), (150, 260, 11), (260, None, 4)]
    assert sum(n for *_, n in plan) == len(pts)
    for start, _end, _n in plan[1:]:
        assert start in keys
    # No key frame after the first frame, or segments longer than the clip: one segment.
    assert segments.plan_segments(pts, [0], tb, 0.5) == [(None, None, 30)]
    assert segments.plan_segments(pts, keys, tb, 100) == [(None, None, 30)]
    assert segments.plan_segments([], [], tb, 1) == []


@pytest.mark.parametrize("ext", ["mp4", "mkv", "mov"])
def test_segments_joined_keep_every_frame_time_and_the_audio(tmp_path, ext):
    """A VFR clip with B-frames, cut at its key frames into several segments, each encoded
    on its own: the joined file has every source frame at its source time, decodes whole,
    and keeps the audio's length."""
    src = tmp_path / f"vfr.{ext}"
    times = make_clip(src, steps=VFR_STEPS * 3, gop=5, width=64, height=48)
    info = media.probe_video(str(src), src.name, pixel_limit=LIMIT)
    assert len(info.keyframes) >= 6
    plan = segments.plan_segments(info.pts, info.keyframes, info.time_base, 0.25)
    assert len(plan) >= 4
    settings = SimpleNamespace(codec="h264", crf=None, preset=None, container="same")
    enc, _ = media.encoding_for(ext, settings)
    parts = []
    for i, (start, end, frames) in enumerate(plan):
        part = segments.process_segment(
            str(src),
            str(tmp_path / f"seg{i}.{enc.ext}"),
            start_pts=start,
            end_pts=end,
            process=_x2,
            encoding=enc,
            label=src.name,
        )
        assert part.frames == frames
        parts.append(part)
    out = tmp_path / f"out.{enc.ext}"
    segments.join(
        str(src), parts, str(out), enc.muxer, src.name, enc.muxer_options(parts[0].time_base)
    )
    got, out_tb = segments.video_timestamps(str(out), out.name)
    assert segments.check_timestamps(times, got, out_tb) is None
    decoded = frame_times(out)  # every frame decodes, in order
    assert len(decoded) == len(times)
    tick = out_tb if ext == "mkv" else Fraction(0)
    assert all(abs(a - b) <= tick for a, b in zip(decoded, times, strict=True))
    (before,), (after,) = audio_spans(src), audio_spans(out)
    assert abs(before - after) < Fraction(1, 100)
    with av.open(str(out)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (128, 96)


def test_segments_of_a_clip_decoded_twice_give_the_same_bytes(tmp_path):
    """Encoding is deterministic: a segment encoded again (a resumed run) is the same file."""
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=20, gop=5, width=64, height=48)
    info = media.probe_video(str(src), src.name, pixel_limit=LIMIT)
    start, end, _ = segments.plan_segments(info.pts, info.keyframes, info.time_base, 0.2)[1]
    enc, _ = media.encoding_for(
        "mp4", SimpleNamespace(codec="h264", crf=None, preset=None, container="same")
    )
    paths = []
    for n in range(2):
        path = tmp_path / f"seg{n}.mp4"
        segments.process_segment(
            str(src), str(path), start_pts=start, end_pts=end, process=_x2,
            encoding=enc, label=src.name,
        )  # fmt: skip
        paths.append(path.read_bytes())
    assert paths[0] == paths[1]


def test_the_process_bar_shows_a_videos_frames_rate_time_left_and_segment():
    from retouch.cli.output import frames_line
    from retouch.lib.progress import FramesDone

    line = frames_line(
        FramesDone(name="party.mp4", done=120, total=480, fps=12.34, eta_s=29.2, segment=2,
                   segments=5)
    )  # fmt: skip
    assert line == "party.mp4 frame 120/480 · 12.3 fps · ETA 29 s · segment 2/5"
    stored = FramesDone(name="a.mov", done=250, total=300, segment=1, segments=2, reused=True)
    assert frames_line(stored) == "a.mov frame 250/300 · stored · segment 1/2"


def test_flicker_is_the_result_changing_well_beyond_its_source(tmp_path):
    """Frame-to-frame change at sampled moments: a steady x2 keeps the source's, a result
    whose brightness jumps every other frame is flagged."""
    import numpy as np

    from retouch.lib.video.review import sample_frames
    from retouch.lib.video.temporal import flickers, frame_change

    src = tmp_path / "clip.mp4"
    make_clip(src, frames=30, width=64, height=48, audio=None)
    count = {"n": 0}

    def pulsing(image: Image) -> Image:
        count["n"] += 1
        lift = 40 if count["n"] % 2 else 0
        return Image(
            pixels=np.clip(_x2(image).pixels.astype(np.int16) + lift, 0, 255).astype(np.uint8)
        )

    settings = SimpleNamespace(codec="h264", crf=None, preset=None, container="same")
    enc, _ = media.encoding_for("mp4", settings)
    times = [Fraction(1, 5), Fraction(3, 5)]
    before = sample_frames(str(src), src.name, times)
    assert all(nxt is not None for *_, nxt in before)
    for process, flagged in ((_x2, False), (pulsing, True)):
        out = tmp_path / f"{process.__name__}.mp4"
        segments.process_segment(
            str(src), str(out), start_pts=None, end_pts=None, process=process, encoding=enc,
            label=src.name,
        )  # fmt: skip
        after = sample_frames(str(out), out.name, times)
        for (_t, b, b_next), (_t2, a, a_next) in zip(before, after, strict=True):
            was, now = frame_change(b, b_next), frame_change(a, a_next)
            assert flickers(was, now) is flagged, (process.__name__, was, now)
    # The last frame has no next one: no measure, never flagged.
    (last,) = sample_frames(str(src), src.name, [Fraction(29, 25)])
    assert last[2] is None and frame_change(last[1], None) is None
    assert not flickers(None, 50.0)


def test_times_in_a_clip_parse_from_seconds_or_clock_notation():
    from retouch.lib.video.review import parse_time

    assert parse_time("80") == 80
    assert parse_time("80.5") == Fraction(161, 2)
    assert parse_time("1:20") == 80
    assert parse_time("00:01:20.5") == Fraction(161, 2)
    assert parse_time("1:00:00") == 3600
    for bad in ("", "abc", "1:75", "1::2", "1:2:3:4", "x:10"):
        with pytest.raises(ValueError, match="give seconds"):
            parse_time(bad)
    with pytest.raises(ValueError, match="not negative"):
        parse_time("-3")


def test_preview_at_a_moment_of_a_clip_tries_that_frame(tmp_path):
    """`retouch preview clip.mp4 --at 0.6` seeks to the frame shown at 0.6 s (from the clip's
    first frame) and tries the recipe on it; a time past the end is a clear error."""
    import json

    from typer.testing import CliRunner

    from retouch.cli.main import app

    src = tmp_path / "clip.mp4"
    make_clip(src, frames=40, width=64, height=48, gop=10)
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(
        app, ["preview", str(src), "--at", "0:00.6", "--preset", "quick", "--out", str(sheet)]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(sheet.with_suffix(".json").read_text())
    assert scores["images"] == ["clip.mp4 @ 0.60 s"]
    assert all(c.get("error") is None for c in scores["cells"])
    sheet_pixels = cv2.imread(str(sheet))
    assert sheet_pixels is not None and sheet_pixels.shape[0] > 48

    late = CliRunner().invoke(
        app, ["preview", str(src), "--at", "5", "--out", str(tmp_path / "late.png")]
    )
    assert late.exit_code != 0
    assert "no frame at 5.000 s: the clip is 1.600 s long" in late.output


def test_nvenc_is_used_only_where_it_opens_and_said_when_a_gpu_run_cannot():
    """NVENC needs an NVIDIA driver: `auto` encodes in software on the CPU without a word,
    says so on a GPU run where NVENC does not open, and `nvenc` refuses; the encoder is
    part of the result's key."""
    from retouch.lib.errors import RecipeError
    from retouch.lib.recipe import VideoSettings

    refusal = media.nvenc_refusal("h264")
    auto = VideoSettings()
    enc, note = media.encoding_for("mp4", auto, "cpu")
    assert not enc.hardware and enc.encoder == "libx264" and note is None
    enc, note = media.encoding_for("mp4", auto, "cuda")
    if refusal is None:  # a machine with NVENC
        assert enc.hardware and enc.encoder == "h264_nvenc" and note is None
        assert enc.options()["cq"] == "18"
    else:
        assert not enc.hardware
        assert note == f"encoded in software (libx264): {refusal}"
        with pytest.raises(RecipeError, match="export.video.encoder=nvenc: h264_nvenc"):
            media.encoding_for("mp4", VideoSettings(encoder="nvenc"), "cuda")
    soft = media.Encoding(codec="h264", crf=18, preset=None, ext="mp4")
    hard = media.Encoding(codec="h264", crf=18, preset=None, ext="mp4", hardware=True)
    assert soft.key() != hard.key()
    assert (hard.encoder, hard.options()["preset"]) == ("h264_nvenc", "p5")


def test_landmarks_of_a_face_that_barely_moved_are_steadied_and_motion_is_kept():
    import numpy as np

    from retouch.lib.ops.restore_faces import SMOOTH_KEEP, smooth_landmarks

    face = np.array([[100, 100], [140, 100], [120, 120], [105, 140], [135, 140]], float)
    jitter = face + np.array([1.5, -1.0])  # 1.8 px, eye distance 40: jitter
    moved = face + np.array([30.0, 0.0])  # the face moved
    other = face + np.array([300.0, 0.0])  # a second face, far away
    (steady,) = smooth_landmarks([jitter], [other, face])
    assert np.allclose(steady, (1 - SMOOTH_KEEP) * jitter + SMOOTH_KEEP * face)
    assert np.allclose(smooth_landmarks([moved], [face])[0], moved)
    assert np.allclose(smooth_landmarks([face], [])[0], face)  # a new face: as detected
    # Jitter around a still face shrinks over frames (each frame against the steadied one).
    rng = np.random.default_rng(3)
    previous: list = []
    raw, kept = [], []
    for _ in range(30):
        seen = face + rng.normal(0, 1.5, face.shape)
        previous = smooth_landmarks([seen], previous)
        raw.append(seen)
        kept.append(previous[0])
    spread = lambda xs: float(np.mean(np.std(np.array(xs), axis=0)))  # noqa: E731
    assert spread(kept) < 0.7 * spread(raw)


def test_static_blend_steadies_a_still_background_and_leaves_motion_and_cuts_alone():
    """A result with fresh noise on every frame (a model's shimmer) over a still source:
    blended, its frame-to-frame change drops; where the source moves, and after a cut, the
    result is the frame's own."""
    import numpy as np

    from retouch.lib.video.temporal import StaticBlend, frame_change

    rng = np.random.default_rng(5)
    still = np.full((48, 64, 3), 120, np.uint8)

    def shimmer(src: np.ndarray) -> Image:
        noise = rng.normal(0, 8, src.shape)
        return Image(pixels=np.clip(src.astype(np.float64) + noise, 0, 255).astype(np.uint8))

    raw, blended = [], []
    blend = StaticBlend(0.7)
    for _ in range(12):
        out = shimmer(still)
        raw.append(out)
        blended.append(blend(Image(pixels=still), out))
    plain = np.mean([frame_change(a, b) for a, b in zip(raw, raw[1:], strict=False)])
    steady = np.mean([frame_change(a, b) for a, b in zip(blended[4:], blended[5:], strict=False)])
    assert steady < 0.6 * plain
    # A cut (the source changes everywhere): the new frame's result comes out as it is.
    cut = np.full((48, 64, 3), 20, np.uint8)
    out = shimmer(cut)
    assert np.array_equal(blend(Image(pixels=cut), out).pixels, out.pixels)
    # A moving area (a bright bar appears) keeps the frame's own result there.
    moving = cut.copy()
    moving[:, 10:14] = 250  # a small part of the frame: not a cut
    out = shimmer(moving)
    got = blend(Image(pixels=moving), out).pixels
    assert np.array_equal(got[:, 11:13], out.pixels[:, 11:13])
    assert not np.array_equal(got[:, 40:], out.pixels[:, 40:])


def test_the_blend_and_the_segments_are_part_of_a_videos_key(tmp_path):
    from retouch.lib.phases.context import RunConfig
    from retouch.lib.recipe import apply_overrides, load_preset
    from retouch.lib.records import ImageRecord, InputInfo
    from retouch.lib.video.phases import video_key

    uri = str(tmp_path / "clip.mp4")
    record = ImageRecord(index=1, source=uri, name="clip.mp4", uri=uri)
    record.sha256 = "ab" * 32
    record.input = InputInfo(format="mp4", frames=30, segments=[(None, 100, 10), (100, None, 20)])
    recipe = load_preset("quick")

    def key(r, rec=record):
        ctx = RunConfig(run_id="r", workspace=str(tmp_path / "ws"), recipe=r).context()
        return video_key(rec, ctx, {}, "cpu")

    base = key(recipe)
    assert key(apply_overrides(recipe, ["export.video.blend_static=0.5"])) != base
    other = record.model_copy(deep=True)
    assert other.input is not None
    other.input.segments = [(None, None, 30)]
    assert key(recipe, other) != base
    assert key(recipe) == base


def test_videos_have_their_own_size_limit(tmp_path, monkeypatch):
    """Videos are streamed, never held in memory: the image limit does not refuse them;
    their own limit does, naming the setting."""
    from retouch.lib import sources
    from retouch.lib.phases.prepare import new_record, prepare_one
    from retouch.lib.settings import reload_settings

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=10)
    size = clip.stat().st_size
    (item,) = sources.discover(str(clip)).items
    monkeypatch.setenv("RETOUCH_MAX_FILE_BYTES", str(size // 2))
    record = prepare_one(new_record(item, 1), reload_settings())
    assert record.ok, record.reason
    monkeypatch.setenv("RETOUCH_MAX_VIDEO_BYTES", str(size - 1))
    record = prepare_one(new_record(item, 1), reload_settings())
    assert not record.ok
    assert record.reason == (
        f"file is larger than the limit of {size - 1} bytes (raise RETOUCH_MAX_VIDEO_BYTES "
        "to accept it)"
    )
    monkeypatch.delenv("RETOUCH_MAX_FILE_BYTES")
    monkeypatch.delenv("RETOUCH_MAX_VIDEO_BYTES")
    reload_settings()
