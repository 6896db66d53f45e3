"""SIGKILL while a video's frames are being processed, then the same command again: the
segments already stored are reused (their frames never reach the model again), the others
are computed, and the delivered video is byte-identical to an uninterrupted run's. Each
segment is a task run of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

from tests.robust.test_crash_resume import REPO, _cmd, _env
from tests.tiny_models import install_tiny_models
from tests.video_clips import make_clip

FRAMES = 48
RECIPE = """
name = "video-resume"
[[steps]]
op = "upscale"
params = { model = "realesr-general-x4v3", tile = 0 }
[export.video]
segment_seconds = 0.5
"""


def _stored_segments(workspace: Path) -> list[dict]:
    metas = [json.loads(p.read_text()) for p in (workspace / "results").glob("*/*.json")]
    return [m for m in metas if m.get("kind") == "video-segment"]


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _video(dest: Path) -> bytes:
    with zipfile.ZipFile(dest / "results.zip") as zf:
        return zf.read("clip.mp4")


def test_sigkill_during_a_video_then_rerun_computes_only_unfinished_segments(
    prefect_server, tmp_path, monkeypatch
):
    model_dir = install_tiny_models(tmp_path / "models", monkeypatch, faces=None)
    src, recipe = tmp_path / "src", tmp_path / "video.toml"
    src.mkdir()
    # A key frame every 15 frames (0.6 s): four segments of 15, 15, 15 and 3 frames.
    make_clip(src / "clip.mp4", frames=FRAMES, gop=15, width=64, height=48)
    recipe.write_text(RECIPE)
    dest, workspace = tmp_path / "dest", tmp_path / "ws"
    env = {**_env(tmp_path, model_dir, workspace), "RETOUCH_TEST_MODEL_DELAY": "0.1"}
    events = tmp_path / "events.jsonl"

    proc = subprocess.Popen(
        [*_cmd(src, recipe, dest), "--events", str(events)], cwd=REPO, env=env,
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 150
    try:
        while not _stored_segments(workspace):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    stored = _stored_segments(workspace)
    stored_frames = sum(len(m["pts"]) for m in stored)
    assert 0 < stored_frames < FRAMES, f"kill came too late ({stored_frames} frames stored)"
    assert not (dest / "results.zip").exists()
    progress = [e for e in _events(events) if e["event"] == "frames"]
    assert progress and all(e["segments"] == 4 and e["total"] == FRAMES for e in progress)
    assert all(not e["reused"] and e["fps"] > 0 and e["eta_s"] >= 0 for e in progress)

    # The same command again: only the unfinished segments reach the model.
    events.unlink()
    rerun = subprocess.run([*_cmd(src, recipe, dest), "--events", str(events)], cwd=REPO,
                           env=env, capture_output=True, timeout=300)  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout.decode()[-3000:] + rerun.stderr.decode()[-3000:]
    manifest = json.loads((dest / "manifest.json").read_text())
    (video,) = manifest["images"]
    assert video["status"] == "ok" and not video["reused"]
    assert [n for *_, n in video["input"]["segments"]] == [15, 15, 15, 3]
    assert video["model_calls"] == FRAMES - stored_frames
    # The process time counts the segments the run's own tasks made (0.1 s per model call).
    assert video["timings"]["process"] >= 0.1 * (FRAMES - stored_frames)
    reused = [e for e in _events(events) if e["event"] == "frames" and e["reused"]]
    assert sum(1 for _ in reused) == len(stored)
    assert _stored_segments(workspace) == []  # the joined result holds them now

    # An uninterrupted run elsewhere delivers the same bytes.
    clean_dest = tmp_path / "clean"
    clean = subprocess.run(
        _cmd(src, recipe, clean_dest), cwd=REPO, capture_output=True, timeout=300,
        env={**env, "RETOUCH_WORKSPACE": str(tmp_path / "ws-clean"),
             "RETOUCH_TEST_MODEL_DELAY": "0"},
    )  # fmt: skip
    assert clean.returncode == 0, clean.stdout.decode()[-3000:]
    assert (
        json.loads((clean_dest / "manifest.json").read_text())["images"][0]["model_calls"] == FRAMES
    )
    assert _video(dest) == _video(clean_dest)

    # Each segment was a task run of its own (on the same Prefect server).
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="process-segment-"))
        )
    completed = [r.name for r in runs if r.state is not None and r.state.is_completed()]
    for i in range(1, 5):  # the rerun's and the clean run's
        assert completed.count(f"process-segment-1-{i}") >= 2, completed
