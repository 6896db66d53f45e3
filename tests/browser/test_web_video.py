"""Videos on the web page in a real browser: chosen beside photos, followed frame by frame
while they are processed (the state served by a stand-in for the API), and played on their
card once delivered (a finished batch laid out on disk, served by the real app)."""

from __future__ import annotations

import io
from fractions import Fraction

import pytest
from PIL import Image

from tests.browser.test_web import _drop_file, _open_page, _Server
from tests.browser.test_web_form import RUNNING, _image
from tests.video_clips import make_clip
from tests.web.conftest import stored_batch

TOKEN = "video-t0ken"


def test_a_video_in_the_process_phase_shows_its_frames_rate_and_time_left(browser):
    batch = {
        **RUNNING,
        "total": 2,
        "counts": {"pending": 0, "running": 2, "done": 0, "failed": 0},
        "progress": {"fraction": 0.3, "reviewed": 0, "exported": 0, "elapsed_s": 20, "eta_s": 40},
        "images": [
            _image(
                1,
                "party.mp4",
                "prepared",
                kind="video",
                frames={
                    "done": 120,
                    "total": 480,
                    "fps": 12.34,
                    "eta_s": 29.2,
                    "segment": 1,
                    "segments": 1,
                    "reused": False,
                },
            ),
            _image(
                2,
                "long.mkv",
                "prepared",
                kind="video",
                frames={
                    "done": 300,
                    "total": 900,
                    "fps": None,
                    "eta_s": None,
                    "segment": 2,
                    "segments": 3,
                    "reused": True,
                },
            ),
        ],
    }
    with _Server() as server, _open_page(browser, server) as page:
        page.route(
            f"{server.url}/api/batches/{batch['id']}",
            lambda route: route.fulfill(status=200, json=batch),
        )
        page.goto(f"{server.url}/#{batch['id']}")
        page.wait_for_selector("#cards .card[data-name='long.mkv']")
        party = page.locator("#cards .card[data-name='party.mp4'] .phase")
        long = page.locator("#cards .card[data-name='long.mkv'] .phase")
        assert party.inner_text() == "phase: process · frame 120/480 · 12.3 fps · about 29 s left"
        assert (
            long.inner_text()
            == "phase: process · frame 300/900 · stored by an earlier run · segment 2/3"
        )
        page.click("#lang")
        assert party.inner_text() == "阶段：处理 · 第 120/480 帧 · 12.3 帧/秒 · 预计还需 29 秒"
        assert (
            long.inner_text() == "阶段：处理 · 第 300/900 帧 · 取自先前运行存储的片段 · 第 2/3 段"
        )
        assert page.locator("#cards video").count() == 0  # nothing delivered yet
        assert page.errors == [] and page.requested == []


def _jpeg(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), color).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def video_batch(monkeypatch, tmp_path):
    """A finished batch: a VP9 WebM clip (48x32, 20 frames; a format every Chromium plays)
    and a photo, each with its review previews; the server requires a token."""
    from retouch.lib.settings import get_settings, reload_settings

    monkeypatch.setenv("RETOUCH_WEB_TOKEN", TOKEN)
    reload_settings()
    clip = tmp_path / "party.webm"
    make_clip(
        clip, frames=20, codec="libvpx-vp9", audio=None, fmt="webm", time_base=Fraction(1, 1000)
    )
    photo = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(photo, format="PNG")
    thumbs = {"before": _jpeg((90, 90, 90)), "after": _jpeg((200, 120, 40))}
    root = get_settings().home / "web" / "batches"
    return stored_batch(
        root,
        {"party.webm": clip.read_bytes(), "sky.png": photo.getvalue()},
        thumbs={"party.webm": thumbs, "sky.png": thumbs},
    )


def test_a_delivered_video_plays_on_its_card(browser, video_batch, screenshot_dir):
    batch_id = video_batch
    with _Server() as server, _open_page(browser, server) as page:
        page.goto(f"{server.url}/?token={TOKEN}#{batch_id}")
        card = page.locator("#cards .card[data-name='party.webm']")
        player = card.locator("video")
        player.wait_for()
        assert player.get_attribute("controls") is not None
        src, poster = player.evaluate("v => [v.src, v.poster]")
        assert src == f"{server.url}/api/batches/{batch_id}/results/1?token={TOKEN}"
        assert poster == f"{server.url}/api/batches/{batch_id}/thumbs/1/after?token={TOKEN}"
        assert player.get_attribute("aria-label") == "The result of party.webm (video)"
        # The browser reads the clip through the result route: its size and length.
        page.wait_for_function(
            "() => { const v = document.querySelector(\"#cards .card[data-name='party.webm'] video\");"
            " return v && v.readyState >= 1; }",
            timeout=15000,
        )
        width, height, duration = player.evaluate("v => [v.videoWidth, v.videoHeight, v.duration]")
        assert (width, height) == (48, 32)
        assert duration == pytest.approx(20 / 25, abs=0.05)
        # Seeking asks for the bytes it needs (the server answers ranges).
        player.evaluate("v => { v.currentTime = 0.5; }")
        page.wait_for_function(
            "() => { const v = document.querySelector(\"#cards .card[data-name='party.webm'] video\");"
            " return !v.seeking && Math.abs(v.currentTime - 0.5) < 0.05; }",
            timeout=15000,
        )
        assert card.locator(".thumb").is_hidden()  # the player takes the preview's place
        # The photo keeps its preview and no player; the video's comparison is its review.
        photo = page.locator("#cards .card[data-name='sky.png']")
        assert photo.locator("video").count() == 0 and photo.locator(".thumb").is_visible()
        card.get_by_role("button", name="Compare before and after for party.webm").click()
        page.wait_for_function(
            "() => { const i = document.getElementById('compare-after');"
            " return i.complete && i.naturalWidth === 48; }"
        )
        page.keyboard.press("Escape")
        # Polling keeps the same player (no reload that would restart it).
        player.evaluate("v => { v.dataset.mark = 'kept'; }")
        page.wait_for_timeout(1600)
        assert player.get_attribute("data-mark") == "kept"
        page.screenshot(path=str(screenshot_dir / "video-card.png"))
        assert page.errors == [] and page.requested == []


