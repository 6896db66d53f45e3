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
