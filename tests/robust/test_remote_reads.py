"""Images read from web servers that misbehave (real servers on 127.0.0.1): one that accepts
and never answers, one that answers 503 for a while, a port nothing listens on, a missing
file. None stalls the run; each listed image is delivered or fails with the real reason."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from retouch.cli.main import app
from retouch.lib.settings import Settings, reload_settings
from tests.faultproxy import fault_proxy, file_server, refused_port

RECIPE = """
name = "remote"
[[steps]]
op = "sharpen"
params = { amount = 0.5 }
[export]
format = "png"
"""

BOUND_S = 60  # the whole run, with RETOUCH_REMOTE_TIMEOUT_S=2: the silent server costs ~4 s


def _png(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (14, 20, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _run_bounded(args: list[str], seconds: float) -> tuple[int, str, float]:
    """Run the CLI; fail the test if it is still running after ``seconds``."""
    result: list = []
    started = time.monotonic()
    thread = threading.Thread(
        target=lambda: result.append(CliRunner().invoke(app, args, terminal_width=240)),
        daemon=True,
    )
    thread.start()
    thread.join(seconds)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        pytest.fail(f"the run was still going after {seconds} s")
    outcome = result[0]
    if outcome.exception and not isinstance(outcome.exception, SystemExit):
        raise outcome.exception
    return outcome.exit_code, outcome.output, elapsed


def test_default_wait_for_a_silent_server_is_under_a_minute(monkeypatch):
    monkeypatch.delenv("RETOUCH_REMOTE_TIMEOUT_S", raising=False)
    monkeypatch.delenv("RETOUCH_STORAGE_RETRIES", raising=False)
    s = Settings()
    # Every attempt waits at most the timeout for an answer; backoff adds under 3 s.
    assert (s.storage_retries + 1) * s.remote_timeout_s + 3 < 60


def _setup(tmp_path: Path, monkeypatch) -> tuple[Path, Path, Path]:
    monkeypatch.setenv("RETOUCH_REMOTE_TIMEOUT_S", "2")
    monkeypatch.setenv("RETOUCH_STORAGE_RETRIES", "1")
    reload_settings()
    served = tmp_path / "served"
    served.mkdir()
    for name, seed in (("late.png", 1), ("flaky.png", 2)):
        (served / name).write_bytes(_png(seed))
    local = tmp_path / "local.png"
    local.write_bytes(_png(3))
    recipe = tmp_path / "remote.toml"
    recipe.write_text(RECIPE)
    return served, local, recipe


def _results(dest: Path) -> tuple[dict[str, tuple[str, str | None]], dict, list[str]]:
    manifest = json.loads((dest / "manifest.json").read_text())
    status = {i["name"]: (i["status"], i["reason"]) for i in manifest["images"]}
    with zipfile.ZipFile(dest / "results.zip") as zf:
        return status, manifest, sorted(zf.namelist())


def test_a_server_that_never_answers_fails_its_image_in_bounded_time_with_exit_2(
    prefect_server, tmp_path, monkeypatch
):
    served, local, recipe = _setup(tmp_path, monkeypatch)
    with file_server(str(served)) as base, fault_proxy(base) as silent:
        silent.fail("hang")  # accepts every request and never answers
        listing = tmp_path / "batch.txt"
        listing.write_text(f"{local}\n{silent.url}/late.png\n")
        dest = tmp_path / "out"

        code, output, elapsed = _run_bounded(
            ["run", str(listing), "-p", str(recipe), "-o", str(dest)], BOUND_S
        )
        hung = silent.failed

    assert code == 2, output
    assert elapsed < BOUND_S
    status, manifest, delivered = _results(dest)
    assert status["late.png"] == (
        "failed",
        f"read {silent.url}/late.png failed after 2 attempt(s): no answer from the server "
        "within 2 s (RETOUCH_REMOTE_TIMEOUT_S sets how long to wait). Re-running the same "
        "command resumes where it stopped.",
    )
    assert hung == 2  # one request per attempt: the image was read once, not at listing
    assert status["local.png"] == ("ok", None) and delivered == ["local.png"]
    assert manifest["skipped"] == []
    assert "no answer from the server within 2 s" in " ".join(output.split())


def test_5xx_is_retried_and_refused_or_missing_images_are_failures_with_the_reason(
    prefect_server, tmp_path, monkeypatch
):
    served, local, recipe = _setup(tmp_path, monkeypatch)
    port = refused_port()
    with file_server(str(served)) as base, fault_proxy(base) as flaky:
        flaky.fail("503", requests=1)  # one 503, then the file
        listing = tmp_path / "batch.txt"
        listing.write_text(
            f"{local}\n{flaky.url}/flaky.png\n"
            f"http://127.0.0.1:{port}/refused.png\n{base}/missing.png\n"
        )
        dest = tmp_path / "out"

        code, output, _ = _run_bounded(
            ["run", str(listing), "-p", str(recipe), "-o", str(dest)], BOUND_S
        )
        answered_503 = flaky.failed

    assert code == 2, output
    status, manifest, delivered = _results(dest)
    assert status["flaky.png"] == ("ok", None)
    assert answered_503 == 1  # the 503 really happened and was retried
    assert status["refused.png"] == (
        "failed",
        f"read http://127.0.0.1:{port}/refused.png failed after 2 attempt(s): connection "
        f"refused by 127.0.0.1:{port} (no server is listening there). Re-running the same "
        "command resumes where it stopped.",
    )
    assert status["missing.png"] == ("failed", f"{base}/missing.png: not found (read)")
    assert manifest["skipped"] == []
    assert delivered == ["flaky.png", "local.png"]