def test_choosing_a_video_beside_photos(browser, tmp_path):
    clip = tmp_path / "party.mp4"
    make_clip(clip, frames=5)
    with _Server() as server, _open_page(browser, server) as page:
        page.goto(server.url + "/")
        page.wait_for_selector("#preset option[value=quick]", state="attached")
        _drop_file(page, clip, "video/mp4")
        sky = tmp_path / "sky.jpg"
        sky.write_bytes(_jpeg((30, 120, 200)))
        _drop_file(page, sky, "image/jpeg")
        size = (clip.stat().st_size + sky.stat().st_size) / 1024
        assert page.locator("#chosen-summary").inner_text() == (
            f"2 files (1 of them videos), {round(size, 1):g} KB"
        )
        assert page.locator("#chosen-notes").is_hidden()
        # Masks are painted on photos only.
        targets = page.locator("#paint-target option").evaluate_all("os => os.map(o => o.value)")
        assert targets == ["sky.jpg"]
        accept = page.locator("#files").get_attribute("accept") or ""
        assert "video/*" in accept and ".mkv" in accept
        assert page.errors == [] and page.requested == []


def test_a_video_delivered_as_frames_shows_its_first_frame_and_a_zip_download(browser):
    """No player for an image sequence: the card's picture is its first frame and its
    download says how many frames the ZIP holds (the state served by a stand-in)."""
    bid = RUNNING["id"]
    first_url = f"/api/batches/{bid}/results/1/first-frame"
    frame = io.BytesIO()
    Image.new("RGB", (96, 64), (10, 200, 90)).save(frame, format="PNG")
    thumbs = {"before": None, "after": None, "crop-before": None, "crop-after": None}
    batch = {
        **RUNNING,
        "state": "done",
        "total": 1,
        "counts": {"pending": 0, "running": 0, "done": 1, "failed": 0},
        "progress": {"fraction": 1, "reviewed": 1, "exported": 1, "elapsed_s": 9, "eta_s": None},
        "zip_url": f"/api/batches/{bid}/zip",
        "exit_code": 0,
        "images": [
            _image(
                1,
                "party.mp4",
                "done",
                kind="video",
                phase="export",
                thumbs=thumbs,
                output_name="party",
                result_url=f"/api/batches/{bid}/results/1",
                sequence={"frames": 8, "format": "png", "first_frame_url": first_url},
            )
        ],
    }
    with _Server() as server, _open_page(browser, server) as page:
        page.route(
            f"{server.url}/api/batches/{bid}", lambda route: route.fulfill(status=200, json=batch)
        )
        page.route(
            f"{server.url}{first_url}",
            lambda route: route.fulfill(
                status=200, body=frame.getvalue(), content_type="image/png"
            ),
        )
        page.goto(f"{server.url}/#{bid}")
        card = page.locator("#cards .card[data-name='party.mp4']")
        card.wait_for()
        page.wait_for_function(
            "() => { const i = document.querySelector(\"#cards .card[data-name='party.mp4'] "
            '.thumb img"); return i && i.complete && i.naturalWidth === 96; }'
        )
        picture = card.locator(".thumb img")
        assert picture.get_attribute("src") == first_url
        assert picture.get_attribute("alt") == "first frame: party.mp4"
        assert card.locator("video").count() == 0 and card.locator(".thumb").is_visible()
        download = card.locator("a.button")
        assert download.inner_text() == "Download 8 frames (ZIP)"
        assert download.get_attribute("href") == f"/api/batches/{bid}/results/1"
        assert download.get_attribute("aria-label") == (
            "Download the 8 frames of party.mp4 as a ZIP (with frames.csv and the audio)"
        )
        page.click("#lang")
        assert download.inner_text() == "下载 8 帧（ZIP）"
        assert picture.get_attribute("alt") == "第一帧: party.mp4"
        assert page.errors == [] and page.requested == []
