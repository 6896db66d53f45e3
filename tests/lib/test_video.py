"""lib/video on real clips made with PyAV: probing, frame-exact segments, the remux join,
hostile files, and video results in the workspace."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import av
import cv2
import numpy as np
import pytest

from retouch.lib.errors import InvalidVideoError
from retouch.lib.image import Image
from retouch.lib.video import media, segments
from tests.video_clips import (
    VFR_STEPS,
    audio_spans,
    colour_tags,
    first_frame,
    first_planes,
    frame_times,
    make_audio_only,
    make_clip,
    make_flat_clip,
    make_zero_frames,
    yuv_of,
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


# -- colour, depth, HDR, output size -------------------------------------------------------------

# A saturated colour (BGR) whose codes differ by 4 or more in some plane between BT.601,
# BT.709 and BT.2020 and between limited and full range: a wrong matrix or range shows.
ORANGE = (40, 200, 235)
BT709, BT601, BT2020, PQ, SRGB = 1, 6, 9, 16, 13
PLANE_TOL = 2  # codes: swscale's rounding on the way to RGB and back (lossless encodes)


def _lossless(ext: str) -> media.Encoding:
    return media.Encoding(codec="h264", crf=0, preset=None, ext=ext)


def _plane_codes(path) -> tuple[int, int, int]:
    planes = first_planes(path).astype(int)
    h = planes.shape[0] * 2 // 3
    return planes[0, 0], planes[h, 0], planes[h + h // 4, 0]


def _identity(image: Image) -> Image:
    return image


def _segment_and_join(src, tmp_path, enc, process=_identity, **kw):
    seg = segments.process_segment(
        str(src), str(tmp_path / f"seg.{enc.ext}"), start_pts=None, end_pts=None,
        process=process, encoding=enc, label=src.name, **kw,
    )  # fmt: skip
    out = tmp_path / f"out.{enc.ext}"
    segments.join(str(src), [seg], str(out), enc.muxer, src.name, enc.muxer_options(seg.time_base))
    return seg, out


@pytest.mark.parametrize(
    "matrix,full", [(BT709, True), (BT709, False), (BT601, True), (BT2020, False)]
)
def test_a_flat_colour_decodes_with_its_own_matrix_and_range(tmp_path, matrix, full):
    clip = tmp_path / "flat.mp4"
    make_flat_clip(clip, ORANGE, matrix=matrix, full=full)
    info = media.probe_video(str(clip), clip.name, pixel_limit=LIMIT)
    assert info.colour == media.Colour(range=2 if full else 1, matrix=matrix)
    got = info.sample.pixels[4, 4].astype(int)
    assert max(abs(got - ORANGE)) <= 2, got  # 8-bit BGR, within 2 levels


@pytest.mark.parametrize("matrix,full", [(BT601, False), (BT709, False), (BT709, True)])
def test_frame_conversions_both_ways_are_unbiased(matrix, full):
    colours = [
        tuple(int(c) for c in rgb) for rgb in np.random.default_rng(7).integers(20, 236, (40, 3))
    ]
    to_rgb, to_yuv = [], []
    for bgr in colours:
        codes = yuv_of(bgr, matrix, full)
        planes = np.concatenate(
            [np.full((16, 16), codes[0], np.uint8)]
            + [np.full((4, 16), c, np.uint8) for c in codes[1:]]
        )
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.colorspace, frame.color_range = matrix, 2 if full else 1
        to_rgb.append(media.frame_image(frame, 0).pixels[4, 4].astype(int) - bgr)
        back = media.yuv_frame(
            np.full((16, 16, 3), bgr, np.uint8), media.Colour(2 if full else 1, matrix)
        )
        got = back.to_ndarray().astype(int)
        to_yuv.append(np.array([got[0, 0], got[16, 0], got[20, 0]]) - codes)
    # FFmpeg's default scaler paths are about 1 level dark (YUV to RGB) and half a level
    # low (RGB to YUV); the conversions used here are within rounding of the formulas.
    assert abs(np.mean(to_rgb, axis=0)).max() < 0.3 and abs(np.array(to_rgb)).max() <= 2
    assert abs(np.array(to_yuv)).max() <= 1
    if not full:  # full-range chroma rounds half a level low; limited range is unbiased
        assert abs(np.mean(to_yuv, axis=0)).max() < 0.3


@pytest.mark.parametrize("ext", ["mp4", "mkv", "mov"])
def test_a_segment_keeps_a_full_range_bt709_clip_full_range_bt709(tmp_path, ext):
    clip = tmp_path / f"full.{ext}"
    codes = make_flat_clip(clip, ORANGE, matrix=BT709, full=True, primaries=BT709, transfer=SRGB)
    seg, out = _segment_and_join(clip, tmp_path, _lossless(ext))
    assert seg.notes == []
    assert seg.colour.to_json() == {
        "range": "pc", "matrix": "bt709", "primaries": "bt709", "transfer": "iec61966-2-1"
    }  # fmt: skip
    assert colour_tags(out) == {"range": 2, "matrix": BT709, "primaries": BT709, "transfer": SRGB}
    got = _plane_codes(out)
    assert max(abs(a - b) for a, b in zip(got, codes, strict=True)) <= PLANE_TOL, (got, codes)
    assert max(abs(first_frame(out)[4, 4].astype(int) - ORANGE)) <= 3


@pytest.mark.parametrize("codec,ext", [("h265", "mp4"), ("av1", "mkv"), ("av1", "webm")])
def test_h265_and_av1_outputs_keep_the_colour_too(tmp_path, codec, ext):
    clip = tmp_path / "full.mkv"
    codes = make_flat_clip(clip, ORANGE, matrix=BT709, full=True, width=64, height=64)
    enc = media.Encoding(codec=codec, crf=10, preset=None, ext=ext)
    _seg, out = _segment_and_join(clip, tmp_path, enc)
    assert colour_tags(out) == {"range": 2, "matrix": BT709, "primaries": 2, "transfer": 2}
    got = _plane_codes(out)
    assert max(abs(a - b) for a, b in zip(got, codes, strict=True)) <= PLANE_TOL, (got, codes)
    assert len(frame_times(out)) == 3


def test_a_limited_range_bt601_clip_is_written_with_the_bt601_matrix(tmp_path):
    clip = tmp_path / "sd.mkv"
    codes = make_flat_clip(clip, ORANGE, matrix=BT601, full=False)
    seg, out = _segment_and_join(clip, tmp_path, _lossless("mkv"))
    assert colour_tags(out)["range"] == 1 and colour_tags(out)["matrix"] == BT601
    got = _plane_codes(out)
    assert max(abs(a - b) for a, b in zip(got, codes, strict=True)) <= PLANE_TOL, (got, codes)


def test_an_untagged_clip_stays_untagged_and_keeps_its_codes(tmp_path):
    clip = tmp_path / "plain.mp4"
    codes = make_flat_clip(clip, ORANGE, matrix=2, full=None)
    seg, out = _segment_and_join(clip, tmp_path, _lossless("mp4"))
    assert seg.colour.to_json() == {}
    assert colour_tags(out) == {"range": 0, "matrix": 2, "primaries": 2, "transfer": 2}
    # Read and written with FFmpeg's one default (BT.601, limited): the codes come back.
    got = _plane_codes(out)
    assert max(abs(a - b) for a, b in zip(got, codes, strict=True)) <= PLANE_TOL, (got, codes)


def test_a_ten_bit_hdr_clip_is_written_in_8_bits_with_its_hdr_tags_and_both_changes_said(
    tmp_path,
):
    clip = tmp_path / "hdr.mkv"
    make_flat_clip(clip, ORANGE, matrix=BT2020, full=False, primaries=BT2020, transfer=PQ, bits=10)
    info = media.probe_video(str(clip), clip.name, pixel_limit=LIMIT)
    assert (info.bit_depth, info.pix_fmt) == (10, "yuv420p10le")
    assert info.to_json()["colour"] == {
        "range": "tv", "matrix": "bt2020nc", "primaries": "bt2020", "transfer": "smpte2084"
    }  # fmt: skip
    notes = media.input_notes(info)
    assert len(notes) == 2
    assert notes[0].startswith("10-bit video (yuv420p10le) processed and encoded in 8 bits")
    assert notes[1].startswith("HDR video (PQ, smpte2084 transfer, bt2020 primaries)")
    assert "without tone mapping" in notes[1] and "HDR tags kept" in notes[1]

    seg, out = _segment_and_join(clip, tmp_path, _lossless("mkv"))
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert colour_tags(out) == {"range": 1, "matrix": BT2020, "primaries": BT2020, "transfer": PQ}
    got, want = _plane_codes(out), yuv_of(ORANGE, BT2020, False)
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= PLANE_TOL, (got, want)
    assert len(frame_times(out)) == 3


def test_an_hlg_clip_is_said_to_be_hlg_and_an_sdr_one_gets_no_note(tmp_path):
    clip = tmp_path / "hlg.mp4"
    make_flat_clip(clip, ORANGE, matrix=BT2020, full=False, primaries=BT2020, transfer=18)
    notes = media.input_notes(media.probe_video(str(clip), clip.name, pixel_limit=LIMIT))
    assert len(notes) == 1 and notes[0].startswith("HDR video (HLG, arib-std-b67 transfer")
    sdr = tmp_path / "sdr.mp4"
    make_flat_clip(sdr, ORANGE, matrix=BT709, full=False, primaries=BT709, transfer=BT709)
    assert media.input_notes(media.probe_video(str(sdr), sdr.name, pixel_limit=LIMIT)) == []


@pytest.mark.parametrize(
    "matrix,what", [(8, "colour matrix ycgco cannot be written"), (0, "RGB video")]
)
def test_a_matrix_the_scaler_cannot_write_becomes_bt709_and_is_said(matrix, what):
    colour, note = media.Colour(range=1, matrix=matrix, transfer=BT709).written()
    assert colour == media.Colour(range=1, matrix=BT709, transfer=BT709)
    assert note is not None and note.startswith(what) and "BT.709 matrix" in note
    frame = media.yuv_frame(np.full((16, 32, 3), ORANGE, np.uint8), colour)
    assert (frame.colorspace, frame.color_range, frame.color_trc) == (BT709, 1, BT709)
    planes = frame.to_ndarray().astype(int)
    got, want = (planes[0, 0], planes[16, 0], planes[20, 0]), yuv_of(ORANGE, BT709, False)
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= 1, (got, want)


def test_output_frames_wider_than_the_encoder_takes_fail_at_the_first_frame(tmp_path):
    clip = tmp_path / "c.mp4"
    make_clip(clip, frames=5)
    calls = []

    def too_wide(image: Image) -> Image:
        calls.append(1)
        return Image(pixels=np.zeros((16, 16400, 3), np.uint8))

    with pytest.raises(segments.VideoError) as err:
        _segment_and_join(clip, tmp_path, _lossless("mp4"), process=too_wide)
    assert str(err.value) == (
        "c.mp4: output frames of 16400x16 (from 48x32) are larger than h264 (libx264) "
        "encodes, at most 16384x16384; add a fit step (max_side) or upscale less, or "
        "export.video.codec=h265"
    )
    assert len(calls) == 1  # refused at the first frame, before the rest are processed


def test_output_frames_beyond_the_pixel_limit_fail_at_the_first_frame(tmp_path):
    clip = tmp_path / "c.mkv"
    make_clip(clip, frames=5)
    calls = []

    def x2(image: Image) -> Image:
        calls.append(1)
        return _x2(image)

    with pytest.raises(segments.VideoError, match=r"output frames of 96x64 \(from 48x32\) are "
                       r"6144 pixels, over the pixel limit of 5000 \(RETOUCH_PIXEL_LIMIT"):  # fmt: skip
        _segment_and_join(clip, tmp_path, _lossless("mkv"), process=x2, pixel_limit=5000)
    assert len(calls) == 1
    # At the limit it is encoded.
    seg, _out = _segment_and_join(clip, tmp_path, _lossless("mkv"), process=_x2, pixel_limit=6144)
    assert (seg.width, seg.height) == (96, 64)


def test_encoder_frame_limits_are_stated_per_codec():
    assert media.frame_size_refusal(16384, 8704, "av1", None) is None
    assert "at most 16384x8704" in media.frame_size_refusal(16384, 8706, "av1", None)
    assert media.frame_size_refusal(20000, 20000, "h265", None) is None
    assert "at most 16384x16384" in media.frame_size_refusal(16, 16386, "h264", None)


def test_a_ten_bit_hdr_video_through_the_phases_says_both_changes_and_keeps_its_tags(tmp_path):
    from retouch.lib.phases.context import RunContext
    from retouch.lib.phases.export import assign_outputs, export_one, staging_path
    from retouch.lib.phases.prepare import new_record, prepare_one
    from retouch.lib.phases.process import process_many
    from retouch.lib.recipe import recipe_from_dict
    from retouch.lib.settings import get_settings
    from retouch.lib.sources import SourceItem
    from retouch.lib.workspace import Workspace

    clip = tmp_path / "hdr.mp4"
    make_flat_clip(clip, ORANGE, matrix=BT2020, full=False, primaries=BT2020, transfer=PQ, bits=10)
    recipe = recipe_from_dict({"steps": [{"op": "sharpen"}]})
    ctx = RunContext(run_id="r", workspace=Workspace(str(tmp_path / "ws")), recipe=recipe)
    record = new_record(SourceItem(str(clip), "hdr.mp4", None), 1)
    prepare_one(record, get_settings())
    process_many([record], ctx, {}, "cpu")
    assign_outputs([record], recipe)
    export_one(record, ctx)
    assert record.ok, record.reason
    assert any(p.startswith("10-bit video (yuv420p10le) processed") for p in record.problems)
    assert any(p.startswith("HDR video (PQ, ") for p in record.problems)
    tags = {"range": "tv", "matrix": "bt2020nc", "primaries": "bt2020", "transfer": "smpte2084"}
    assert record.input["colour"] == tags
    assert record.output["colour"] == tags and record.outputs[0]["colour"] == tags
    staged = __import__("pathlib").Path(staging_path(ctx, record.output_name))
    assert colour_tags(staged)["transfer"] == PQ
    assert len(frame_times(staged)) == 3


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
