"""Every way out of `retouch run` and `retouch web` is clean: SIGTERM leaves no process
behind (the embedded Prefect server included), a destination that cannot be written is
found before any image is processed, a failed delivery says in one line what failed, where,
what the destination holds and what to do (no traceback without -v), and a second run
into a destination that is being delivered to is refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from retouch.lib.storage import TEMP_MARKER

REPO = Path(__file__).resolve().parents[2]
RECIPE = """
name = "exits"
[[steps]]
op = "sharpen"
params = { amount = 0.5 }
[export]
format = "png"
"""


def _source(folder: Path, count: int = 4, side: int = 24) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(count):
        arr = rng.integers(0, 255, (side, side + 8, 3), dtype=np.uint8)
        PILImage.fromarray(arr).save(folder / f"img{i:02d}.png")
    return folder


def _env(tmp_path: Path, *, api_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "RETOUCH_HOME": str(tmp_path / "home"),
            "RETOUCH_WORKSPACE": str(tmp_path / "workspace"),
            "RETOUCH_OFFLINE": "1",
            "RETOUCH_WORKERS": "1",
        }
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def _retouch(args: list[str], env: dict[str, str], timeout: float = 240) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "retouch.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _processed(tmp_path: Path) -> list[Path]:
    """Results the run's workspace holds (an image was processed)."""
    return sorted((tmp_path / "workspace" / "results").glob("*/*.json"))


def _recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE)
    return path


# -- processes ----------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # [state, ppid, pgrp, session, ...]


def _in_session(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(entry))
    return found


def _server_children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(int(entry))
        if fields and int(fields[1]) == pid:
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"uvicorn" in cmdline:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


