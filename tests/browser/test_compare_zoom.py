"""The zoomable, pannable comparison in a real browser, on a finished 4x upscale laid out on
disk (no run needed): the full-size images are fetched only once the view needs more pixels
than the preview has, 100% is one result pixel per screen pixel, and the before (input) and
after (result) layers stay on top of each other through zoom, pan and the slider."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance

from tests.browser.test_web import _open_page, _Server
from tests.web.conftest import stored_batch

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
CJK = re.compile(r"[\u4e00-\u9fff]")
TOKEN = "zoom-t0ken"
LAYERS = """() => ['compare-before', 'compare-after'].map(id => {
  const e = document.getElementById(id);
  const r = e.getBoundingClientRect();
  return {transform: e.style.transform, clip: e.style.clipPath, kind: e.dataset.kind,
          natural: e.naturalWidth, complete: e.complete,
          x: r.x, y: r.y, w: r.width, h: r.height};
})"""


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture
def upscale_batch(monkeypatch):
    """A finished batch: chelsea.jpg (451x300) delivered as a 1804x1200 PNG, with 480 px
    previews; the server requires a token."""
    from retouch.lib.settings import get_settings, reload_settings

    monkeypatch.setenv("RETOUCH_WEB_TOKEN", TOKEN)
    reload_settings()
    source = Image.open(SAMPLES / "chelsea.jpg").convert("RGB")
    result = ImageEnhance.Color(source.resize((1804, 1200), Image.LANCZOS)).enhance(1.8)
    png = io.BytesIO()
    result.save(png, format="PNG")
    thumbs = {
        "before": _jpeg(source.resize((480, 319), Image.LANCZOS)),
        "after": _jpeg(result.resize((480, 319), Image.LANCZOS)),
    }
    root = get_settings().home / "web" / "batches"
    batch_id = stored_batch(
        root,
        {"chelsea.png": png.getvalue()},
        inputs={"chelsea.png": (SAMPLES / "chelsea.jpg").read_bytes()},
        thumbs={"chelsea.png": thumbs},
    )
    return batch_id


def _split_on_screen(layer: dict) -> float:
    """Where the before layer's clip ends on screen (its right inset, in its own box)."""
    right = float(re.search(r"inset\(0px ([\d.e-]+)% 0px 0px\)", layer["clip"]).group(1))
    return layer["x"] + layer["w"] * (1 - right / 100)


