"""The web page's form and live view in a real browser, without running a batch: presets
that cannot run here, export settings, the advanced fold, Chinese throughout, and the
progress of a running batch (its state served by a stand-in for the API)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.browser.test_web import _open_page, _Server

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
CJK = re.compile(r"[\u4e00-\u9fff]")
# Visible text (and the options of visible selects) of the page, one fragment per node.
VISIBLE_TEXT = """() => {
  const out = [];
  const shown = el => el && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const text = n.textContent.trim();
    const parent = n.parentElement;
    if (!text || !parent || parent.closest('option, script, style')) continue;
    if (shown(parent)) out.push(text);
  }
  document.querySelectorAll('select').forEach(s => {
    if (shown(s)) [...s.options].forEach(o => out.push(o.textContent.trim()));
  });
  return out;
}"""


# What the page sends with an upload (Playwright does not show multipart bodies with files).
RECORD_UPLOADS = """() => {
  window.sentForms = [];
  const send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.send = function (body) {
    if (body instanceof FormData) {
      window.sentForms.push({preset: body.get('preset'), overrides: body.get('overrides')});
    }
    return send.call(this, body);
  };
}"""


def test_presets_without_weights_are_disabled_with_the_reason(browser):
    with _Server() as server, _open_page(browser, server) as page:
        page.goto(server.url + "/")
        page.wait_for_selector("#preset option[value=quick]", state="attached")
        x4 = page.locator("#preset option[value='upscale-x4']")
        assert x4.is_disabled() and "cannot run here" in x4.inner_text()
        assert "RealESRGAN_x4plus.pth" in x4.get_attribute("title")
        assert page.locator("#preset option[value=quick]").is_enabled()
        assert page.locator("#preset").input_value() == "quick"
        box = page.locator("#preset-unavailable-box")
        assert box.is_visible()
        box.locator("summary").click()
        reason = page.locator("#preset-unavailable li[data-preset='upscale-x4']").inner_text()
        assert "RealESRGAN_x4plus.pth" in reason
        assert "retouch models pull realesrgan-x4plus" in reason
        shipped_ok = page.locator("#preset option:not([disabled])").evaluate_all(
            "os => os.map(o => o.value)"
        )
        assert "upscale-x4" not in shipped_ok and "web-ready" in shipped_ok
        assert page.errors == [] and page.requested == []


def test_export_settings_and_expert_parameters_become_cli_overrides(browser):
    """Export settings and an advanced parameter changed in the form are sent as the
    overrides `retouch run --set` takes, and the recipe they make is the one asked for."""
    from retouch.lib.recipe import apply_overrides, load_preset
    from retouch.web.runner import override_args

    with _Server() as server, _open_page(browser, server) as page:
        page.route(
            f"{server.url}/api/batches",
            lambda route: route.fulfill(status=400, json={"detail": "stopped by the test"}),
        )
        page.goto(server.url + "/")
        page.wait_for_selector("#preset option[value=quick]", state="attached")
        page.set_input_files("#files", [SAMPLES / "chelsea.jpg"])
        page.evaluate(RECORD_UPLOADS)

        # Expert parameters wait in a fold of their step; everyday ones are in view.
        page.locator("#params-box > summary").click()
        tile_pad = page.locator("#params [data-key='upscale.tile_pad']")
        assert page.locator("#params [data-key='sharpen.amount']").is_visible()
        assert not tile_pad.is_visible()
        for key in ("upscale.tile", "upscale.pre_pad", "upscale.half", "upscale.tile_batch"):
            assert page.locator(f"#params details.advanced [data-key='{key}']").count() == 1
        assert page.locator("#params details.advanced [data-key='upscale.model']").count() == 0
        tile_pad.locator("xpath=ancestor::details[1]/summary").click()
        assert tile_pad.is_visible()
        tile_pad.fill("16")

        page.locator("#export-box > summary").click()
        assert page.locator("#x-format").input_value() == "jpg"  # the preset's own
        assert page.locator("#x-quality").input_value() == "92"
        page.select_option("#x-format", "webp")
        page.fill("#x-quality", "80")
        page.fill("#x-template", "{index}-{stem}.{ext}")
        assert page.locator("#x-max-side").is_hidden()
        page.select_option("#x-resize", "max_side")
        page.fill("#x-max-side", "320")
        assert page.locator("#x-mark-pos").is_hidden()
        page.fill("#x-mark", "PROOF")
        page.select_option("#x-mark-pos", "top-left")
        assert page.locator("#export-changed").inner_text() == "6 changed"
        page.click("#submit")
        page.locator("#form-error").wait_for(state="visible")

        sent = page.evaluate("() => window.sentForms")
        assert len(sent) == 1 and sent[0]["preset"] == "quick"
        overrides = json.loads(sent[0]["overrides"])
        assert overrides == {
            "upscale.tile_pad": 16,
            "export.format": "webp",
            "export.quality": 80,
            "export.name_template": "{index}-{stem}.{ext}",
            "export.resize.max_side": 320,
            "export.watermark.text": "PROOF",
            "export.watermark.position": "top-left",
        }
        recipe = apply_overrides(load_preset("quick"), override_args(overrides))
        export = recipe.export
        assert (export.format, export.quality, export.name_template) == (
            "webp",
            80,
            "{index}-{stem}.{ext}",
        )
        assert export.resize is not None and export.resize.max_side == 320
        assert export.watermark is not None
        assert (export.watermark.text, export.watermark.position) == ("PROOF", "top-left")
        upscale = next(s for s in recipe.steps if s.op == "upscale")
        assert upscale.parsed().tile_pad == 16

        # A bad value is named before anything is sent.
        page.fill("#x-quality", "0")
        page.click("#submit")
        assert "1 to 100" in page.locator("#form-error").inner_text()
        assert len(page.evaluate("() => window.sentForms")) == 1
        page.click("#export-reset")
        assert page.locator("#x-format").input_value() == "jpg"
        assert page.locator("#export-changed").is_hidden()
        errors = [e for e in page.errors if "status of 400" not in e]
        assert errors == [] and page.requested == []


def test_no_english_left_in_chinese(browser):
    """In Chinese, every preset's description, parameter help, fold and export setting is
    Chinese: no visible fragment of English words is left (names and values aside)."""
    from retouch.lib.models import fetch

    # Every preset available, so each can be chosen and its form shown.
    folder = fetch.model_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for spec in _all_specs():
        if not spec.bundled:
            (folder / spec.filename).write_bytes(b"weights")
    english = re.compile(r"[A-Za-z]{2,}[,.;'’]?\s+[A-Za-z]{2,}")
    with _Server() as server, _open_page(browser, server) as page:
        page.goto(server.url + "/")
        page.wait_for_selector("#preset option[value=quick]", state="attached")
        # The style comparison's choices too (the section is opened with the other folds).
        page.wait_for_selector("#styles-groups input[value=anime]", state="attached")
        page.click("#lang")
        assert page.locator("html").get_attribute("lang") == "zh-CN"
        presets = page.locator("#preset option").evaluate_all("os => os.map(o => o.value)")
        assert len(presets) >= 6
        left: dict[str, list[str]] = {}
        for preset in presets:
            page.select_option("#preset", preset)
            page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            if page.locator("#x-resize").count():  # every export field in view
                page.select_option("#x-resize", "exact")
                page.fill("#x-mark", "样张")
            fragments = page.evaluate(VISIBLE_TEXT)
            untranslated = [f for f in fragments if english.search(f) and not CJK.search(f)]
            if untranslated:
                left[preset] = untranslated
        assert left == {}, f"{sum(map(len, left.values()))} English fragments: {left}"
        assert page.errors == [] and page.requested == []


def _all_specs():
    from retouch.lib.models import specs
    from retouch.lib.recipe import load_preset, preset_names

    names: set[str] = set()
    for preset in preset_names():
        for model in load_preset(preset).models():
            names.update(specs.required_models(model))
    return [specs.get_spec(n) for n in sorted(names)]


RUNNING = {
    "id": "b-20260101-000000-abcdef",
    "state": "running",
    "created": "2026-01-01T00:00:00+00:00",
    "preset": "quick",
    "overrides": {},
    "total": 4,
    "counts": {"pending": 0, "running": 4, "done": 0, "failed": 0},
    "progress": {"fraction": 0.5, "reviewed": 1, "exported": 0, "elapsed_s": 75, "eta_s": 75},
    "steps": ["auto_color", "denoise", "upscale", "sharpen"],
    "skipped": [],
    "error": None,
    "run_id": "run-1",
    "zip_url": None,
    "report_url": None,
    "exit_code": None,
}


def _image(index: int, name: str, status: str, **extra) -> dict:
    return {
        "name": name,
        "index": index,
        "status": status,
        "phase": {"prepared": "prepare", "reviewed": "review"}.get(status),
        "error": None,
        "note": None,
        "score": None,
        "score_before": None,
        "verdict": None,
        "step": None,
        "step_op": None,
        "reused": False,
        "thumbs": {"before": None, "after": None, "crop-before": None, "crop-after": None},
        "output_name": None,
        "result_url": None,
        **extra,
    }


def test_live_progress_counts_reviews_and_shows_steps_reuse_and_eta(browser):
    batch = {
        **RUNNING,
        "images": [
            _image(1, "a.jpg", "reviewed", reused=True, score=60.0, score_before=50.0),
            _image(2, "b.jpg", "prepared", step=2, step_op="denoise"),
            _image(3, "c.jpg", "prepared"),
            _image(4, "d.jpg", "prepared"),
        ],
    }
    with _Server() as server, _open_page(browser, server) as page:
        page.route(
            f"{server.url}/api/batches/{batch['id']}",
            lambda route: route.fulfill(status=200, json=batch),
        )
        page.goto(f"{server.url}/#{batch['id']}")
        page.wait_for_selector("#cards .card[data-name='b.jpg']")
        assert page.locator("#progress-text").inner_text() == "1 of 4 reviewed · 0 exported"
        assert page.locator("#progress").get_attribute("aria-valuenow") == "50"
        widths = page.evaluate(
            "() => ['done', 'reviewed', 'work'].map(k => "
            "document.getElementById('progress-' + k).getBoundingClientRect().width)"
        )
        assert widths[0] == 0 and widths[1] > 0 and widths[2] > 0, widths
        assert page.locator("#progress-eta").inner_text() == "about 1 min 15 s left"
        card_b = page.locator("#cards .card[data-name='b.jpg']")
        assert card_b.locator(".phase").inner_text() == "phase: process · step 3 of 4: upscale"
        card_a = page.locator("#cards .card[data-name='a.jpg']")
        assert card_a.locator(".reused").is_visible()
        assert card_a.locator(".reused").inner_text() == "reused"
        assert card_a.locator(".score").inner_text().startswith("score 50.0 → 60.0")
        assert card_b.locator(".reused").is_hidden()
        page.click("#lang")
        assert page.locator("#progress-eta").inner_text() == "预计还需 1 分 15 秒"
        assert card_b.locator(".phase").inner_text() == "阶段：处理 · 第 3/4 步：upscale"
        assert page.errors == [] and page.requested == []
