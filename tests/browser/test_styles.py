"""Comparing styles on the page: one photo, two styles ticked, the contact sheet and the
scores shown, in English and in Chinese, with no request beyond the page's own server."""

from __future__ import annotations

import re
from pathlib import Path

from tests.browser.test_web import _open_page, _Server
from tests.browser.test_web_form import CJK, VISIBLE_TEXT

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SHEET_LOADED = """() => {
  const img = document.getElementById('styles-sheet');
  return !!img && !img.closest('[hidden]') && img.complete && img.naturalWidth > 0;
}"""


def test_compare_two_styles_on_one_photo(browser, retouch_home, screenshot_dir):
    from retouch.lib.quality import preview
    from retouch.lib.settings import get_settings
    from tests.animegan_models import install

    folder = get_settings().resolved_model_dir()
    install(folder, "animeganv2-paprika", seed=0)
    install(folder, "animeganv2-face-paint-v2", seed=1)
    with _Server() as server, _open_page(browser, server) as page:
        page.goto(server.url + "/")
        page.wait_for_selector("#preset option[value=quick]", state="attached")
        page.click("#styles-box > summary")
        page.wait_for_selector("#styles-groups input[value=anime]")
        assert page.locator("#styles-groups input[value='animeganv2-paprika']").is_enabled()
        sd = page.locator("#styles-groups label[data-style='painting-sd']")
        assert sd.locator("input").is_disabled() and "cannot run here" in sd.inner_text()
        assert "Stable Diffusion checkpoint" in sd.get_attribute("title")
        distill = page.locator("#styles-groups label[data-style='animeganv2-celeba-distill']")
        assert "celeba_distill.pt" in distill.get_attribute("title")
        assert "No photo yet" in page.inner_text("#styles-photo")

        # The batch's first photo is used until one is chosen in the section.
        page.set_input_files("#files", [SAMPLES / "chelsea.jpg"])
        assert "chelsea.jpg (the first photo chosen for the batch)" in page.inner_text(
            "#styles-photo"
        )
        page.set_input_files("#styles-file", SAMPLES / "astronaut.jpg")
        assert page.inner_text("#styles-photo") == "Photo: astronaut.jpg"

        page.check("#styles-groups input[value=anime]")
        page.click("#styles-run")
        assert "Tick 2 to 6 styles (now 1)" in page.inner_text("#styles-error")
        page.check("#styles-groups input[value='animeganv2-face-paint-v2']")
        page.select_option("#styles-size", "256")
        page.click("#styles-run")
        assert page.locator("#styles-error").is_hidden()
        assert re.match(r"Rendering 2 styles… \d+ s", page.inner_text("#styles-status"))
        page.wait_for_function(SHEET_LOADED, timeout=120_000)
        width = page.locator("#styles-sheet").evaluate("i => i.naturalWidth")
        assert width == 3 * preview.CELL_SIDE
        rows = page.locator("#styles-rows tr")
        assert rows.evaluate_all("rs => rs.map(r => r.dataset.style)") == [
            "anime",
            "animeganv2-face-paint-v2",
        ]
        for i in range(2):
            score = rows.nth(i).locator("td.score").inner_text()
            assert re.fullmatch(r"\d+\.\d", score), score
            assert "re-drawn" in rows.nth(i).inner_text()
        assert re.match(r"2 styles rendered in \d+\.\d s\.", page.inner_text("#styles-status"))
        assert page.locator("#styles-rows .badge.best").count() == 1
        page.screenshot(path=str(screenshot_dir / "styles-compare.png"), full_page=True)

        # The same section in Chinese: no English left (names and numbers aside).
        page.click("#lang")
        english = re.compile(r"[A-Za-z]{2,}[,.;'’]?\s+[A-Za-z]{2,}")
        fragments = page.evaluate(VISIBLE_TEXT)
        left = [f for f in fragments if english.search(f) and not CJK.search(f)]
        assert left == []
        assert "已转绘" in page.inner_text("#styles-rows")
        assert page.errors == [] and page.requested == []
