"""The web page of `retouch web` in a real browser: upload, live progress, compare, download.

The app runs in this process (uvicorn in a thread) against the session's Prefect test
server; each batch runs as a `retouch run` subprocess like in production. The page may talk
only to its own server: every other request is refused and recorded.
"""

from __future__ import annotations

import base64
import re
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import recording_page

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
CJK = re.compile(r"[\u4e00-\u9fff]")
ALL_DONE = """() => {
  const cards = [...document.querySelectorAll('#cards .card')];
  return cards.length === %d && cards.every(c => ['done', 'failed'].includes(c.dataset.status));
}"""
THUMBS_LOADED = """() => {
  const imgs = [...document.querySelectorAll('#cards .card .thumb img')];
  return imgs.length > 0 && imgs.every(i => !i.hidden && i.complete && i.naturalWidth > 0);
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """`retouch web`'s app served by uvicorn from a thread, stopped cleanly afterwards."""

    def __init__(self) -> None:
        import uvicorn

        from retouch.web.app import create_app

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="retouch-web", daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the web app did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


TOKEN = "t0ken-for-test"


@pytest.fixture
def web(prefect_server, retouch_home, monkeypatch) -> Iterator[_Server]:
    """The app with a token set: the page must pass it on every call and in every link."""
    from retouch.lib.settings import reload_settings

    monkeypatch.setenv("RETOUCH_WEB_TOKEN", TOKEN)
    reload_settings()
    with _Server() as server:
        yield server


@contextmanager
def _open_page(browser, server: _Server) -> Iterator[Any]:
    """A page that may reach only the app's own server; console errors and any other
    request are recorded (``page.errors``, ``page.requested``)."""

    def own(url: str) -> bool:
        return url.startswith(("data:", "blob:")) or url.startswith(server.url + "/")

    with recording_page(browser, own, accept_downloads=True) as pg:
        yield pg


@pytest.fixture
def web_page(browser, web) -> Iterator[Any]:
    with _open_page(browser, web) as pg:
        yield pg


def _statuses(page) -> list[str]:
    return page.locator("#cards .card").evaluate_all("cs => cs.map(c => c.dataset.status)")


def _drop_file(page, path: Path, mime: str) -> None:
    """A synthetic drop of one file on the drop zone, as a file manager would make it."""
    page.evaluate(
        """([name, data, mime]) => {
          const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
          const dt = new DataTransfer();
          dt.items.add(new File([bytes], name, {type: mime}));
          const zone = document.getElementById('drop');
          for (const type of ['dragenter', 'dragover', 'drop']) {
            zone.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
          }
        }""",
        [path.name, base64.b64encode(path.read_bytes()).decode(), mime],
    )


def _drop_folder(page, folder: str, files: dict[str, bytes]) -> None:
    """A drop of a folder as Chromium delivers it: items whose webkitGetAsEntry() is a
    directory entry, read in chunks by a reader. Scripts cannot build real directory
    entries, so these are stand-ins with the same interface over real File objects."""
    page.evaluate(
        """([folder, files]) => {
          const dir = (path, children) => ({
            isFile: false, isDirectory: true, name: path.split('/').pop(), fullPath: '/' + path,
            createReader() {
              let left = children.slice();
              // Real readers hand out entries in chunks and then an empty list.
              return {readEntries(ok) { setTimeout(() => ok(left.splice(0, 2)), 0); }};
            }});
          const file = (path, data) => ({
            isFile: true, isDirectory: false, name: path.split('/').pop(), fullPath: '/' + path,
            file(ok) {
              const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
              setTimeout(() => ok(new File([bytes], path.split('/').pop())), 0);
            }});
          const tree = {};
          for (const [rel, data] of Object.entries(files)) {
            const parts = rel.split('/');
            let node = tree;
            parts.slice(0, -1).forEach(p => { node = node[p] = node[p] || {}; });
            node[parts[parts.length - 1]] = data;
          }
          const build = (path, node) => dir(path, Object.entries(node).map(([name, v]) =>
            typeof v === 'string' ? file(path + '/' + name, v) : build(path + '/' + name, v)));
          const root = build(folder, tree);
          const item = {kind: 'file', webkitGetAsEntry: () => root, getAsFile: () => null};
          const event = new Event('drop', {bubbles: true, cancelable: true});
          Object.defineProperty(event, 'dataTransfer', {value: {items: [item], files: []}});
          document.getElementById('drop').dispatchEvent(event);
        }""",
        [folder, {k: base64.b64encode(v).decode() for k, v in files.items()}],
    )