@pytest.mark.parametrize("command", ["run", "web"])
def test_sigterm_leaves_no_process_behind(tmp_path, command):
    """No PREFECT_API_URL: the command starts its own Prefect server, a child process. On
    SIGTERM (as systemd and Docker stop services) the command and that server both end."""
    env = _env(tmp_path, api_url=None)
    if command == "run":
        src = _source(tmp_path / "src")
        args = ["run", str(src), "-p", str(_recipe(tmp_path)), "-o", str(tmp_path / "out")]
    else:
        args = ["web", "--port", "0", "--no-open"]
        with socket.socket() as sock:  # a free port
            sock.bind(("127.0.0.1", 0))
            args[2] = str(sock.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "retouch.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        servers: list[int] = []
        while not servers and time.monotonic() < deadline and proc.poll() is None:
            servers = _server_children(proc.pid)
            time.sleep(0.05)
        assert servers, f"no embedded server was started: {proc.poll()}"
        time.sleep(1.0)  # the server is starting (migrating its database)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        end = time.monotonic() + 10
        while any(_alive(p) for p in servers) and time.monotonic() < end:
            time.sleep(0.1)
        left = [p for p in servers if _alive(p)] + _in_session(proc.pid)
        assert left == [], f"left running after SIGTERM: {left}\n{output}"
        assert proc.returncode == 128 + signal.SIGTERM, output
        assert "Traceback" not in output, output
    finally:
        for pid in _in_session(proc.pid):  # never leave them to the next test
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- destinations that cannot be written ----------------------------------------------------------


def test_a_destination_under_a_file_is_refused_before_any_image_is_processed(
    prefect_server, tmp_path
):
    src = _source(tmp_path / "src")
    blocker = tmp_path / "delivery.txt"
    blocker.write_text("not a folder")
    started = time.monotonic()
    code, output = _retouch(
        ["run", str(src), "-p", str(_recipe(tmp_path)), "-o", str(blocker / "out")],
        _env(tmp_path, api_url=_api_url()),
    )
    assert code == 1, output
    flat = " ".join(output.split())
    assert f"{blocker}, which is a file" in flat and "choose another --out" in flat, output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1, output
    assert _processed(tmp_path) == []  # nothing was processed
    assert time.monotonic() - started < 60
    assert blocker.read_text() == "not a folder"


@pytest.fixture
def mounted(tmp_path):
    """mount(name, options): a small tmpfs at tmp_path/name (root only; unmounted after)."""
    points: list[Path] = []

    def mount(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        points.append(point)
        return point

    yield mount
    for point in points:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_a_read_only_destination_is_refused_in_one_line_before_any_image_is_processed(
    prefect_server, tmp_path, mounted
):
    dest = mounted("ro", "ro,size=64k")
    src = _source(tmp_path / "src")
    code, output = _retouch(
        ["run", str(src), "-p", str(_recipe(tmp_path)), "-o", str(dest / "out")],
        _env(tmp_path, api_url=_api_url()),
    )
    assert code == 1, output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1, output
    flat = " ".join(output.split())
    assert f"{dest / 'out'}: cannot write there (Read-only file system)" in flat, output
    assert "choose another --out" in flat
    assert _processed(tmp_path) == []


def test_a_full_disk_leaves_the_destination_as_it_was_and_says_so_without_traceback(
    prefect_server, tmp_path, mounted
):
    # Room for the check and the ZIP, not for the report of 6 images with their previews.
    disk = mounted("full", "size=48k")
    dest = disk / "out"
    dest.mkdir()
    (dest / "earlier.txt").write_text("an earlier delivery")
    src = _source(tmp_path / "src", count=6, side=40)
    code, output = _retouch(
        ["run", str(src), "-p", str(_recipe(tmp_path)), "-o", str(dest)],
        _env(tmp_path, api_url=_api_url()),
    )
    assert code == 1, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    flat = " ".join(output.split())
    assert "No space left on device" in flat and "free space there" in flat, output
    assert f"Nothing of this run was delivered: {dest} is as it was" in flat, output
    assert sorted(p.name for p in dest.iterdir()) == ["earlier.txt"]  # no ZIP, no temporary
    assert len(_processed(tmp_path)) == 6  # the images were processed: a re-run reuses them


def test_storage_outage_at_delivery_is_reported_while_it_stalls_then_in_one_line(
    prefect_server, moto_s3, tmp_path
):
    from tests.faultproxy import fault_proxy

    bucket = f"exits-{os.getpid()}-{int(time.time())}"
    moto_s3.create_bucket(bucket)
    src = _source(tmp_path / "src")
    with fault_proxy(moto_s3.endpoint_url) as proxy:
        env = _env(tmp_path, api_url=_api_url())
        env.update(moto_s3.env)
        env.update(
            {
                "AWS_ENDPOINT_URL": proxy.url,
                "AWS_MAX_ATTEMPTS": "1",
                "RETOUCH_STORAGE_RETRIES": "3",
                "RETOUCH_DELIVERY_STALL_S": "1",
            }
        )
        # Storage goes away when the delivery starts writing the ZIP, and stays away.
        proxy.fail("503", trigger=lambda method, path: "/out/results.zip" in path)
        code, output = _retouch(
            ["run", str(src), "-p", str(_recipe(tmp_path)), "-o", f"s3://{bucket}/out/"], env
        )
        assert proxy.failed > 0, "no fault was injected"
    assert code == 1, output
    assert "Traceback" not in output, output
    flat = " ".join(output.split())
    assert f"still writing s3://{bucket}/out/results.zip after" in flat, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert f"write s3://{bucket}/out/results.zip failed after 4 attempt(s)" in flat, output
    assert f"Nothing of this run was delivered: s3://{bucket}/out/ is as it was" in flat
    listed = moto_s3.boto3_client().list_objects_v2(Bucket=bucket, Prefix="out/")
    assert listed.get("KeyCount", 0) == 0


# -- two runs, one destination -------------------------------------------------------------------


def test_a_second_run_into_a_destination_being_delivered_to_is_refused(
    prefect_server, tmp_path, monkeypatch
):
    from tests.tiny_models import install_tiny_models

    model_dir = install_tiny_models(tmp_path / "models", monkeypatch, faces=None)
    src = _source(tmp_path / "src", count=6)
    recipe = tmp_path / "slow.toml"
    recipe.write_text(
        'name = "slow"\n[[steps]]\nop = "upscale"\n'
        'params = { model = "realesr-general-x4v3", tile = 0 }\n[export]\nformat = "png"\n'
    )
    dest = tmp_path / "out"
    events = tmp_path / "events.jsonl"
    env = _env(tmp_path, api_url=_api_url())
    env.update(
        {"RETOUCH_MODEL_DIR": str(model_dir), "RETOUCH_TEST_MODEL_DELAY": "0.5",
         "RETOUCH_CHUNK_SIZE": "1"}
    )  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, "-m", "tests.robust._tiny_cli", "run", str(src), "-p", str(recipe),
         "-o", str(dest), "--events", str(events)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            if events.exists() and '"event": "image"' in events.read_text():
                break
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()[0]
        code, output = _retouch(
            ["run", str(src), "-p", str(_recipe(tmp_path)), "-o", str(dest) + "/"], env
        )
        first_output, _ = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert code == 1, output
    flat = " ".join(output.split())
    assert f"{dest}/: another retouch run is delivering there (process {first.pid}" in flat
    assert "wait for it to finish or choose another --out" in flat
    assert "Traceback" not in output
    assert first.returncode == 0, first_output
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["recipe"]["name"] == "slow"  # the first run's delivery, not replaced
    assert [p for p in dest.iterdir() if TEMP_MARKER in p.name] == []
