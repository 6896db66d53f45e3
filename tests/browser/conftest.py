"""A real browser for the tests: Debian's headless Chromium, driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

OUTPUT = Path(
    os.environ.get("RETOUCH_TEST_OUTPUT", Path(__file__).resolve().parents[2] / "test-output")
)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless browser for one test module; offline (the pages must need no network).

    Module scope, not session: Playwright's sync API runs an event loop in this thread while
    it is open, and Prefect flows called from a thread with a running loop return coroutines,
    which would break every flow test that runs after the browser tests.
    """
    executable = _chromium()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Chromium for the browser tests: apt-get install chromium")
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@contextmanager
def recording_page(
    browser, allowed: Callable[[str], bool], **context_options: Any
) -> Iterator[Any]:
    """A fresh page that records console errors (``page.errors``) and refuses, and records
    (``page.requested``), every request whose URL ``allowed`` rejects."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **context_options)
    pg = context.new_page()
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("console", lambda m: m.type == "error" and pg.errors.append(m.text))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    requested: list[str] = []
    pg.requested = requested  # type: ignore[attr-defined]

    def guard(route):
        url = route.request.url
        if allowed(url):
            return route.continue_()
        requested.append(url)
        return route.abort()

    pg.route("**/*", guard)
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture
def page(browser) -> Iterator[Any]:
    """A fresh page that records console errors and refuses every network request."""
    with recording_page(browser, lambda url: not url.startswith(("http://", "https://"))) as pg:
        yield pg


@pytest.fixture
def screenshot_dir(request) -> Path:
    out = OUTPUT / "browser"
    out.mkdir(parents=True, exist_ok=True)
    return out