def test_batch_from_upload_to_zip(web, web_page, tmp_path, screenshot_dir):
    page = web_page
    assert page.request.get(web.url + "/api/batches").status == 401
    page.goto(f"{web.url}/?token={TOKEN}")
    page.wait_for_selector("#preset option[value=quick]", state="attached")
    assert page.locator("html").get_attribute("lang") == "en"
    page.select_option("#preset", "quick")

    # Three photos through the file picker, two as a dropped-in folder (they keep their
    # folder in the name), one dropped on the drop zone.
    page.set_input_files(
        "#files", [SAMPLES / n for n in ("astronaut.jpg", "camera.png", "chelsea.jpg")]
    )
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    for name in ("coffee.jpg", "hubble.jpg"):
        (shoot / name).write_bytes((SAMPLES / name).read_bytes())
    page.set_input_files("#folder", shoot)
    _drop_file(page, SAMPLES / "rocket.jpg", "image/jpeg")
    chosen = page.locator("#chosen-list .name").all_inner_texts()
    assert sorted(chosen) == sorted(
        [
            "astronaut.jpg",
            "camera.png",
            "chelsea.jpg",
            "shoot/coffee.jpg",
            "shoot/hubble.jpg",
            "rocket.jpg",
        ]
    )
    total = sum(p.stat().st_size for p in SAMPLES.iterdir())
    assert total < 1024 * 1024  # shown in KB
    summary = page.locator("#chosen-summary").inner_text()
    assert summary == f"6 photos, {round(total / 1024, 1):g} KB"

    # One parameter changed in the generated form: only that one is sent as an override.
    page.locator("#params-box > summary").click()
    amount = page.locator("#params [data-key='sharpen.amount']")
    assert amount.get_attribute("type") == "number"
    assert amount.get_attribute("min") == "0" and amount.get_attribute("max") == "3"
    assert amount.input_value() == "0.6"
    amount.fill("0.8")
    assert page.locator("#params-changed").inner_text() == "1 changed"
    page.click("#submit")

    page.wait_for_selector("#batch:not([hidden])")
    assert "sharpen.amount=0.8" in page.locator("#batch-meta").inner_text()
    batch_id = page.locator("#batch-title").inner_text().split()[-1]
    assert batch_id.startswith("b-")

    # Live progress: catch the page while some photos are finished and others are not.
    progress_seen = False
    seen: set[str] = set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        statuses = _statuses(page)
        seen.update(statuses)
        if len(statuses) == 6 and all(s in ("done", "failed") for s in statuses):
            break
        shown = page.locator("#cards .card .thumb img:not([hidden])").evaluate_all(
            "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length"
        )
        if not progress_seen and shown and any(s not in ("done", "failed") for s in statuses):
            page.screenshot(path=str(screenshot_dir / "web-progress.png"), full_page=True)
            progress_seen = True
        page.wait_for_timeout(250)
    page.wait_for_function(ALL_DONE % 6, timeout=10_000)
    assert _statuses(page) == ["done"] * 6
    # Each photo was followed through its phases, not just flipped to done at the end.
    assert seen & {"prepared", "processed", "reviewed"}, seen
    page.wait_for_selector("#batch-state.state-done")
    page.wait_for_function(THUMBS_LOADED, timeout=20_000)
    assert page.locator("#progress-text").inner_text() == "6 of 6 finished"
    # Previews load lazily (a batch of thousands must not fetch them all at once).
    lazy = page.locator("#cards .card .thumb img").evaluate_all("imgs => imgs.map(i => i.loading)")
    assert lazy == ["lazy"] * 6
    assert page.locator("#progress").get_attribute("aria-valuenow") == "100"
    page.screenshot(path=str(screenshot_dir / "web-done.png"), full_page=True)

    # Before/after comparison of one photo: both layers decoded, the slider clips the before
    # layer by mouse drag and by keyboard.
    card = page.locator("#cards .card[data-name='chelsea.jpg']")
    assert card.locator(".score").inner_text().startswith("score ")
    card.get_by_role("button", name="Compare before and after for chelsea.jpg").click()
    dialog = page.locator("#compare")
    assert dialog.is_visible()
    assert "chelsea.jpg" in page.locator("#compare-title").inner_text()
    page.wait_for_function(
        """() => ['compare-after', 'compare-before', 'crop-before', 'crop-after']
            .every(id => { const i = document.getElementById(id);
                           return i.complete && i.naturalWidth > 0; })"""
    )
    assert re.search(r"Score: \d+\.\d", page.locator("#compare-facts").inner_text())
    stage = page.locator("#compare-stage")
    before = page.locator("#compare-before")
    clip_start = before.evaluate("e => e.style.clipPath")
    assert clip_start.replace(" ", "") == "inset(0px50%0px0px)"
    box = stage.bounding_box()
    assert box and box["width"] > 100
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.5, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.65, y, steps=4)
    page.mouse.move(box["x"] + box["width"] * 0.8, y, steps=4)
    page.mouse.up()
    pos = float(stage.get_attribute("data-pos"))
    assert 77 <= pos <= 83
    clip = before.evaluate("e => e.style.clipPath")
    assert clip != clip_start and f"{100 - pos:g}" in clip
    page.locator("#compare-range").focus()
    page.keyboard.press("Home")
    assert stage.get_attribute("data-pos") == "0.0"
    assert before.evaluate("e => e.style.clipPath").replace(" ", "") == "inset(0px100%0px0px)"
    page.keyboard.press("ArrowRight")
    assert stage.get_attribute("data-pos") == "0.5"
    page.mouse.click(box["x"] + box["width"] * 0.3, y)
    assert 27 <= float(stage.get_attribute("data-pos")) <= 33
    page.screenshot(path=str(screenshot_dir / "web-compare.png"))
    page.keyboard.press("Escape")
    assert not dialog.is_visible()

    # The review report and every download carry the token in their address.
    report = page.locator("#report")
    assert report.is_visible() and f"token={TOKEN}" in report.get_attribute("href")
    answer = page.request.get(web.url + report.get_attribute("href"))
    assert answer.ok and "retouch report" in answer.text()
    assert f"token={TOKEN}" in page.locator("#zip-all").get_attribute("href")

    # Download all as ZIP: one entry per uploaded photo.
    with page.expect_download() as download:
        page.click("#zip-all")
    saved = tmp_path / "all.zip"
    download.value.save_as(saved)
    with zipfile.ZipFile(saved) as zf:
        assert zf.testzip() is None
        images = [n for n in zf.namelist() if re.search(r"\.(jpe?g|png|webp|tiff?)$", n, re.I)]
    assert sorted(Path(n).stem for n in images) == sorted(p.stem for p in SAMPLES.iterdir())

    # Download selected: two ticked cards give a ZIP of only those two.
    page.locator("#cards .card[data-name='camera.png'] input.pick").check()
    page.locator("#cards .card[data-name='shoot/coffee.jpg'] input.pick").check()
    assert page.locator("#zip-selected").inner_text() == "Download selected (2)"
    with page.expect_download() as download:
        page.click("#zip-selected")
    saved = tmp_path / "selected.zip"
    download.value.save_as(saved)
    with zipfile.ZipFile(saved) as zf:
        stems = sorted(Path(n).stem for n in zf.namelist() if not n.endswith((".json", ".html")))
    assert stems == ["camera", "coffee"]

    # Regenerate one photo with a stronger sharpening: only it runs again, its new preview
    # replaces the old one, and the batch is done again.
    page.click("#select-none")
    page.locator("#cards .card[data-name='chelsea.jpg'] input.pick").check()
    page.locator("#regen-box > summary").click()
    regen_amount = page.locator("#regen-params [data-key='sharpen.amount']")
    assert regen_amount.input_value() == "0.8"  # the batch's own override is the start
    regen_amount.fill("2")
    old_src = card.locator(".thumb img").get_attribute("src")
    assert page.locator("#regen").inner_text() == "Regenerate selected (1)"
    page.click("#regen")
    page.wait_for_function(
        "() => document.querySelector(\"#cards .card[data-name='chelsea.jpg']\").dataset.status"
        " !== 'done' || document.getElementById('batch-state').textContent !== 'done'"
    )
    page.wait_for_selector("#batch-state.state-done", timeout=180_000)
    page.wait_for_function(ALL_DONE % 6, timeout=10_000)
    assert _statuses(page) == ["done"] * 6
    page.wait_for_function(THUMBS_LOADED, timeout=20_000)
    new_src = card.locator(".thumb img").get_attribute("src")
    assert new_src != old_src and "v=" in new_src

    # Chinese and back; the choice is remembered across a reload.
    english_title = page.locator("#title").inner_text()
    page.click("#lang")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    for selector in ("#title", "#zip-all", "#batch-state", "#new-title", "#submit"):
        assert CJK.search(page.locator(selector).inner_text()), selector
    assert page.locator("#cards .card .badge").first.inner_text() == "完成"
    page.screenshot(path=str(screenshot_dir / "web-zh.png"), full_page=False)
    page.reload()
    page.wait_for_selector("#cards .card[data-status=done]")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert CJK.search(page.locator("#title").inner_text())
    page.click("#lang")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("#title").inner_text() == english_title
    assert page.locator("#zip-all").inner_text() == "Download all (ZIP)"

    # The earlier batches list has this batch and reopens it.
    row = page.locator(f"#history-rows tr[data-id='{batch_id}']")
    assert "6/6 done" in row.inner_text()
    page.click("#batch-close")
    assert page.locator("#batch").is_hidden()
    row.get_by_role("button").click()
    page.wait_for_function(ALL_DONE % 6, timeout=10_000)

    assert page.errors == []
    assert page.requested == []


