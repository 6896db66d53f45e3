"""Mask videos read by time (the last mask frame at or before a clip frame's time), sought
to a segment's start, checked at their end, and part of a clip's result key."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from retouch.lib.errors import OperationError
from retouch.lib.video.masks import MaskVideo
from tests.video_clips import make_frames_clip

W, H = 32, 24
STEPS = [9000, 3000, 12000, 6000, 4500, 9000, 9000]  # 1/90000 s: frames at irregular times


def _mask_video(path, steps=STEPS, gop=2, start=0) -> list[Fraction]:
    """Frame j: a white column at x = 4 j (on black)."""
    frames = []
    for j in range(len(steps)):
        m = np.zeros((H, W, 3), np.uint8)
        m[:, 4 * j : 4 * j + 2] = 255
        frames.append(m)
    return make_frames_clip(path, frames, steps, gop=gop, start=start)


def _column(mask: np.ndarray) -> int:
    """Which mask frame ``mask`` is (by where its column is)."""
    assert mask.shape == (H, W) and mask.dtype == np.uint8
    (cols,) = np.nonzero(mask[H // 2] > 127)
    return int(cols[0]) // 4


def _open(path) -> MaskVideo:
    return MaskVideo(str(path), "clip.mp4", pixel_limit=10**8, max_bytes=10**9)


def test_each_time_gets_the_last_mask_frame_at_or_before_it(tmp_path):
    times = _mask_video(tmp_path / "m.mp4")
    tick = Fraction(1, 90000)
    asks = sorted({t for s in times for t in (s - tick, s, s + tick) if t >= 0})
    expected = [max(j for j, s in enumerate(times) if s <= t) for t in asks]
    with _open(tmp_path / "m.mp4") as mv:
        assert [_column(mv.at(t)) for t in asks] == expected
    # A reader first asked in the middle (a segment's start) seeks there and goes on.
    middle = [t for t in asks if t > times[3]]
    with _open(tmp_path / "m.mp4") as mv:
        assert [_column(mv.at(t)) for t in middle] == expected[-len(middle) :]
    # Asked earlier again, it seeks back.
    with _open(tmp_path / "m.mp4") as mv:
        assert _column(mv.at(times[5])) == 5
        assert _column(mv.at(times[1])) == 1


def test_times_are_counted_from_each_streams_first_frame(tmp_path):
    """A mask video whose first frame is at 0.5 s masks the clip's first frame with it."""
    times = _mask_video(tmp_path / "late.mp4", start=45000)
    assert times[0] == Fraction(1, 2)
    with _open(tmp_path / "late.mp4") as mv:
        assert _column(mv.at(Fraction(0))) == 0
        assert _column(mv.at(times[2] - times[0])) == 2
        assert _column(mv.at(times[2] - times[0] - Fraction(1, 90000))) == 1


def test_a_time_after_the_mask_videos_end_names_both_files_and_the_time(tmp_path):
    times = _mask_video(tmp_path / "m.mp4", steps=[9000, 9000, 9000])  # ends 0.2 + 1/25 s
    with _open(tmp_path / "m.mp4") as mv:
        assert _column(mv.at(Fraction(23, 100))) == 2  # its last frame is still shown
        with pytest.raises(OperationError) as caught:
            mv.at(Fraction(1, 4))
    assert str(caught.value) == (
        f"clip.mp4: its inpaint mask video {tmp_path / 'm.mp4'} ends at 0.240 s, before the "
        "clip's frame at 0.250 s; give a mask video at least as long as the clip"
    )
    assert times[-1] == Fraction(1, 5)


def test_an_unreadable_mask_video_is_said_to_be_unreadable(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 20)
    with pytest.raises(OperationError) as caught:
        _open(bad)
    assert str(caught.value).startswith(
        f"clip.mp4: its inpaint mask video {bad} is unreadable: not a readable video"
    )


def _record(path, name):
    from retouch.lib.records import ImageRecord, InputInfo

    record = ImageRecord(index=1, source=str(path), name=name, uri=str(path))
    record.sha256 = "ab" * 32
    record.input = InputInfo(format="mp4", frames=7, segments=[(None, None, 7)])
    return record


def test_a_mask_videos_content_is_part_of_the_clips_key_and_an_image_refuses_it(tmp_path):
    from retouch.lib.phases.context import RunConfig
    from retouch.lib.recipe import load_preset
    from retouch.lib.video.phases import video_key

    masks = tmp_path / "masks"
    masks.mkdir()
    _mask_video(masks / "party.mp4")
    recipe = load_preset("remove-objects-fast")
    record = _record(tmp_path / "party.mp4", "party.mp4")

    def key():
        config = RunConfig(
            run_id="r", workspace=str(tmp_path / "ws"), recipe=recipe, masks=str(masks)
        )
        return video_key(record, config.context(), {}, "cpu")

    first = key()
    assert key() == first
    _mask_video(masks / "party.mp4", steps=STEPS[::-1])  # other frame times
    changed = key()
    assert changed != first
    (masks / "party.mp4").unlink()
    assert key() not in (first, changed)  # no mask now

    # An image whose mask is a video fails with the reason.
    from retouch.lib.masks import MaskSource
    from retouch.lib.ops.base import OpContext
    from retouch.lib.ops.inpaint import Inpaint, InpaintParams

    _mask_video(masks / "photo.mp4")
    ctx = OpContext(name="photo.jpg", masks=MaskSource(str(masks), 10**8))
    with pytest.raises(OperationError) as caught:
        Inpaint().key_inputs(InpaintParams(), ctx)
    assert "photo.jpg: its inpaint mask" in str(caught.value) and "is a video" in str(caught.value)


def test_preview_of_a_moment_reads_the_mask_video_at_that_moment(tmp_path):
    """`retouch preview clip.mp4 --at T` with a mask video in the step: the frame at T takes
    the mask frame shown at T (a moment after a short mask video's end says so)."""
    from retouch.lib.quality.preview import Variant, run_preview
    from retouch.lib.recipe import recipe_from_dict

    clip = tmp_path / "clip.mp4"
    times = make_frames_clip(clip, [np.full((H, W, 3), 120, np.uint8)] * len(STEPS), STEPS)
    _mask_video(tmp_path / "mask.mp4")
    _mask_video(tmp_path / "short.mp4", steps=[9000] * 3)  # ends at 0.2 + 1/25 s

    def cell(mask_file, at):
        params = {"method": "telea", "mask_dir": str(mask_file), "missing_mask": "error"}
        recipe = recipe_from_dict({"steps": [{"op": "inpaint", "params": params}]})
        out = str(tmp_path / f"sheet-{mask_file.stem}.png")
        (only,) = run_preview(str(clip), [Variant("fill", recipe)], out, at=at).cells
        return only

    assert cell(tmp_path / "mask.mp4", times[3]).error is None
    assert cell(tmp_path / "short.mp4", times[2]).error is None
    late = cell(tmp_path / "short.mp4", times[4])
    assert late.error is not None
    assert "ends at 0.240 s, before the clip's frame at 0.333 s" in late.error
