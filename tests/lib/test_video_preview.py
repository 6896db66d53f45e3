"""The report's before/after preview clip of a video: about two seconds from the moment that
stands for the clip, source and result side by side (stacked for wide frames), the source's
frame times, small H.264; made in the review without ever failing the video (real clips)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from retouch.lib.errors import InvalidVideoError
from retouch.lib.image import Image
from retouch.lib.video import media, segments
from retouch.lib.video.preview_clip import PreviewClipError, layout, make_preview_clip, span
from tests.video_clips import VFR_STEPS, frame_times, make_clip


def _negative_x2(image: Image) -> Image:
    """A result unlike its source: the colours inverted, twice the size."""
    pixels = 255 - image.pixels
    return Image(pixels=cv2.resize(pixels, (image.width * 2, image.height * 2)))


def _result(src: Path, dst: Path, process=_negative_x2) -> Path:
    settings = type("S", (), {"codec": "h264", "crf": None, "preset": None, "container": "same"})
    enc, _ = media.encoding_for(dst.suffix[1:], settings)
    segments.process_segment(
        str(src), str(dst), start_pts=None, end_pts=None, process=process, encoding=enc,
        label=src.name,
    )  # fmt: skip
    return dst


def _decoded(data: bytes, tmp_path: Path) -> tuple[list[Fraction], list[np.ndarray]]:
    """The frame times and pictures (BGR) of an encoded preview clip: H.264 4:2:0, no sound."""
    path = tmp_path / "preview.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as c:
        assert [s.type for s in c.streams] == ["video"]  # no sound
        vs = c.streams.video[0]
        codec = (vs.codec_context.name, vs.codec_context.pix_fmt)
        frames = [
            (Fraction(f.pts) * vs.time_base, f.to_ndarray(format="bgr24")) for f in c.decode(vs)
        ]
    assert codec == ("h264", "yuv420p")
    return [t for t, _ in frames], [p for _, p in frames]


def _source_frames(src: Path) -> dict[Fraction, np.ndarray]:
    with av.open(str(src)) as c:
        vs = c.streams.video[0]
        return {
            Fraction(f.pts) * vs.time_base: media.frame_image(
                f, media.rotation_of(f.rotation)
            ).pixels
            for f in c.decode(vs)
        }


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_the_preview_shows_each_source_frame_beside_the_result_at_the_source_times(tmp_path, ext):
    """A VFR clip and its (inverted, x2) result: the preview holds every source frame of the
    span at its source time (from 0), the source on the left, the result reduced to the
    same size on the right. A Matroska result's millisecond clock rounds the frame times of
    a 1/90000 s source: the frames are still paired."""
    src = tmp_path / "vfr.mp4"
    times = make_clip(src, steps=VFR_STEPS * 5, width=64, height=48, gop=6, audio=None)
    result = _result(src, tmp_path / f"result.{ext}")
    start, end = times[10], times[10] + Fraction(1, 2)
    clip = make_preview_clip(str(src), str(result), src.name, start, end)

    assert clip is not None
    shown = [t for t in times if start <= t < end]
    assert (clip.width, clip.height, clip.stacked, clip.frames) == (128, 48, False, len(shown))
    assert clip.start == shown[0]
    assert clip.end == times[times.index(shown[-1]) + 1]  # where the last shown frame ends
    got_times, pictures = _decoded(clip.data, tmp_path)
    assert got_times == [t - shown[0] for t in shown]
    sources = _source_frames(src)
    for t, picture in zip(shown, pictures, strict=True):
        assert picture.shape == (48, 128, 3)
        before, after = picture[:, :64], picture[:, 64:]
        assert _diff(before, sources[t]) < 8
        assert _diff(after, 255 - sources[t]) < 10  # the result, reduced back to 64x48
        assert _diff(before, after) > 60  # and not the source twice


def test_a_span_is_clamped_to_the_clip_and_a_short_clip_gives_what_it_has():
    assert span(Fraction(0), Fraction(10), Fraction(5)) == (5, 7)
    assert span(Fraction(0), Fraction(10), Fraction(25, 3)) == (8, 10)  # ends with the clip
    assert span(Fraction(0), Fraction(1, 2), Fraction(1, 4)) == (0, Fraction(1, 2))
    assert span(Fraction(3, 2), Fraction(10), Fraction(0)) == (Fraction(3, 2), Fraction(7, 2))


def test_the_layout_is_side_by_side_under_640_pixels_stacked_for_wide_frames_never_enlarged():
    assert layout(640, 360) == (320, 180, False)
    assert layout(1920, 1080) == (320, 180, False)
    assert layout(1080, 1920) == (320, 568, False)  # upright phone clip
    assert layout(48, 32) == (48, 32, False)  # small: kept as it is
    assert layout(63, 47) == (62, 46, False)  # even sides
    assert layout(2560, 1000) == (640, 250, True)  # wider than 2:1: one above the other
    assert layout(160, 48) == (160, 48, True)


def test_wide_frames_are_stacked_and_a_rotated_clip_is_shown_upright(tmp_path):
    wide = tmp_path / "wide.mp4"
    times = make_clip(wide, frames=10, width=160, height=48, audio=None)
    result = _result(wide, tmp_path / "wide-result.mp4")
    clip = make_preview_clip(str(wide), str(result), wide.name, times[0], times[-1] + 1)
    assert clip is not None and clip.stacked and (clip.width, clip.height) == (160, 96)
    _times, pictures = _decoded(clip.data, tmp_path)
    first = _source_frames(wide)[times[0]]
    assert _diff(pictures[0][:48], first) < 8 and _diff(pictures[0][48:], 255 - first) < 10

    turned = tmp_path / "phone.mp4"
    times = make_clip(turned, frames=10, width=64, height=48, rotation=90, audio=None)
    result = _result(turned, tmp_path / "phone-result.mp4")  # upright pixels, no rotation
    clip = make_preview_clip(str(turned), str(result), turned.name, times[0], times[-1] + 1)
    assert clip is not None and (clip.width, clip.height) == (96, 64)
    _times, pictures = _decoded(clip.data, tmp_path)
    upright = _source_frames(turned)[times[0]]
    assert upright.shape == (64, 48, 3)
    assert _diff(pictures[0][:, :48], upright) < 8
    assert _diff(pictures[0][:, 48:], 255 - upright) < 10


def test_a_640x360_clip_gives_a_small_640_pixel_preview_ending_with_the_clip(tmp_path):
    src = tmp_path / "clip.mp4"
    times = make_clip(src, frames=60, width=640, height=360, audio=None)  # 2.4 s
    negative = tmp_path / "result.mp4"
    _result(src, negative, lambda image: Image(pixels=255 - image.pixels))
    start, end = span(times[0], Fraction(12, 5), Fraction(1))  # from 1 s: moved back to 0.4 s
    clip = make_preview_clip(str(src), str(negative), src.name, start, end)
    assert clip is not None
    assert (clip.start, clip.end) == (Fraction(2, 5), Fraction(12, 5))
    assert (clip.width, clip.height, clip.frames) == (640, 180, 50)
    assert len(clip.data) < 300_000
    assert clip.to_json()["layout"] == "side by side"


def test_a_one_frame_clip_has_no_preview_clip(tmp_path):
    src = tmp_path / "one.mp4"
    make_clip(src, frames=1, width=64, height=48, audio=None)
    result = _result(src, tmp_path / "result.mp4")
    assert make_preview_clip(str(src), str(result), src.name, Fraction(0), Fraction(2)) is None


def test_a_result_without_the_sources_frames_is_a_clear_error(tmp_path):
    """The result of another clip (other frame times) cannot be shown beside this one."""
    src = tmp_path / "vfr.mp4"
    make_clip(src, width=64, height=48, audio=None)  # irregular frame times
    other = tmp_path / "steady.mp4"
    make_clip(other, frames=14, width=64, height=48, audio=None)
    result = _result(other, tmp_path / "result.mp4")
    with pytest.raises(PreviewClipError, match=r"the result has no frame at 0\.0\d\d s"):
        make_preview_clip(str(src), str(result), src.name, Fraction(0), Fraction(2))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(InvalidVideoError, match="vfr.mp4: not a readable video"):
        make_preview_clip(str(src), str(broken), src.name, Fraction(0), Fraction(2))
    assert frame_times(src)  # the source itself is fine


# -- in the review ---------------------------------------------------------------------------


def _reviewed(tmp_path: Path, clip: Path, before_review=None):
    from retouch.lib.phases.context import RunContext
    from retouch.lib.phases.prepare import new_record, prepare_one
    from retouch.lib.phases.process import process_many
    from retouch.lib.phases.review import review_one
    from retouch.lib.recipe import recipe_from_dict
    from retouch.lib.settings import get_settings
    from retouch.lib.sources import SourceItem
    from retouch.lib.workspace import Workspace

    recipe = recipe_from_dict({"steps": [{"op": "sharpen"}]})
    ctx = RunContext(run_id="r", workspace=Workspace(str(tmp_path / "ws")), recipe=recipe)
    record = new_record(SourceItem(str(clip), clip.name, None), 1)
    prepare_one(record, get_settings())
    process_many([record], ctx, {}, "cpu")
    assert record.ok, record.reason
    if before_review is not None:
        before_review(ctx, record)
    review_one(record, ctx)
    return ctx, record


def test_the_review_stores_a_preview_clip_from_the_worst_moment(tmp_path):
    from retouch.lib.video.review import preview_clip_path

    clip = tmp_path / "clip.mp4"
    times = make_clip(clip, frames=100, width=64, height=48, gop=20, audio=None)  # 4 s
    ctx, record = _reviewed(tmp_path, clip)
    assert record.ok and record.scores.score is not None
    info = record.scores.preview_clip
    worst = min(record.scores.frames, key=lambda f: (f["score"], f["time"]))["time"]
    start = min(Fraction(str(worst)), Fraction(2))
    first = next(t for t in times if t >= start - Fraction(1, 1000))
    assert info["start"] == pytest.approx(float(first), abs=1e-3)
    assert info["end"] - info["start"] == pytest.approx(2, abs=0.05)
    assert info["frames"] == 50 and (info["width"], info["height"]) == (128, 48)
    data = Path(preview_clip_path(ctx, record)).read_bytes()
    assert info["bytes"] == len(data)
    got_times, pictures = _decoded(data, tmp_path)
    assert len(got_times) == 50 and pictures[0].shape == (48, 128, 3)
    assert not any(p.startswith("preview clip") for p in record.problems)


def test_a_preview_clip_that_cannot_be_made_is_a_problem_line_not_a_failure(tmp_path):
    from retouch.lib.video.review import preview_clip_path

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=20, width=64, height=48, audio=None)

    def block(ctx, record):  # the clip's place is taken: it cannot be stored
        Path(preview_clip_path(ctx, record)).mkdir(parents=True)

    _ctx, record = _reviewed(tmp_path, clip, block)
    assert record.ok and record.scores.score is not None and record.scores.frames
    said = [p for p in record.problems if p.startswith("preview clip: ")]
    assert len(said) == 1, record.problems
    assert "preview_clip" not in record.scores
    assert not any(p.startswith("review failed") for p in record.problems)


def test_a_one_frame_video_is_reviewed_without_a_preview_clip(tmp_path):
    from retouch.lib.video.review import preview_clip_path

    clip = tmp_path / "one.mp4"
    make_clip(clip, frames=1, width=64, height=48, audio=None)
    ctx, record = _reviewed(tmp_path, clip)
    assert record.ok and record.scores.score is not None
    assert "preview_clip" not in record.scores
    assert not any(p.startswith(("preview clip", "review failed")) for p in record.problems)
    assert not Path(preview_clip_path(ctx, record)).exists()
