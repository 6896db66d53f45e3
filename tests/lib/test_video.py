"""lib/video on real clips made with PyAV: probing, frame-exact segments, the remux join,
hostile files, and video results in the workspace."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import cv2
import pytest

from retouch.lib.errors import InvalidVideoError
from retouch.lib.image import Image
from retouch.lib.video import media, segments
from tests.video_clips import (
    VFR_STEPS,
    audio_spans,
    first_frame,
    frame_times,
    make_audio_only,
    make_clip,
    make_zero_frames,
)

LIMIT = 100_000_000


def _x2(image: Image) -> Image:
    return Image(pixels=cv2.resize(image.pixels, (image.width * 2, image.height * 2)))


def _encoding(ext: str, **kw):
    settings = SimpleNamespace(
        codec=kw.get("codec", "h264"), crf=None, preset=None, container=kw.get("container", "same")
    )
    return media.encoding_for(ext, settings)


def _run(src, tmp_path, process=_x2, ext="mp4", **kw):
    enc, note = _encoding(ext, **kw)
    seg = segments.process_segment(
        str(src),
        str(tmp_path / f"seg.{enc.ext}"),
        start_pts=kw.get("start"),
        end_pts=kw.get("end"),
        process=process,
        encoding=enc,
        label=src.name,
    )
    out = tmp_path / f"out.{enc.ext}"
    joined = segments.join(
        str(src), [seg], str(out), enc.muxer, src.name, enc.muxer_options(seg.time_base)
    )
    return seg, joined, out, note


def test_probe_counts_frames_by_decoding_and_sees_the_variable_rate(tmp_path):
    clip = tmp_path / "vfr.mkv"  # Matroska has no nb_frames: the count comes from decoding
    make_clip(clip)
    info = media.probe_video(str(clip), "vfr.mkv", pixel_limit=LIMIT)
    assert info.frames == len(VFR_STEPS)
    assert info.vfr is True
    assert (info.width, info.height) == (48, 32)
    assert [s.kind for s in info.streams] == ["audio"]
    assert info.sample is not None and info.sample.pixels.shape == (32, 48, 3)


def test_vfr_clip_keeps_every_timestamp_and_the_audio_through_a_x2_segment(tmp_path):
    clip = tmp_path / "vfr.mp4"
    times = make_clip(clip)
    seg, joined, out, note = _run(clip, tmp_path)
    assert note is None
    assert frame_times(out) == times  # exact fractions, every frame
    assert joined.copied == ["audio aac"] and joined.reencoded == []
    assert audio_spans(out) == audio_spans(clip)
    assert first_frame(out).shape == (64, 96, 3)
    assert segments.check_timestamps(times, segments.video_timestamps(str(out), "o")[0]) is None


def test_a_segment_holds_exactly_the_frames_of_its_range(tmp_path):
    clip = tmp_path / "vfr.mp4"
    times = make_clip(clip)
    pts = [int(t * 90000) for t in times]
    seg, _joined, out, _ = _run(clip, tmp_path, start=pts[4], end=pts[9])
    assert seg.pts == pts[4:9]
    # A clip not starting at 0 keeps its start exactly (MP4's edit list in the stream's scale).
    assert frame_times(tmp_path / "seg.mp4") == times[4:9]
    assert frame_times(out) == times[4:9]


def test_odd_size_is_padded_to_even_and_said(tmp_path):
    clip = tmp_path / "odd.mov"
    make_clip(clip, width=47, height=33, codec="mjpeg", pix_fmt="yuvj420p", frames=5, audio=None)
    seg, _joined, out, _ = _run(clip, tmp_path, process=lambda im: im, ext="mov")
    assert (seg.width, seg.height) == (48, 34)
    assert any("padded from 47x33 to 48x34" in n for n in seg.notes)
    assert first_frame(out).shape == (34, 48, 3)
    assert len(frame_times(out)) == 5


def test_audio_the_container_refuses_is_reencoded_to_aac_and_said(tmp_path):
    clip = tmp_path / "old.avi"  # an old camera's AVI: MJPEG with 8-bit PCM sound
    times = make_clip(
        clip,
        codec="mjpeg",
        pix_fmt="yuvj420p",
        frames=6,
        audio="pcm_u8",
        audio_rate=8000,
        time_base=Fraction(1, 25),
    )
    seg, joined, out, note = _run(clip, tmp_path, ext="avi")
    assert out.suffix == ".mp4" and "not AVI" in (note or "")
    assert joined.reencoded == ["audio pcm_u8 -> aac"]
    assert any("re-encoded to AAC" in n for n in joined.notes)
    assert frame_times(out) == times
    # AAC works in frames of 1024 samples plus the encoder's priming: within two frames.
    (before,), (after,) = audio_spans(clip), audio_spans(out)
    assert abs(after - before) <= Fraction(2 * 1024, 8000)


def test_rotation_is_applied_to_the_pixels(tmp_path):
    clip = tmp_path / "phone.mp4"
    make_clip(clip, frames=4, rotation=90, audio=None)
    info = media.probe_video(str(clip), clip.name, pixel_limit=LIMIT)
    assert info.rotation == 90 and (info.display_width, info.display_height) == (32, 48)
    seg, _joined, out, _ = _run(clip, tmp_path, process=lambda im: im)
    assert (seg.width, seg.height) == (32, 48)
    assert any("rotation" in n for n in seg.notes)
    with __import__("av").open(str(out)) as c:
        frame = next(c.decode(video=0))
        assert frame.rotation == 0 and (frame.width, frame.height) == (32, 48)


def test_a_frame_changing_size_fails_the_video_with_the_frame_named(tmp_path):
    clip = tmp_path / "vfr.mp4"
    make_clip(clip)
    calls = {"n": 0}

    def uneven(image: Image) -> Image:
        calls["n"] += 1
        return _x2(image) if calls["n"] < 3 else image

    with pytest.raises(segments.VideoError, match="frame 3 came out 48x32"):
        _run(clip, tmp_path, process=uneven)


# -- hostile files -----------------------------------------------------------------------------


def _probe_reason(path) -> str:
    with pytest.raises(InvalidVideoError) as caught:
        media.probe_video(str(path), path.name, pixel_limit=LIMIT)
    assert caught.value.uri == path.name
    return caught.value.reason


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "voice.mp4"
    make_audio_only(path)
    assert _probe_reason(path) == "no video stream (it holds only audio)"


def test_empty_file_is_said_to_be_empty(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    assert _probe_reason(path) == "empty file (0 bytes)"


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_zero_frame_clip_is_a_zero_length_clip(tmp_path, ext):
    path = tmp_path / f"nothing.{ext}"
    make_zero_frames(path)
    assert "zero-length clip" in _probe_reason(path)


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_truncated_file_is_said_to_be_truncated(tmp_path, ext):
    whole = tmp_path / f"whole.{ext}"
    make_clip(whole, frames=60, width=64, height=48)
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    reason = _probe_reason(cut)
    assert "truncated" in reason or "corrupt" in reason


def test_one_frame_clip_is_a_video(tmp_path):
    clip = tmp_path / "still.mp4"
    times = make_clip(clip, frames=1)
    info = media.probe_video(str(clip), clip.name, pixel_limit=LIMIT)
    assert info.frames == 1
    _seg, _joined, out, _ = _run(clip, tmp_path)
    assert frame_times(out) == times


def test_frames_beyond_the_pixel_limit_are_refused_before_decoding(tmp_path):
    clip = tmp_path / "big.mp4"
    make_clip(clip, frames=2)
    with pytest.raises(InvalidVideoError, match="exceed the pixel limit"):
        media.probe_video(str(clip), clip.name, pixel_limit=1000)


# -- settings, sources, workspace ----------------------------------------------------------------


def test_container_choice_states_each_change():
    assert media.output_container("mkv", "same", "h264") == ("mkv", None)
    assert media.output_container("webm", "same", "av1") == ("webm", None)
    ext, note = media.output_container("webm", "same", "h264")
    assert ext == "mkv" and "WebM cannot hold h264" in (note or "")
    assert media.output_container("avi", "same", "h264")[0] == "mp4"
    assert media.output_container("mp4", "mkv", "h264") == ("mkv", None)


def test_export_video_settings_validate_and_take_overrides():
    from retouch.lib.errors import RecipeError
    from retouch.lib.recipe import apply_overrides, load_preset

    recipe = apply_overrides(load_preset("quick"), ["export.video.codec=h265"])
    assert recipe.export.video.codec == "h265"
    with pytest.raises(RecipeError, match="h264 takes 0-51"):
        apply_overrides(load_preset("quick"), ["export.video.crf=60"])
    enc, _ = media.encoding_for("mp4", recipe.export.video)
    assert enc.encoder == "libx265" and enc.crf == media.DEFAULT_CRF["h265"]


def test_videos_are_found_beside_images(tmp_path):
    from retouch.lib import sources

    for name in ("a.jpg", "b.MP4", "c.mov", "d.mkv", "e.webm", "f.avi", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = sources.discover(str(tmp_path))
    assert [i.name for i in found.items] == ["a.jpg", "b.MP4", "c.mov", "d.mkv", "e.webm", "f.avi"]
    assert [r for _u, r in found.skipped] == ["not an image file extension (.txt)"]


def test_a_video_result_is_stored_found_counted_and_evicted(tmp_path):
    from retouch.lib import cache
    from retouch.lib.workspace import Workspace

    ws = Workspace(str(tmp_path / "ws"))
    clip = tmp_path / "c.mp4"
    make_clip(clip, frames=3, audio=None)
    key = "ab" + "0" * 62
    ws.save_result_file(key, str(clip), "mp4", {"kind": "video"})
    assert ws.has_result(key)
    assert ws.result_file(key).endswith(f"{key}.mp4")
    (entry,) = cache.entries(ws)
    assert entry.key == key and entry.bytes > clip.stat().st_size
    assert cache.prune(ws, max_bytes=0).removed == 1
    assert not ws.has_result(key)
    assert ws.list_tree("results") == {}


def test_a_video_inside_a_zip_is_prepared_through_fsspec(tmp_path):
    import zipfile

    from retouch.lib import sources
    from retouch.lib.phases.prepare import new_record, prepare_one
    from retouch.lib.settings import get_settings

    clip = tmp_path / "clip.mkv"
    make_clip(clip)
    archive = tmp_path / "in.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(clip, "sub/clip.mkv")
    (item,) = sources.discover(str(archive)).items
    assert item.uri.startswith("zip://sub/clip.mkv::")
    record = prepare_one(new_record(item, 1), get_settings())
    assert record.ok, record.reason
    assert record.input["kind"] == "video" and record.input["frames"] == len(VFR_STEPS)
    assert record.sha256 == __import__("hashlib").sha256(clip.read_bytes()).hexdigest()


def test_export_profile_settings_videos_do_not_take_are_stated(tmp_path):
    from retouch.lib.phases.context import RunContext
    from retouch.lib.phases.export import assign_outputs, export_one, staging_path
    from retouch.lib.phases.prepare import new_record, prepare_one
    from retouch.lib.phases.process import process_many
    from retouch.lib.recipe import apply_overrides, recipe_from_dict
    from retouch.lib.settings import get_settings
    from retouch.lib.sources import SourceItem
    from retouch.lib.workspace import Workspace

    clip = tmp_path / "c.mp4"
    times = make_clip(clip, frames=4)
    recipe = apply_overrides(
        recipe_from_dict({"steps": [{"op": "sharpen"}]}), ["export.watermark.text=PROOF"]
    )
    ctx = RunContext(run_id="r", workspace=Workspace(str(tmp_path / "ws")), recipe=recipe)
    record = new_record(SourceItem(str(clip), "c.mp4", None), 1)
    prepare_one(record, get_settings())
    process_many([record], ctx, {}, "cpu")
    assign_outputs([record], recipe)
    export_one(record, ctx)
    assert record.ok, record.reason
    assert record.outputs[0]["notes"] == ["watermark is not applied to videos in this version"]
    assert "export: watermark is not applied to videos in this version" in record.problems
    staged = staging_path(ctx, record.output_name)
    assert frame_times(__import__("pathlib").Path(staged)) == times
    assert record.outputs[0]["format"] == "mp4" and record.outputs[0]["frames"] == 4
