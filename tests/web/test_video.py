"""Videos through the web API: uploaded beside photos (or refused, naming the file and the
reason), their frames followed while they are processed, and the delivered clip served
with its video type and byte ranges, so a <video> element can play and seek it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import pytest

from tests.video_clips import frame_times, make_audio_only, make_clip
from tests.web.conftest import SAMPLES, wait_for

ROOT = Path(__file__).resolve().parents[2]
ROCKET = (SAMPLES / "rocket.jpg").read_bytes()


def _small_photo() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 80, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


STEPS = ["auto_color", "fit", "sharpen"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    """A 60-frame clip (48x32, 25 fps, AAC sound): three "frames" events when processed."""
    path = tmp_path_factory.mktemp("clips") / "party.mp4"
    make_clip(path, frames=60)
    return path.read_bytes()


# -- the state folded from the events ---------------------------------------------------------


def _batch(tmp_path: Path):
    from retouch.web.batches import Batch

    folder = tmp_path / "b-1"
    folder.mkdir()
    info = {
        "id": "b-1",
        "created": "2026-01-01T00:00:00+00:00",
        "preset": "web-ready",
        "overrides": {},
        "names": ["party.mp4", "rocket.jpg"],
        "source": str(folder / "input"),
        "masks": False,
        "skipped": [],
        "steps": STEPS,
    }
    batch = Batch(folder, info)
    started = (datetime.now(UTC) - timedelta(seconds=60)).isoformat()
    batch.append_event(
        {"event": "web-job", "job": 1, "kind": "run", "names": [], "started": started}
    )
    return batch


def _add(batch, *events) -> dict:
    with open(batch.events_path, "a", encoding="utf-8") as fh:
        for event in events:
            fh.write(json.dumps(event) + "\n")
    batch.read_events()
    return batch.to_json()


def _frames(done, total=480, **extra) -> dict:
    return {
        "event": "frames",
        "name": "party.mp4",
        "done": done,
        "total": total,
        "fps": 12.3,
        "eta_s": 29.3,
        "segment": 1,
        "segments": 2,
        "reused": False,
        **extra,
    }


def test_frames_events_move_the_video_and_the_batch_progress(tmp_path):
    batch = _batch(tmp_path)
    state = _add(
        batch,
        *(
            {"event": "image", "phase": "prepare", "name": n, "ok": True}
            for n in ("party.mp4", "rocket.jpg")
        ),
    )
    video, photo = state["images"]
    assert (video["kind"], photo["kind"]) == ("video", "image")
    assert video["frames"] is None
    assert state["progress"]["fraction"] == pytest.approx(0.05, abs=1e-4)

    state = _add(batch, _frames(120))
    video = state["images"][0]
    assert video["status"] == "prepared"
    assert video["frames"] == {
        "done": 120,
        "total": 480,
        "fps": 12.3,
        "eta_s": 29.3,
        "segment": 1,
        "segments": 2,
        "reused": False,
    }
    # The video counts by its frames: prepared (0.05) plus a quarter of the process span
    # (0.75), beside the photo at 0.05; the batch is the mean of the two.
    expected = (0.05 + 0.75 * 120 / 480 + 0.05) / 2
    assert state["progress"]["fraction"] == pytest.approx(expected, abs=1e-4)
    assert state["progress"]["eta_s"] is not None

    # A damaged line (a count that is no number) changes nothing; frames past the total
    # are capped so the bar never runs past the video's share.
    assert _add(batch, _frames("many"))["images"][0]["frames"]["done"] == 120
    state = _add(batch, _frames(500))
    assert state["images"][0]["frames"]["done"] == 480
    assert state["progress"]["fraction"] == pytest.approx((0.8 + 0.05) / 2, abs=1e-4)

    # Processed: the image phase takes over; a new job starts the count again.
    state = _add(batch, {"event": "image", "phase": "process", "name": "party.mp4", "ok": True})
    assert state["progress"]["fraction"] == pytest.approx((0.8 + 0.05) / 2, abs=1e-4)
    _add(batch, {"event": "web-job-end", "state": "done", "exit_code": 0})
    state = _add(batch, {"event": "web-job", "job": 2, "kind": "run", "names": []})
    assert state["images"][0]["frames"] is None


def test_the_page_accepts_the_servers_video_extensions():
    """The picker's accept list and the page's own filter name every extension the server
    takes as a video (and the result route has a media type for each)."""
    from retouch.lib.video import VIDEO_EXTENSIONS
    from retouch.web.routes.results import VIDEO_MEDIA_TYPES

    html = (ROOT / "web" / "static" / "index.html").read_text(encoding="utf-8")
    accept = re.search(r'id="files"[^>]*accept="([^"]+)"', html)
    assert accept is not None
    listed = {a.strip().lstrip(".") for a in accept.group(1).split(",")}
    assert set(VIDEO_EXTENSIONS) <= listed
    script = (ROOT / "web" / "static" / "app.js").read_text(encoding="utf-8")
    found = re.search(r"var VIDEO_EXT = \[([^\]]*)\]", script)
    assert found is not None
    assert set(json.loads("[" + found.group(1) + "]")) == set(VIDEO_EXTENSIONS)
    assert set(VIDEO_MEDIA_TYPES) == set(VIDEO_EXTENSIONS)


# -- uploads ----------------------------------------------------------------------------------


def test_a_clip_and_a_photo_make_one_batch(serve, clip):
    from retouch.lib.settings import get_settings
    from retouch.web.runner import Runner

    web = serve(runner=Runner(get_settings().home / "web" / "batches", max_running=0))
    created = web.client.post(
        "/api/batches",
        files=[("files", ("shoot/party.mp4", clip)), ("files", ("shoot/rocket.jpg", ROCKET))],
    )
    assert created.status_code == 201, created.text
    batch = created.json()
    assert [(i["name"], i["kind"]) for i in batch["images"]] == [
        ("shoot/party.mp4", "video"),
        ("shoot/rocket.jpg", "image"),
    ]
    stored = web.runner.root / batch["id"] / "input" / "shoot" / "party.mp4"
    assert stored.read_bytes() == clip


def _refused(serve, monkeypatch, files, env=None, path="/api/batches"):
    from retouch.lib.settings import reload_settings

    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    reload_settings()
    web = serve()
    response = web.client.post(path, files=files)
    assert web.client.get("/api/batches").json() == []
    assert list(web.runner.root.iterdir()) == []
    return response.status_code, response.json()["detail"]


def test_a_video_over_the_per_file_limit_is_refused_naming_it_and_the_limit(
    serve, monkeypatch, clip
):
    limit = len(clip) - 1
    photo = _small_photo()
    assert len(photo) < limit  # the photo passes
    status, detail = _refused(
        serve,
        monkeypatch,
        [("files", ("small.jpg", photo)), ("files", ("party.mp4", clip))],
        {"RETOUCH_WEB_MAX_FILE_BYTES": str(limit)},
    )
    assert status == 413
    assert detail.startswith("party.mp4: ") and f"{limit} bytes per file" in detail


@pytest.mark.parametrize(
    ("name", "make", "status", "words"),
    [
        pytest.param(
            "notes.mp4",
            lambda p: p.write_bytes(b"shopping list\n" * 50),
            415,
            ["notes.mp4", "not a readable video"],
            id="text-named-mp4",
        ),
        pytest.param(
            "song.mp4", make_audio_only, 415, ["song.mp4", "no video stream"], id="audio-only"
        ),
        pytest.param(
            "empty.mkv", lambda p: p.write_bytes(b""), 415, ["empty.mkv", "empty"], id="empty"
        ),
        pytest.param(
            "reel.flv",
            lambda p: p.write_bytes(b"FLV"),
            415,
            ["reel.flv", "not an image or video file extension (.flv)", "mp4"],
            id="unknown-extension",
        ),
    ],
)
def test_a_file_that_is_no_usable_video_is_refused_and_costs_nothing(
    serve, monkeypatch, tmp_path, name, make, status, words
):
    path = tmp_path / name
    make(path)
    got, detail = _refused(
        serve,
        monkeypatch,
        [("files", ("rocket.jpg", ROCKET)), ("files", (name, path.read_bytes()))],
    )
    assert got == status, detail
    for word in words:
        assert word in detail, detail


def test_frames_beyond_the_pixel_limit_are_refused(serve, monkeypatch, clip):
    status, detail = _refused(
        serve,
        monkeypatch,
        [("files", ("party.mp4", clip))],
        {"RETOUCH_PIXEL_LIMIT": str(48 * 32 - 1)},
    )
    assert status == 422
    assert detail.startswith("party.mp4: frames of 48x32 exceed the pixel limit")


def test_a_video_is_no_mask_and_no_style_photo(serve, monkeypatch, clip):
    status, detail = _refused(
        serve,
        monkeypatch,
        [("files", ("rocket.jpg", ROCKET)), ("masks", ("rocket.mp4", clip))],
    )
    assert status == 415
    assert detail.startswith("mask rocket.mp4: not an image file extension (.mp4)")
    status, detail = _refused(
        serve,
        monkeypatch,
        [("file", ("party.mp4", clip))],
        path="/api/styles/preview",
    )
    assert status == 415
    assert detail.startswith("party.mp4: not an image file extension (.mp4)")


# -- a real run -------------------------------------------------------------------------------


def test_a_clip_runs_beside_a_photo_and_its_result_plays_with_ranges(
    prefect_server, serve, clip, tmp_path
):
    web = serve()
    c = web.client
    created = c.post(
        "/api/batches",
        files=[("files", ("party.mp4", clip)), ("files", ("rocket.jpg", ROCKET))],
        data={"preset": "web-ready", "overrides": json.dumps({"fit.max_side": 160})},
    )
    assert created.status_code == 201, created.text
    bid = created.json()["id"]
    done = wait_for(c, bid, ("done", "failed", "cancelled"))
    assert done["state"] == "done", done
    video, photo = done["images"]
    assert (video["name"], video["kind"], video["status"]) == ("party.mp4", "video", "done")
    assert photo["kind"] == "image" and photo["frames"] is None

    # The frames the process reported, as the page saw them: every 25 frames and the last.
    events = [
        json.loads(line)
        for line in (web.runner.root / bid / "events.jsonl").read_text().splitlines()
    ]
    counts = [e["done"] for e in events if e.get("event") == "frames"]
    assert counts == [25, 50, 60]
    frames = video["frames"]
    assert (frames["done"], frames["total"], frames["segments"]) == (60, 60, 1)
    assert frames["fps"] > 0 and frames["reused"] is False

    # The review's frames compare; the zoomable full-size view is for photos only.
    assert video["thumbs"]["before"] and video["thumbs"]["after"]
    assert video["full"] == {"before": None, "after": None}
    assert photo["full"]["after"]
    refused = c.get(f"/api/batches/{bid}/full/{video['index']}/after")
    assert refused.status_code == 404
    assert refused.json()["detail"].startswith("party.mp4: a video has no full-size view")

    # The result: a video type, whole and in ranges (as a player asks while seeking).
    url = video["result_url"]
    whole = c.get(url)
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    data = whole.content
    size = len(data)
    assert size > 1000
    got = tmp_path / "got.mp4"
    got.write_bytes(data)
    assert frame_times(got) == [Fraction(i, 25) for i in range(60)]  # every frame, in time

    opening = c.get(url, headers={"Range": "bytes=0-"})
    assert opening.status_code == 206 and opening.content == data
    assert opening.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    middle = c.get(url, headers={"Range": "bytes=100-499"})
    assert middle.status_code == 206
    assert middle.headers["content-type"] == "video/mp4"
    assert middle.headers["content-range"] == f"bytes 100-499/{size}"
    assert middle.content == data[100:500]
    tail = c.get(url, headers={"Range": "bytes=-64"})
    assert tail.status_code == 206 and tail.content == data[-64:]
    head = c.head(url)
    assert head.status_code == 200 and int(head.headers["content-length"]) == size
    past = c.get(url, headers={"Range": f"bytes={size}-"})
    assert past.status_code == 416


def test_a_clip_delivered_as_frames_downloads_as_a_zip_of_its_folder(
    prefect_server, serve, tmp_path
):
    """With export.video.container=frames the result is a folder: its URL gives a ZIP of
    every frame, frames.csv and the audio, the card's picture is the first frame, and a
    selection takes the whole folder."""
    import io
    import zipfile

    from PIL import Image as PILImage

    path = tmp_path / "party.mp4"
    times = make_clip(path, frames=8)
    web = serve()
    c = web.client
    created = c.post(
        "/api/batches",
        files=[("files", ("party.mp4", path.read_bytes())), ("files", ("rocket.jpg", ROCKET))],
        data={
            "preset": "web-ready",
            "overrides": json.dumps({"fit.max_side": 160, "export.video.container": "frames"}),
        },
    )
    assert created.status_code == 201, created.text
    bid = created.json()["id"]
    done = wait_for(c, bid, ("done", "failed", "cancelled"))
    assert done["state"] == "done", (done["error"], done["images"])
    video, photo = done["images"]
    assert (video["kind"], video["status"], video["output_name"]) == ("video", "done", "party")
    assert video["sequence"] == {
        "frames": len(times),
        "format": "png",
        "first_frame_url": f"/api/batches/{bid}/results/{video['index']}/first-frame",
    }
    assert photo["sequence"] is None

    frames = [f"party/party_{i:06d}.png" for i in range(1, len(times) + 1)]
    folder = sorted([*frames, "party/frames.csv", "party/audio.m4a"])
    with zipfile.ZipFile(web.runner.root / bid / "out" / "results.zip") as zf:
        delivered = {name: zf.read(name) for name in folder}

    # The result: the folder as a ZIP with a clear name, resumable like any download.
    whole = c.get(video["result_url"])
    assert whole.status_code == 200, whole.text
    assert whole.headers["content-type"] == "application/zip"
    assert 'filename="party-frames.zip"' in whole.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(whole.content)) as zf:
        assert sorted(zf.namelist()) == folder
        assert {name: zf.read(name) for name in folder} == delivered
    size = len(whole.content)
    part = c.get(video["result_url"], headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == whole.content[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{size}"

    # The card's picture: the first delivered frame, as it is (PNG).
    first = c.get(video["sequence"]["first_frame_url"])
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.content == delivered[frames[0]]
    with PILImage.open(io.BytesIO(first.content)) as im:
        assert im.size == (video["size"]["width"], video["size"]["height"])
    not_frames = c.get(f"/api/batches/{bid}/results/{photo['index']}/first-frame")
    assert not_frames.status_code == 404
    assert not_frames.json()["detail"] == "rocket.jpg: not delivered as an image sequence"

    # The results list counts the folder's bytes; a selection takes every file of it.
    listed = {r["name"]: r for r in c.get(f"/api/batches/{bid}/results").json()}
    assert listed["party.mp4"]["output_name"] == "party"
    assert listed["party.mp4"]["bytes"] == sum(len(b) for b in delivered.values())
    for names in (["party.mp4", "rocket.jpg"], ["party"]):
        selected = c.get(f"/api/batches/{bid}/zip", params={"names": names})
        assert selected.status_code == 200, selected.text
        with zipfile.ZipFile(io.BytesIO(selected.content)) as zf:
            got = sorted(zf.namelist())
            assert [n for n in got if n.startswith("party/")] == folder
            assert {name: zf.read(name) for name in folder} == delivered
        assert ("rocket.jpg" in got) == ("rocket.jpg" in names)
