"""The review report of a real demo run, opened in a real browser: slider, sort, views."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_demo_report_in_chromium(prefect_server, tmp_path, page, screenshot_dir):
    from retouch.cli.main import app

    dest = tmp_path / "demo"
    result = CliRunner().invoke(app, ["run", str(SAMPLES), "--preset", "quick", "--out", str(dest)])
    assert result.exit_code == 0, result.output
    report = dest / "report.html"
    manifest = json.loads((dest / "manifest.json").read_text())
    names = [img["name"] for img in manifest["images"]]
    assert len(names) == 6

    page.goto(report.as_uri())
    assert page.title().startswith("retouch report")
    # Every image has a before/after slider with both pictures decoded by the browser.
    sliders = page.locator(".compare")
    assert sliders.count() == 6
    first = page.locator("section.image").first
    loaded = first.locator(".compare img").evaluate_all(
        "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)"
    )
    assert loaded == [True, True]

    # Drag the first slider from the middle to 80% of its width: the before layer is clipped
    # to that position and the handle follows.
    compare = sliders.first
    compare.scroll_into_view_if_needed()
    box = compare.bounding_box()
    assert box and box["width"] > 50
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.5, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.65, y, steps=5)
    page.mouse.move(box["x"] + box["width"] * 0.8, y, steps=5)
    page.mouse.up()
    pos = float(compare.get_attribute("data-pos"))
    assert 77 <= pos <= 83
    clip = compare.locator(".before-layer").evaluate("e => e.style.clipPath")
    assert clip.replace(" ", "").startswith("inset(0px") or "inset(0" in clip
    assert f"{100 - pos:.1f}" in clip or f"{100 - pos:g}" in clip
    page.screenshot(path=str(screenshot_dir / "report-slider.png"), full_page=False)

    # Sort the table by score (descending on the second click): rows follow the numbers.
    header = page.locator("#images th", has_text="score")
    header.click()
    header.click()
    scores = page.locator("#images tbody tr td:nth-child(4)").evaluate_all(
        "tds => tds.map(t => parseFloat(t.dataset.v))"
    )
    assert scores == sorted(scores, reverse=True) and len(scores) == 6
    assert header.get_attribute("data-dir") == "desc"

    # The other views: side by side, and the 100% crops at the result's own resolution.
    first.locator(".modes button[data-mode=zoom]").click()
    crops = first.locator(".v-zoom img")
    assert crops.count() == 2 and crops.first.is_visible()
    widths = crops.evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert widths[0] == widths[1] > 0
    assert not first.locator(".v-slider").is_visible()
    first.locator(".modes button[data-mode=side]").click()
    assert first.locator(".v-side img").first.is_visible()

    page.screenshot(path=str(screenshot_dir / "report-full.png"), full_page=True)
    assert (screenshot_dir / "report-slider.png").stat().st_size > 10_000
    assert page.errors == []  # no console errors
    assert page.requested == []  # works offline: nothing fetched from the network


def test_a_videos_preview_clip_plays_in_chromium(tmp_path, page):
    """The report's before/after clip of a video is H.264 the browser plays from the page
    itself (a data: URI), at its size, as long as the span it names."""
    from fractions import Fraction

    from retouch.lib.image import Image
    from retouch.lib.quality.report import render_report
    from retouch.lib.video import media, segments
    from retouch.lib.video.preview_clip import make_preview_clip
    from tests.video_clips import make_clip

    src = tmp_path / "clip.mp4"
    make_clip(src, frames=30, width=64, height=48, audio=None)
    result = tmp_path / "result.mp4"
    settings = type("S", (), {"codec": "h264", "crf": None, "preset": None, "container": "same"})
    segments.process_segment(
        str(src), str(result), start_pts=None, end_pts=None,
        process=lambda image: Image(pixels=255 - image.pixels),
        encoding=media.encoding_for("mp4", settings)[0], label=src.name,
    )  # fmt: skip
    clip = make_preview_clip(str(src), str(result), src.name, Fraction(2, 5), Fraction(6, 5))
    assert clip is not None
    video = {
        "index": 1, "name": "clip.mp4", "status": "ok", "problems": [],
        "scores": {"score": 50.0, "verdict": "unchanged", "preview_clip": clip.to_json()},
    }  # fmt: skip
    manifest = {
        "run_id": "r", "created": "now", "source": str(tmp_path), "recipe": {"name": "quick"},
        "summary": {"total": 1, "succeeded": 1, "failed": 0}, "images": [video],
    }  # fmt: skip
    report = tmp_path / "report.html"
    report.write_text(render_report(manifest, {1: {"preview-clip": clip.data}}))

    page.goto(report.as_uri())
    player = page.locator("section.image video")
    assert player.count() == 1
    assert "Before | After · 0.40–1.20 s · 20 frames" in page.locator(".preview-clip").inner_text()
    page.wait_for_function("document.querySelector('video').readyState >= 2", timeout=10_000)
    width, height, duration, error = player.evaluate(
        "v => [v.videoWidth, v.videoHeight, v.duration, v.error && v.error.code]"
    )
    assert (width, height, error) == (128, 48, None)
    assert abs(duration - 0.8) < 0.05
    assert player.evaluate("v => v.loop && v.muted && v.controls")
    player.evaluate("v => v.play()")
    page.wait_for_function("document.querySelector('video').currentTime > 0.2", timeout=10_000)
    assert page.errors == [] and page.requested == []