def test_refused_upload_then_a_cancelled_batch(
    prefect_server, retouch_home, browser, tmp_path, screenshot_dir
):
    """A text file named .jpg is refused by the server before anything starts and the page
    shows the reason naming the file; without it the batch starts and can be cancelled."""
    bad = tmp_path / "notes.jpg"
    bad.write_text("shopping list: milk, eggs\n")
    with _Server() as server, _open_page(browser, server) as page:
        api = page.request
        page.goto(server.url + "/")
        page.wait_for_selector("#preset option[value=quick]", state="attached")
        page.set_input_files("#files", [SAMPLES / "chelsea.jpg", SAMPLES / "rocket.jpg", bad])
        assert page.locator("#chosen-summary").inner_text().startswith("3 photos")
        page.click("#submit")
        error = page.locator("#form-error")
        error.wait_for(state="visible")
        text = error.inner_text()
        assert text.startswith("notes.jpg: ") and re.search(r"HTTP 4(15|22)\)$", text), text
        assert page.locator("#chosen-list li.refused .name").all_inner_texts() == ["notes.jpg"]
        assert page.locator("#batch").is_hidden()
        page.screenshot(path=str(screenshot_dir / "web-bad-upload.png"), full_page=False)
        listed = api.get(server.url + "/api/batches")
        assert listed.ok and listed.json() == []  # nothing started
        assert page.locator("#history-empty").is_visible()

        # Take the bad file out, drop a folder with a sub-folder (hidden and non-image files
        # in it stay out), start again; then cancel the running batch.
        page.get_by_role("button", name="Remove notes.jpg").click()
        assert page.locator("#chosen-summary").inner_text().startswith("2 photos")
        _drop_folder(
            page,
            "trip",
            {
                "day1/coffee.jpg": (SAMPLES / "coffee.jpg").read_bytes(),
                "day1/.DS_Store": b"\0\0\0\1Bud1",
                "day2/hubble.jpg": (SAMPLES / "hubble.jpg").read_bytes(),
                "readme.txt": b"photos of the trip",
            },
        )
        page.wait_for_function(
            "() => document.getElementById('chosen-summary').textContent.startsWith('4 photos')"
        )
        chosen = page.locator("#chosen-list .name").all_inner_texts()
        assert chosen == [
            "chelsea.jpg",
            "rocket.jpg",
            "trip/day1/coffee.jpg",
            "trip/day2/hubble.jpg",
        ]
        notes = page.locator("#chosen-notes").inner_text()
        assert "trip/readme.txt" in notes and "trip/day1/.DS_Store" in notes
        page.click("#submit")
        page.wait_for_selector("#batch:not([hidden])")
        assert error.is_hidden()
        cancel = page.locator("#cancel")
        assert cancel.is_visible() and cancel.is_enabled()
        cancel.click()
        page.wait_for_selector("#batch-state.state-cancelled", timeout=60_000)
        assert cancel.is_hidden()
        assert page.locator("#batch-notice").inner_text() == "The batch was cancelled."
        assert page.locator("#zip-all").is_hidden()
        listed = api.get(server.url + "/api/batches").json()
        assert [b["state"] for b in listed] == ["cancelled"]
        batch = api.get(f"{server.url}/api/batches/{listed[0]['id']}").json()
        assert sorted(i["name"] for i in batch["images"]) == sorted(chosen)
        page.wait_for_selector("#history-rows tr .state-cancelled")
        # The browser logs the refused upload itself; nothing else went wrong.
        errors = [e for e in page.errors if not re.search(r"status of 4(15|22)\b", e)]
        assert errors == []
        assert page.requested == []
