"""Painting an inpainting mask on a chosen photo in the web page, in a real browser: brush,
eraser, undo, an empty painting refused, editing again, and the mask the upload sends (a
PNG at the photo's full size, named after its stem, white where the strokes were)."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from tests.browser.test_web import _open_page, _Server

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
PHOTO = SAMPLES / "chelsea.jpg"  # 451 x 300: not square, so a transposed mask would show

# The masks each upload sends, read back as base64 (Playwright shows no multipart files).
RECORD_MASKS = """() => {
  window.sentMasks = null;
  const send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.send = function (body) {
    if (body instanceof FormData) {
      Promise.all(body.getAll('masks').map(async m => {
        const bytes = new Uint8Array(await m.arrayBuffer());
        let text = '';
        for (let i = 0; i < bytes.length; i += 8192) {
          text += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
        }
        return {name: m.name, type: m.type, data: btoa(text)};
      })).then(masks => { window.sentMasks = masks; });
    }
    return send.call(this, body);
  };
}"""

# A pen stroke made of synthetic pointer events, given in the photo's pixels.
PEN_STROKE = """([points, width, height]) => {
  const canvas = document.getElementById('paint-canvas');
  const r = canvas.getBoundingClientRect();
  const at = ([x, y]) => ({clientX: r.left + x * r.width / width,
                           clientY: r.top + y * r.height / height});
  const fire = (type, p, buttons) => canvas.dispatchEvent(new PointerEvent(type, {
    pointerId: 7, pointerType: 'pen', isPrimary: true, button: 0, buttons, pressure: 0.5,
    bubbles: true, cancelable: true, composed: true, ...at(p)}));
  fire('pointerdown', points[0], 1);
  points.slice(1).forEach(p => fire('pointermove', p, 1));
  fire('pointerup', points[points.length - 1], 0);
}"""

PAINTED_PIXELS = """() => {
  const c = document.getElementById('paint-canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
  return n;
}"""

# The visible text of the painter dialog, one fragment per node.
DIALOG_TEXT = """() => {
  const out = [];
  const walker = document.createTreeWalker(document.getElementById('painter'), NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const p = n.parentElement;
    if (n.textContent.trim() && p.getClientRects().length) out.push(n.textContent.trim());
  }
  return out;
}"""


def _segment_distance(xs, ys, a, b):
    """Distance of each pixel centre to the segment a-b (all in the photo's pixels)."""
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / float(dx * dx + dy * dy), 0, 1)
    return np.hypot(xs - (ax + t * dx), ys - (ay + t * dy))


def test_a_painted_mask_is_sent_at_the_photos_size(browser, tmp_path, screenshot_dir):
    from retouch.lib.masks import MaskSource

    width, height = Image.open(PHOTO).size
    brush = ((100, 150), (300, 150), 40)  # from, to, diameter in the photo's pixels
    eraser = ((200, 110), (200, 190), 30)

    with _Server() as server, _open_page(browser, server) as page:
        page.route(
            f"{server.url}/api/batches",
            lambda route: route.fulfill(status=400, json={"detail": "stopped by the test"}),
        )
        page.goto(server.url + "/")
        # remove-objects-fast: no weights needed (remove-objects is offered only with big-lama)
        page.wait_for_selector("#preset option[value='remove-objects-fast']", state="attached")
        page.select_option("#preset", "remove-objects-fast")
        assert page.locator("#masks-box").is_visible()
        assert page.locator("#paint-nofiles").is_visible()
        assert page.locator("#paint-open").is_hidden()
        missing = page.evaluate(
            """() => Object.keys(I18N.dict.en)
                 .filter(k => /^(paint|masks)\\./.test(k) && !(k in I18N.dict['zh-CN']))"""
        )
        assert missing == []

        page.set_input_files("#files", [SAMPLES / "camera.png", PHOTO])
        page.select_option("#paint-target", label="chelsea.jpg")
        page.click("#paint-open")
        dialog = page.locator("#painter")
        page.wait_for_selector("#paint-stage:not([hidden])")
        assert page.locator("#painter-title").inner_text() == "Paint a mask: chelsea.jpg"
        canvas = page.locator("#paint-canvas")
        assert canvas.get_attribute("aria-label")
        assert page.get_by_label("Brush", exact=True).is_checked()
        assert page.locator("#paint-undo").is_disabled()

        # Nothing painted yet: done is refused, with the reason, and nothing is added.
        page.click("#paint-done")
        error = page.locator("#paint-error")
        error.wait_for(state="visible")
        assert error.inner_text().startswith("Nothing is painted")
        assert dialog.is_visible()

        box = canvas.bounding_box()
        assert box is not None
        assert abs(box["width"] / box["height"] - width / height) < 0.01

        def screen(x: float, y: float) -> tuple[float, float]:
            return box["x"] + x * box["width"] / width, box["y"] + y * box["height"] / height

        # A brush stroke with the mouse.
        page.get_by_label("Brush size").fill(str(brush[2]))
        assert page.locator("#paint-size-value").inner_text() == f"{brush[2]} px"
        page.mouse.move(*screen(*brush[0]))
        page.mouse.down()
        page.mouse.move(*screen(*brush[1]), steps=12)
        page.mouse.up()
        assert error.is_hidden()
        assert canvas.bounding_box() == box  # the message going away did not move the photo
        assert page.evaluate(PAINTED_PIXELS) > 0

        # Part of it erased with a pen.
        page.get_by_label("Eraser").check()
        page.get_by_label("Brush size").fill(str(eraser[2]))
        pen = [[eraser[0][0], eraser[0][1] + i * 8] for i in range(11)]
        assert pen[-1] == list(eraser[1])
        page.evaluate(PEN_STROKE, [pen, width, height])

        # A stray dot by keyboard brush, undone with Ctrl+Z.
        canvas.focus()
        page.keyboard.press("b")
        assert page.get_by_label("Brush", exact=True).is_checked()
        page.mouse.click(*screen(420, 40))
        page.keyboard.press("Control+z")
        assert page.locator("#paint-undo").is_enabled()

        page.screenshot(path=str(screenshot_dir / "web-mask-paint.png"))
        page.click("#paint-done")
        dialog.wait_for(state="hidden")
        assert page.locator("#masks-summary").inner_text() == "1 masks chosen"
        row = page.locator("#painted-list li[data-stem='chelsea']")
        assert "chelsea.jpg" in row.inner_text() and "chelsea.png" in row.inner_text()
        assert "(mask painted)" in page.locator("#paint-target option:checked").inner_text()
        page.locator("#masks-box").screenshot(path=str(screenshot_dir / "web-mask-painted.png"))

        # Edited again: the earlier strokes are there; Escape leaves the mask as it was.
        row.get_by_role("button", name="Edit the painted mask of chelsea.jpg").click()
        page.wait_for_selector("#paint-stage:not([hidden])")
        assert page.evaluate(PAINTED_PIXELS) > 0
        assert page.locator("#paint-undo").is_enabled()
        page.keyboard.press("Escape")
        dialog.wait_for(state="hidden")
        assert page.locator("#masks-summary").inner_text() == "1 masks chosen"

        page.evaluate(RECORD_MASKS)
        page.click("#submit")
        page.locator("#form-error").wait_for(state="visible")
        page.wait_for_function("() => window.sentMasks !== null")
        sent = page.evaluate("() => window.sentMasks")

        # A mask file picked for the same stem replaces the painted one.
        picked = tmp_path / "chelsea.png"
        Image.new("L", (width, height), 255).save(picked)
        page.set_input_files("#masks", picked)
        assert page.locator("#painted-list li").count() == 0
        assert page.locator("#masks-summary").inner_text() == "1 masks chosen"

        # A painted mask can be taken out again.
        page.select_option("#paint-target", label="camera.png")
        page.click("#paint-open")
        page.wait_for_selector("#paint-stage:not([hidden])")
        box = canvas.bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.click("#paint-done")
        dialog.wait_for(state="hidden")
        assert page.locator("#masks-summary").inner_text() == "2 masks chosen"
        page.get_by_role("button", name="Remove the painted mask of camera.png").click()
        assert page.locator("#painted-list li").count() == 0
        assert page.locator("#masks-summary").inner_text() == "1 masks chosen"

        # In Chinese, the painter has no English left (the file name aside).
        page.click("#lang")
        page.click("#paint-open")
        page.wait_for_selector("#paint-stage:not([hidden])")
        page.click("#paint-done")  # nothing painted on camera.png now
        page.wait_for_function("() => document.getElementById('paint-error').textContent")
        texts = page.evaluate(DIALOG_TEXT)
        english = [f for f in texts if re.search(r"[A-Za-z]{2,}\s+[A-Za-z]{2,}", f)]
        assert english == [] and "绘制蒙版：camera.png" in texts
        assert page.locator("#paint-size-value").inner_text().endswith("像素")
        page.keyboard.press("Escape")
        dialog.wait_for(state="hidden")
        assert page.locator("#masks-summary").inner_text() == "已选择 1 个蒙版"

        errors = [e for e in page.errors if "status of 400" not in e]
        assert errors == [] and page.requested == []

    assert [(m["name"], m["type"]) for m in sent] == [("chelsea.png", "image/png")]
    data = base64.b64decode(sent[0]["data"])
    png = Image.open(io.BytesIO(data))
    assert png.format == "PNG" and png.size == (width, height)
    assert png.mode in ("L", "RGB", "RGBA")
    pixels = np.asarray(png.convert("RGBA"))
    assert (pixels[:, :, 3] == 255).all()  # opaque
    assert (pixels[:, :, 0] == pixels[:, :, 1]).all() and (pixels[:, :, 1] == pixels[:, :, 2]).all()
    assert set(np.unique(pixels[:, :, 0])) == {0, 255}

    # The mask as a run reads it (by the photo's stem), against the strokes drawn.
    folder = tmp_path / "masks"
    folder.mkdir()
    (folder / sent[0]["name"]).write_bytes(data)
    mask = MaskSource(str(folder), 10**8)("chelsea.jpg")
    assert mask is not None and mask.shape == (height, width)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    d_brush = _segment_distance(xs, ys, brush[0], brush[1])
    d_eraser = _segment_distance(xs, ys, eraser[0], eraser[1])
    expected = (d_brush < brush[2] / 2) & ~(d_eraser < eraser[2] / 2)
    sure = (np.abs(d_brush - brush[2] / 2) > 1.5) & (np.abs(d_eraser - eraser[2] / 2) > 1.5)
    wrong = (mask == 255) != expected
    assert not wrong[sure].any(), f"{int(wrong[sure].sum())} pixels differ from the strokes"
    assert mask[150, 150] == 255 and mask[150, 250] == 255  # the stroke, both sides
    assert mask[150, 200] == 0  # erased
    assert mask[40, 420] == 0  # the undone dot
    white = int((mask == 255).sum())
    assert abs(white - int(expected.sum())) < 0.03 * expected.sum()
