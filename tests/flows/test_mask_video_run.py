"""`retouch run` with a mask video: each frame of a clip is inpainted where the mask frame
shown at the same time is white (matched by time, across a segment cut), and bad mask
videos are each a per-file outcome."""

from __future__ import annotations

import json
import zipfile
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from PIL import Image as PILImage
from typer.testing import CliRunner

from tests import lama_models
from tests.video_clips import decoded_frames, frame_times, make_frames_clip

W, H = 64, 48
# The clip's irregular frame durations (1/90000 s): frames at 0, 0.1, 0.233, 0.3, 0.467,
# 0.567, 0.687, 0.82, 0.9 and 1.05 s.
CLIP_STEPS = [9000, 12000, 6000, 15000, 9000, 10800, 12000, 7200, 13500, 9000]
MASK_STEP = 9000  # the mask video: a frame every 0.1 s
SQUARE = 8  # side of the marked square in the clip's pixels


def _square_at(j: int) -> tuple[int, int]:
    """Where mask frame ``j`` marks its square (x, y in the clip's pixels)."""
    return 4 + 4 * j, 8 + 2 * j


def _background(k: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = (x * 200 // (W - 1) + 20).astype(np.uint8)
    img[..., 1] = (y * 160 // (H - 1) + 40).astype(np.uint8)
    img[..., 2] = 90 + 3 * k
    return img


def _mask_video(path: Path, frames: int, scale: int = 2) -> None:
    """White squares moving on black, at ``scale`` times the clip's size, every 0.1 s."""
    pictures = []
    for j in range(frames):
        m = np.zeros((H * scale, W * scale, 3), np.uint8)
        x, y = _square_at(j)
        m[y * scale : (y + SQUARE) * scale, x * scale : (x + SQUARE) * scale] = 255
        pictures.append(m)
    make_frames_clip(path, pictures, [MASK_STEP] * frames, gop=4)


def _clip(path: Path) -> tuple[list[Fraction], list[int]]:
    """The clip: a red block where the mask frame shown at each frame's time marks it.
    Returns the frame times and, for each frame, the mask frame it goes with."""
    times = [Fraction(sum(CLIP_STEPS[:k]), 90000) for k in range(len(CLIP_STEPS))]
    shown = [int(t / Fraction(MASK_STEP, 90000)) for t in times]  # last mask frame <= t
    frames = []
    for k, j in enumerate(shown):
        img = _background(k)
        x, y = _square_at(j)
        img[y : y + SQUARE, x : x + SQUARE] = (0, 0, 255)
        frames.append(img)
    assert make_frames_clip(path, frames, CLIP_STEPS, gop=5) == times
    return times, shown


def _area(j: int, grow: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    x, y = _square_at(j)
    m[y : y + SQUARE, x : x + SQUARE] = 255
    if grow:
        m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
    return m > 0


def _run(*args: str) -> tuple[int, str, dict]:
    from retouch.cli.main import app

    result = CliRunner().invoke(app, ["run", *args])
    out = args[args.index("-o") + 1]
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    return result.exit_code, result.output, manifest


def test_each_frame_is_filled_where_the_mask_frame_shown_at_its_time_is_white(
    prefect_server, tmp_path
):
    from retouch.lib.settings import get_settings

    lama_models.install_big_lama(get_settings().resolved_model_dir())
    src, masks = tmp_path / "shoot", tmp_path / "masks"
    src.mkdir()
    masks.mkdir()
    times, shown = _clip(src / "party.mp4")
    assert shown != list(range(len(times)))  # matched by time, not by frame number
    _mask_video(masks / "party.mp4", 12)  # twice the clip's size: scaled as mask images are
    dest = tmp_path / "out"
    code, output, manifest = _run(
        str(src), "-p", "remove-objects", "--masks", str(masks), "-o", str(dest),
        "--set", "export.video.segment_seconds=0.5", "--set", "export.video.crf=0",
    )  # fmt: skip
    assert code == 0, output
    (video,) = manifest["images"]
    assert video["status"] == "ok", video["reason"]
    # The review read the mask video at each sampled moment (its fills judged as fills).
    assert len(video["scores"]["frames"]) >= 2
    assert not any(p.startswith("review failed") for p in video["problems"]), video["problems"]
    # Cut at the key frame at 0.567 s: the second segment seeks the mask video there.
    assert [n for *_, n in video["input"]["segments"]] == [5, 5]
    with zipfile.ZipFile(dest / "results.zip") as zf:
        zf.extract("party.mp4", tmp_path / "got")
    got = tmp_path / "got" / "party.mp4"
    assert frame_times(got) == times
    before, after = decoded_frames(src / "party.mp4"), decoded_frames(got)
    for k, (b, a) in enumerate(zip(before, after, strict=True)):
        diff = np.abs(a.astype(int) - b.astype(int)).max(axis=2)
        # Filled: the square grown by the preset's 2 px; 2 px more for 4:2:0 chroma.
        keep = ~_area(shown[k], 4)
        assert diff[keep].max() <= 6, f"frame {k} changed outside its mask"
        square = _area(shown[k], 0)
        assert diff[square].mean() > 40, f"frame {k}: the red block was not removed"
        red = a[square][:, 2].astype(int) - a[square][:, :2].max(axis=1)
        assert red.mean() < 150, f"frame {k}: the block is still red"

    # The same mask again: reused; a changed mask video (same name): computed again.
    code, output, again = _run(
        str(src), "-p", "remove-objects", "--masks", str(masks), "-o", str(tmp_path / "o2"),
        "--set", "export.video.segment_seconds=0.5", "--set", "export.video.crf=0",
    )  # fmt: skip
    assert code == 0, output
    assert again["images"][0]["reused"] is True
    _mask_video(masks / "party.mp4", 12, scale=1)  # the same squares, another file
    code, output, changed = _run(
        str(src), "-p", "remove-objects", "--masks", str(masks), "-o", str(tmp_path / "o3"),
        "--set", "export.video.segment_seconds=0.5", "--set", "export.video.crf=0",
    )  # fmt: skip
    assert code == 0, output
    assert changed["images"][0]["reused"] is False
    assert changed["images"][0]["result_key"] != video["result_key"]


def test_bad_mask_videos_each_fail_their_own_file_and_the_batch_goes_on(prefect_server, tmp_path):
    src, masks = tmp_path / "shoot", tmp_path / "masks"
    src.mkdir()
    masks.mkdir()
    for name in ("good", "short", "junk"):
        _clip(src / f"{name}.mp4")
    _mask_video(masks / "good.mp4", 12)
    _mask_video(masks / "short.mp4", 3)  # 0, 0.1, 0.2 s; its last frame shown 1/25 s
    (masks / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    PILImage.fromarray(_background(0)).save(src / "photo.png")
    _mask_video(masks / "photo.mp4", 3)

    code, output, manifest = _run(
        str(src), "-p", "remove-objects-fast", "--masks", str(masks), "-o", str(tmp_path / "o")
    )
    assert code == 2, output
    by_name = {img["name"]: img for img in manifest["images"]}
    assert by_name["good.mp4"]["status"] == "ok", by_name["good.mp4"]["reason"]
    failed = {n: img["reason"] for n, img in by_name.items() if img["status"] == "failed"}
    assert set(failed) == {"short.mp4", "junk.mp4", "photo.png"}
    # Both found before any frame is computed (no frame number in the reason).
    assert failed["short.mp4"] == (
        f"step 1 (inpaint): short.mp4: its inpaint mask video {masks / 'short.mp4'} "
        "ends at 0.240 s, the clip runs to 1.167 s; give a mask video at least as long as "
        "the clip"
    )
    assert failed["junk.mp4"].startswith(
        f"step 1 (inpaint): junk.mp4: its inpaint mask video {masks / 'junk.mp4'} is unreadable: "
    )
    assert failed["photo.png"] == (
        f"photo.png: its inpaint mask {masks / 'photo.mp4'} is a video; a mask video masks "
        "the frames of a video clip, an image needs a mask image (PNG, white = remove)"
    )
    with zipfile.ZipFile(tmp_path / "o" / "results.zip") as zf:
        assert zf.namelist() == ["good.mp4"]
