"""Face detections reused across the frames of a video (``restore_faces.redetect_every``).

Real path: tiny random-weight GFPGAN loaded by GFPGANer and the hand-set RetinaFace
(tests/tiny_models.py), facexlib's alignment and paste-back. The hand-set detector reports
the same face wherever the picture's face is, so the detector the op holds is wrapped: each
call runs the real detector (counted) and moves its face onto the face drawn in the frame,
which makes detections follow the picture as a trained detector's would. The face parsing
network (full-size, random, seconds per face on a CPU) is switched off in facexlib's helper:
it only shapes the paste-back's mask, and these tests are about detection.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from retouch.lib.errors import RecipeError
from retouch.lib.image import Image
from retouch.lib.models.pool import ModelPool, default_pool
from retouch.lib.ops.base import OpContext
from retouch.lib.ops.restore_faces import (
    DETECTIONS,
    FACE_STILL,
    Detections,
    RestoreFaces,
    detections_hold,
    frame_gray,
)
from retouch.lib.settings import reload_settings
from tests.video_clips import make_clip

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tiny_models  # noqa: E402

SKIN = (150, 185, 230)  # BGR
FAINT = (230, 200, 170)  # a face no brighter than PALE around it (luma 194.4 and 196.7)
PALE = (120, 215, 190)
BACKGROUND = (90, 60, 40)
CLIP = "c" * 64


def face_frame(
    cx: int | None,
    cy: int | None,
    *,
    w: int = 64,
    h: int = 48,
    skin=SKIN,
    back=BACKGROUND,
    eyes=True,
    seed=None,
) -> np.ndarray:
    """A frame with one face (an ellipse of 24x28 px, eyes and mouth when ``eyes``) centred
    at (cx, cy) on a shaded background; ``seed``: plus or minus one level of noise, as an
    encoder leaves on a still picture. HxWx3 BGR uint8."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = back
    img[:, :, 1] = np.clip(np.linspace(back[1] - 20, back[1] + 20, w)[None, :], 0, 255)
    if cx is not None and cy is not None:
        cv2.ellipse(img, (cx, cy), (12, 14), 0, 0, 360, skin, -1)
        if eyes:
            for dx in (-5, 5):
                cv2.circle(img, (cx + dx, cy - 4), 2, (30, 30, 40), -1)
            cv2.line(img, (cx - 4, cy + 7), (cx + 4, cy + 7), (60, 60, 140), 2)
    if seed is not None:
        noise = np.random.default_rng(seed).integers(-1, 2, img.shape)
        img = np.clip(img.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    return img


class Following:
    """The op's face detector, wrapped: every call runs the real one (counted) and moves its
    first face onto the face drawn in the frame (SKIN or FAINT pixels), box and landmarks
    alike; no drawn face, no face."""

    def __init__(self, real):
        self.real = real
        self.calls = 0

    def detect_faces(self, image, *args, **kwargs):
        rows = np.asarray(self.real.detect_faces(image, *args, **kwargs))
        self.calls += 1
        pixels = image.astype(np.int64)
        mask = np.zeros(image.shape[:2], bool)
        for colour in (SKIN, FAINT):
            mask |= np.all(np.abs(pixels - colour) <= 20, axis=2)
        if not mask.any() or len(rows) == 0:
            return rows[:0]
        ys, xs = np.nonzero(mask)
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0
        row = rows[:1].astype(np.float64)
        bx1, by1, bx2, by2 = row[0, :4]
        row[0, 5::2] = x1 + (row[0, 5::2] - bx1) * (x2 - x1) / (bx2 - bx1)
        row[0, 6::2] = y1 + (row[0, 6::2] - by1) * (y2 - y1) / (by2 - by1)
        row[0, :4] = (x1, y1, x2, y2)
        return row.astype(np.float32)


def _wrap(restorer) -> Following:
    restorer.face_helper.use_parse = False
    restorer.face_helper.face_det = Following(restorer.face_helper.face_det)
    return restorer.face_helper.face_det


@pytest.fixture(scope="module")
def _loaded(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        models = tmp_path_factory.mktemp("models")
        tiny_models.install_tiny_models(models, monkeypatch, faces="one")
        pool = ModelPool()
        op = RestoreFaces()
        op(Image(pixels=face_frame(32, 24)), op.Params(), OpContext(name="load.png", pool=pool))
        yield models, pool, _wrap(next(iter(pool._entries.values())).value)
    reload_settings()


@pytest.fixture
def faces(_loaded, monkeypatch):
    """A pool holding the tiny face models (loaded once for the module), with the face
    detector wrapped (:class:`Following`) and its call count at 0."""
    models, pool, detector = _loaded
    tiny_models.point_settings_at(models, monkeypatch)
    tiny_models.use_tiny_specs(monkeypatch)
    tiny_models.forbid_network(monkeypatch)
    detector.calls = 0
    yield pool, detector
    monkeypatch.undo()
    reload_settings()


def run_clip(pool, frames, redetect_every=5, *, forget=False):
    """The op over ``frames`` as one segment of a video (one context, its state kept);
    ``forget``: the kept detections are dropped before each frame (the detector runs on
    every frame, the landmarks are still steadied: the behaviour before reuse)."""
    op = RestoreFaces()
    params = op.Params(model="gfpgan-v1.4", redetect_every=redetect_every)
    ctx = OpContext(name="clip.mp4", pool=pool, clip_id=CLIP)
    outs = []
    for frame in frames:
        if forget:
            ctx.state.pop(DETECTIONS, None)
        outs.append(op(Image(pixels=frame), params, ctx).pixels)
    return outs, ctx


def test_a_still_face_reuses_its_detection_until_the_limit(faces):
    pool, detector = faces
    frames = [face_frame(30, 24, seed=i) for i in range(5)]  # still, with an encoder's noise
    outs, ctx = run_clip(pool, frames, redetect_every=2)
    assert detector.calls == 3  # frames 1, 3 and 5
    assert ctx.counters["face_detections_reused"] == 2
    assert ctx.counters["faces"] == 5
    # The face did not move: the reused detections restore it as detecting again would.
    detector.calls = 0
    fresh, _ = run_clip(pool, frames, redetect_every=1)
    assert detector.calls == 5
    assert all(np.array_equal(a, b) for a, b in zip(outs, fresh, strict=True))
    assert not np.array_equal(outs[0], frames[0])  # a face was restored


def test_a_moving_face_is_detected_on_every_frame_and_motion_elsewhere_does_not_count(faces):
    pool, detector = faces
    moving = [face_frame(20 + 2 * i, 24) for i in range(3)]  # 2 px a frame
    _, ctx = run_clip(pool, moving)
    assert detector.calls == 3 and "face_detections_reused" not in ctx.counters
    # A bar moving at the other end of a wider frame, far from the face: reused.
    detector.calls = 0
    frames = []
    for i in range(3):
        frame = face_frame(20, 24, w=128)
        frame[:, 100 + 4 * i : 106 + 4 * i] = 255
        frames.append(frame)
    _, ctx = run_clip(pool, frames)
    assert detector.calls == 1 and ctx.counters["face_detections_reused"] == 2


def test_a_scene_cut_detects_again_and_a_face_coming_in_is_found_at_once(faces):
    pool, detector = faces
    first = [face_frame(24, 24, seed=i) for i in range(2)]
    second = [face_frame(40, 20, back=(20, 160, 200), seed=i) for i in range(2)]
    _, ctx = run_clip(pool, first + second)
    assert detector.calls == 2  # the first frame and the cut
    assert ctx.counters["face_detections_reused"] == 2 and ctx.counters["faces"] == 4
    # No face: nothing to look around, the whole frame must stay still; a face coming in
    # changes it, and is detected on the frame it appears.
    detector.calls = 0
    empty = [face_frame(None, None, seed=i) for i in range(2)]
    _, ctx = run_clip(pool, empty + [face_frame(32, 24)])
    assert detector.calls == 2
    assert ctx.counters["face_detections_reused"] == 1 and ctx.counters["faces"] == 1


def test_detect_every_frame_gives_the_output_of_detecting_every_frame(faces):
    """A faint face (no brighter than around it) drifting by a pixel a frame barely changes
    the picture: reused detections lag behind it. With redetect_every=1 every frame is
    detected and the output is the one of dropping the kept detections at each frame."""
    pool, detector = faces
    frames = [face_frame(24 + i, 24, skin=FAINT, back=PALE, eyes=False) for i in range(4)]
    reference, _ = run_clip(pool, frames, forget=True)
    assert detector.calls == 4
    detector.calls = 0
    every, ctx = run_clip(pool, frames, redetect_every=1)
    assert detector.calls == 4 and "face_detections_reused" not in ctx.counters
    assert all(np.array_equal(a, b) for a, b in zip(every, reference, strict=True))
    detector.calls = 0
    reused, ctx = run_clip(pool, frames, redetect_every=5)
    assert detector.calls == 1 and ctx.counters["face_detections_reused"] == 3
    assert np.array_equal(reused[0], reference[0])
    assert not all(np.array_equal(a, b) for a, b in zip(reused, reference, strict=True))


def test_images_are_detected_every_time_and_keep_nothing(faces):
    pool, detector = faces
    op = RestoreFaces()
    ctx = OpContext(name="face.png", pool=pool)
    image = Image(pixels=face_frame(30, 24))
    first = op(image, op.Params(redetect_every=50), ctx).pixels
    second = op(image, op.Params(redetect_every=1), ctx).pixels
    assert detector.calls == 2 and ctx.state == {}
    assert np.array_equal(first, second)


def test_kept_detections_hold_only_for_their_own_size_count_and_a_still_face():
    still = frame_gray(face_frame(30, 24))
    box = np.array([[18, 10, 42, 38, 1] + [0.0] * 10], np.float32)
    kept = Detections.of(box, still)
    assert detections_hold(kept, still, 5)
    assert not detections_hold(None, still, 5)
    assert not detections_hold(kept, still, 1)
    assert not detections_hold(kept, frame_gray(face_frame(30, 24, w=66)), 5)
    kept.frames = 5
    assert not detections_hold(kept, still, 5)
    # Change just under and just over the limit in the face's surroundings (the box grown
    # by a quarter of its size on each side), and the same change just outside them.
    kept.frames = 1
    for step, holds in ((FACE_STILL - 0.5, True), (FACE_STILL + 0.5, False)):
        brighter = still.copy()
        brighter[3:45, 12:48] += step
        assert detections_hold(kept, brighter, 5) is holds
    elsewhere = still.copy()
    elsewhere[:, 50:] += 40
    assert detections_hold(kept, elsewhere, 5)
    # A face of 1/10 the size, moved by the same share of its size, counts the same.
    big = frame_gray(cv2.resize(face_frame(30, 24), (640, 480), interpolation=cv2.INTER_NEAREST))
    kept = Detections.of(box * np.float32(10), big)
    assert detections_hold(kept, np.roll(big, 1, axis=1), 5)
    assert not detections_hold(kept, np.roll(big, 30, axis=1), 5)
    assert not detections_hold(Detections.of(box, still), np.roll(still, 3, axis=1), 5)


def test_redetect_every_is_checked_and_keys_videos_only(tmp_path):
    from retouch.lib.phases import keys
    from retouch.lib.phases.context import RunConfig
    from retouch.lib.recipe import apply_overrides, recipe_from_dict
    from retouch.lib.records import ImageRecord, InputInfo
    from retouch.lib.video.phases import video_key

    recipe = recipe_from_dict({"steps": [{"op": "restore_faces"}]})
    for bad in ("0", "-2", "2.5", "often"):
        with pytest.raises(RecipeError) as err:
            apply_overrides(recipe, [f"restore_faces.redetect_every={bad}"])
        assert "redetect_every" in str(err.value)
    with pytest.raises(RecipeError, match="greater than or equal to 1"):
        apply_overrides(recipe, ["restore_faces.redetect_every=0"])
    once = apply_overrides(recipe, ["restore_faces.redetect_every=1"])
    assert once.steps[0].parsed().redetect_every == 1
    assert recipe.steps[0].parsed().redetect_every == 5

    # An image's result key does not change with it (its result does not); a video's does.
    sha = "ab" * 32
    assert keys.result_key(sha, once, {}) == keys.result_key(sha, recipe, {})
    assert keys.step_keys(sha, once, {}) == keys.step_keys(sha, recipe, {})
    uri = str(tmp_path / "clip.mp4")
    record = ImageRecord(index=1, source=uri, name="clip.mp4", uri=uri, sha256=sha)
    record.input = InputInfo(format="mp4", frames=30, segments=[(None, None, 30)])

    def key(r):
        ctx = RunConfig(run_id="r", workspace=str(tmp_path / "ws"), recipe=r).context()
        return video_key(record, ctx, {}, "cpu")

    assert key(once) != key(recipe)
    assert key(recipe) == key(recipe_from_dict({"steps": [{"op": "restore_faces"}]}))


def _drifting_face(i: int, width: int, height: int) -> np.ndarray:
    """A faint face drifting by a pixel a frame: little enough to reuse its detections."""
    return face_frame(24 + i, 24, w=width, h=height, skin=FAINT, back=PALE, eyes=False)


def test_a_segment_is_the_same_bytes_alone_or_after_the_one_before(tmp_path, monkeypatch):
    """Each segment starts with a fresh detection: segment 2 made alone (a resumed run)
    is the same file as segment 2 made right after segment 1 in the same process, whose
    detections (lagging behind the drifting face) would otherwise still hold."""
    from retouch.lib.models import loaders
    from retouch.lib.phases.context import RunContext
    from retouch.lib.phases.prepare import new_record, prepare_one
    from retouch.lib.recipe import recipe_from_dict
    from retouch.lib.settings import get_settings
    from retouch.lib.sources import SourceItem
    from retouch.lib.video.phases import make_segment, video_key
    from retouch.lib.workspace import Workspace

    tiny_models.install_tiny_models(tmp_path / "models", monkeypatch, faces="one")
    detectors: list[Following] = []
    real_load = loaders.load_gfpganer

    def load(*args, **kwargs):
        restorer = real_load(*args, **kwargs)
        detectors.append(_wrap(restorer))
        return restorer

    monkeypatch.setattr(loaders, "load_gfpganer", load)
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=6, gop=3, width=64, height=48, audio=None, draw=_drifting_face)
    recipe = recipe_from_dict({"steps": [{"op": "restore_faces"}]})
    item = SourceItem(str(clip), "clip.mp4", None)
    record = prepare_one(new_record(item, 1), get_settings(), 0.12)
    assert record.ok and record.input is not None, record.reason
    assert [n for *_, n in record.input.segments] == [3, 3]

    def made(workspace: str, indices: list[int]) -> tuple[bytes, int, int]:
        ctx = RunContext(run_id="r", workspace=Workspace(workspace), recipe=recipe)
        calls = sum(d.calls for d in detectors)
        for index in indices:
            assert make_segment(record, ctx, {}, "cpu", index) is None
        key = video_key(record, ctx, {}, "cpu", segment=1)
        data = Path(ctx.workspace.result_file(key)).read_bytes()
        calls = sum(d.calls for d in detectors) - calls
        return data, calls, ctx.counters.get("face_detections_reused", 0)

    default_pool().clear()  # this test's wrapped detector, not one another test loaded
    try:
        alone, calls_alone, reused_alone = made(str(tmp_path / "alone"), [1])
        after, calls_after, reused_after = made(str(tmp_path / "after"), [0, 1])
    finally:
        default_pool().clear()
    assert len(detectors) == 1
    assert (calls_alone, reused_alone) == (1, 2)
    assert (calls_after, reused_after) == (2, 4)  # each segment detects on its first frame
    assert alone == after