def test_zoom_to_100_percent_loads_full_size_and_pans_both_layers_together(
    browser, upscale_batch, screenshot_dir
):
    batch_id = upscale_batch
    with _Server() as server, _open_page(browser, server) as page:
        full_requests: list[str] = []
        page.on("request", lambda r: "/full/" in r.url and full_requests.append(r.url))
        page.goto(f"{server.url}/?token={TOKEN}#{batch_id}")
        card = page.locator("#cards .card[data-name='chelsea.png']")
        card.get_by_role("button", name="Compare before and after for chelsea.png").click()
        page.wait_for_function(
            """() => ['compare-after', 'compare-before'].every(id => {
                 const i = document.getElementById(id); return i.complete && i.naturalWidth > 0; })"""
        )
        stage = page.locator("#compare-stage")
        page.wait_for_function("() => document.getElementById('zoom-level').textContent !== ''")
        # Fit: the 480 px preview, which is 27% of the 1804 px result; nothing full-size yet.
        assert page.locator("#zoom-level").inner_text() == "27%"
        box = stage.bounding_box()
        assert box and round(box["width"]) == 480 and abs(box["height"] - 480 * 1200 / 1804) < 0.1
        before, after = page.evaluate(LAYERS)
        assert before["transform"] == after["transform"] == ""
        assert before["clip"].replace(" ", "") == "inset(0px50%0px0px)"
        assert page.locator("#zoom-fit").is_disabled()
        page.wait_for_timeout(300)
        assert full_requests == []

        # 100%: the full-size input and result are fetched, and one result pixel is one
        # screen pixel; the input (451 px wide) is stretched to the result's size.
        page.click("#zoom-actual")
        page.wait_for_function(
            """() => ['compare-after', 'compare-before'].every(id => {
                 const i = document.getElementById(id);
                 return i.dataset.kind === 'full' && i.complete && i.naturalWidth > 0; })"""
        )
        base = f"{server.url}/api/batches/{batch_id}/full/1"
        assert sorted(u.split("?")[0] for u in full_requests) == [f"{base}/after", f"{base}/before"]
        assert all(f"token={TOKEN}" in u for u in full_requests)
        assert page.locator("#zoom-level").inner_text() == "100%"
        assert stage.get_attribute("data-zoom") == "100"
        before, after = page.evaluate(LAYERS)
        assert (after["natural"], before["natural"]) == (1804, 451)
        assert after["transform"] and before["transform"] == after["transform"]
        assert abs(after["w"] - 1804) < 1 and abs(after["h"] - 1200) < 1
        for key in ("x", "y", "w", "h"):
            assert abs(before[key] - after[key]) < 0.5, key
        # The split is still under the slider's line, in the middle of the stage.
        assert abs(_split_on_screen(before) - (box["x"] + box["width"] / 2)) < 1
        assert page.locator("#compare-zoom-note, #zoom-note").first.is_hidden()

        # Pan: a drag away from the slider's line moves both layers, not the slider.
        y = box["y"] + box["height"] / 2
        start_x = box["x"] + box["width"] * 0.25
        page.mouse.move(start_x, y)
        page.mouse.down()
        page.mouse.move(start_x - 60, y - 40, steps=3)
        page.mouse.move(start_x - 150, y - 80, steps=3)
        page.mouse.up()
        moved_before, moved_after = page.evaluate(LAYERS)
        assert moved_after["transform"] != after["transform"]
        assert moved_before["transform"] == moved_after["transform"]
        assert abs(moved_after["x"] - (after["x"] - 150)) < 1
        assert abs(moved_after["y"] - (after["y"] - 80)) < 1
        for key in ("x", "y", "w", "h"):
            assert abs(moved_before[key] - moved_after[key]) < 0.5, key
        assert stage.get_attribute("data-pos") == "50.0"
        assert abs(_split_on_screen(moved_before) - (box["x"] + box["width"] / 2)) < 1

        # The slider's line still moves the split (and only it) when zoomed in.
        line_x = box["x"] + box["width"] / 2
        page.mouse.move(line_x, y)
        page.mouse.down()
        page.mouse.move(line_x + 96, y, steps=4)
        page.mouse.up()
        assert 69 <= float(stage.get_attribute("data-pos")) <= 71
        slid_before, slid_after = page.evaluate(LAYERS)
        assert slid_after["transform"] == moved_after["transform"]
        assert abs(_split_on_screen(slid_before) - (line_x + 96)) < 1.5
        page.screenshot(path=str(screenshot_dir / "web-compare-zoom.png"))

        # Fit again, then the wheel zooms in about the pointer; both layers follow.
        page.click("#zoom-fit")
        assert page.locator("#zoom-level").inner_text() == "27%"
        assert page.evaluate(LAYERS)[1]["transform"] == ""
        page.mouse.move(box["x"] + 100, box["y"] + 100)
        page.mouse.wheel(0, -300)
        page.wait_for_function(
            "() => Number(document.getElementById('compare-stage').dataset.zoom) > 27"
        )
        wheel_before, wheel_after = page.evaluate(LAYERS)
        assert wheel_after["transform"] and wheel_before["transform"] == wheel_after["transform"]
        assert len(full_requests) == 2  # already loaded: not fetched again

        # In Chinese the zoom controls speak Chinese.
        page.keyboard.press("Escape")
        page.click("#lang")
        card.locator("button.small").first.click()
        assert page.locator("#zoom-fit").inner_text() == "适合窗口"
        assert CJK.search(page.locator(".zoom-hint").inner_text())
        assert CJK.search(page.locator("#zoom-in").get_attribute("title"))
        assert page.errors == [] and page.requested == []


def test_a_result_too_large_for_the_browser_keeps_its_preview_and_says_why(
    browser, upscale_batch, monkeypatch
):
    from retouch.web import results

    monkeypatch.setattr(
        results, "FULL_VIEW_MAX_PIXELS", 1_000_000
    )  # the input fits, not the result
    with _Server() as server, _open_page(browser, server) as page:
        page.goto(f"{server.url}/?token={TOKEN}#{upscale_batch}")
        card = page.locator("#cards .card[data-name='chelsea.png']")
        card.get_by_role("button", name="Compare before and after for chelsea.png").click()
        page.wait_for_function("() => document.getElementById('zoom-level').textContent === '27%'")
        page.click("#zoom-in")
        note = page.locator("#zoom-note")
        page.wait_for_function(
            "() => document.getElementById('zoom-note').textContent.startsWith('The full-size')"
        )
        assert note.inner_text() == (
            "The full-size image is not available (chelsea.png: the after image is 1804x1200 "
            "= 2.2 MP, more than the 1 MP the full-size view shows; download the file to see "
            "it at full size); the preview is shown."
        )
        before, after = page.evaluate(LAYERS)
        assert (after["kind"], after["natural"]) == ("preview", 480)
        assert (before["kind"], before["natural"]) == ("full", 451)
        assert before["transform"] == after["transform"] != ""
        for key in ("x", "y", "w", "h"):
            assert abs(before[key] - after[key]) < 0.5, key
        errors = [e for e in page.errors if "status of 413" not in e]
        assert errors == [] and page.requested == []
