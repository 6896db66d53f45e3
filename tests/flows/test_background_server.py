"""The Prefect server the commands share in the background (no PREFECT_API_URL): started once
and found by later commands, one server when two commands start at once, stale records
replaced, stopped when unused, and RETOUCH_SERVER_IDLE_S=0 keeping a server per command.
Real processes and real servers; every server a test starts is killed at its end."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from retouch.flows import background

REPO = Path(__file__).resolve().parents[2]
STARTED = "starting a background Prefect server"


def _servers(folder: Path) -> list[int]:
    """Live background-server processes whose state folder is ``folder``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if background.MODULE.encode() in args and str(folder).encode() in args:
            if background.is_server_process(int(entry)):
                found.append(int(entry))
    return found


@pytest.fixture
def home(tmp_path):
    """PREFECT_HOME of the test; every server started on it is killed afterwards."""
    folder = tmp_path / "prefect-home"
    folder.mkdir()
    yield folder
    for pid in _servers(folder):
        os.kill(pid, signal.SIGKILL)


def _env(tmp_path: Path, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RETOUCH_"))}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "RETOUCH_HOME": str(tmp_path / "retouch-home"),
            "RETOUCH_OFFLINE": "1",
            "RETOUCH_SERVER_IDLE_S": "120",
            **extra,
        }
    )
    return env


def _retouch(args: list[str], env: dict[str, str], timeout: float = 240):
    return subprocess.run(
        [sys.executable, "-m", "retouch.cli", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _record(home: Path) -> dict | None:
    try:
        return json.loads((home / background.STATE_NAME).read_text())
    except OSError:
        return None


def _source(folder: Path, count: int = 2) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(count):
        arr = rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)
        PILImage.fromarray(arr).save(folder / f"img{i}.png")
    return folder


def _flow_runs(record: dict, *, auth: bool = True) -> int | None:
    """Flow runs the server recorded (None: it refused the request)."""
    import httpx

    headers = background.auth_header(record["auth"]) if auth else {}
    answer = httpx.post(f"{record['url']}/flow_runs/count", json={}, headers=headers, timeout=30)
    return int(answer.json()) if answer.status_code == 200 else None


def _wait_gone(pid: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not background.is_server_process(pid):
            return True
        time.sleep(0.2)
    return False


def test_two_runs_in_a_row_share_one_server_which_status_shows_and_stop_stops(tmp_path, home):
    env = _env(tmp_path, home)
    src = _source(tmp_path / "src")
    first = _retouch(["run", str(src), "-p", "web-ready", "-o", str(tmp_path / "o1")], env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert STARTED in first.stderr
    record = _record(home)
    assert record is not None and record["status"] == "ready", record
    server = record["pid"]
    assert _servers(home) == [server]  # it outlived the command that started it

    second = _retouch(["run", str(src), "-p", "web-ready", "-o", str(tmp_path / "o2")], env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert STARTED not in second.stderr
    assert _record(home) == record  # the same server, not replaced
    assert _servers(home) == [server]
    assert _flow_runs(record) == 2  # both runs were recorded by it
    assert _flow_runs(record, auth=False) is None  # it outlives the command: not open to all
    assert (home / background.STATE_NAME).stat().st_mode & 0o077 == 0

    status = _retouch(["server", "status", "--json"], env)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert (shown["pid"], shown["url"], shown["running"]) == (server, record["url"], True)
    assert shown["used_by"] == []  # the commands ended: their leases went with them

    stopped = _retouch(["server", "stop"], env)
    assert stopped.returncode == 0, stopped.stderr
    assert f"pid {server}" in stopped.stdout
    assert _wait_gone(server, 15)
    assert _record(home) is None
    gone = _retouch(["server", "status"], env)
    assert gone.returncode == 1
    assert "no background Prefect server is running" in gone.stderr


def test_two_commands_starting_at_once_end_with_one_server(tmp_path, home):
    env = _env(tmp_path, home)
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda _: _retouch(["server", "start"], env), range(2)))
    for proc in done:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    said = sorted(proc.stdout.split(":")[0] for proc in done)
    assert said == ["already running", "started"], [p.stdout for p in done]
    record = _record(home)
    assert record is not None
    assert all(f"(pid {record['pid']})" in proc.stdout for proc in done)
    assert _servers(home) == [record["pid"]]


class _Foreign(http.server.BaseHTTPRequestHandler):
    """Another program on the recorded port: answers every health check, without our pid."""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("stale", ["dead pid", "pid and port of another program"])
def test_a_stale_record_is_replaced_and_what_it_named_is_left_alone(tmp_path, home, stale):
    env = _env(tmp_path, home)
    foreign = http.server.HTTPServer(("127.0.0.1", 0), _Foreign)
    threading.Thread(target=foreign.serve_forever, daemon=True).start()
    other = subprocess.Popen(["sleep", "120"])
    try:
        if stale == "dead pid":
            ended = subprocess.Popen(["true"])
            ended.wait()
            pid = ended.pid
        else:
            pid = other.pid
        url = f"http://127.0.0.1:{foreign.server_address[1]}/api"
        stale_record = {"pid": pid, "status": "ready", "url": url, "started": 0, "idle_s": 60}
        (home / background.STATE_NAME).write_text(json.dumps(stale_record))

        started = _retouch(["server", "start"], env)
        assert started.returncode == 0, started.stdout + started.stderr
        assert started.stdout.startswith("started:"), started.stdout
        record = _record(home)
        assert record is not None and record["pid"] != pid and record["url"] != url
        assert _servers(home) == [record["pid"]]
        assert other.poll() is None  # a process it did not start is never signalled
    finally:
        other.kill()
        other.wait()
        foreign.shutdown()
        foreign.server_close()


def test_an_unused_server_stops_itself_once_its_last_user_has_ended(tmp_path, home):
    env = _env(tmp_path, home, RETOUCH_SERVER_IDLE_S="3")
    # A command using the server (a lease held while it sleeps) keeps it past the idle time.
    user = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from retouch.flows import background as b; "
         "c = b.connect(idle_s=3); print(c.pid, flush=True); time.sleep(12)"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert user.stdout is not None
        server = int(user.stdout.readline() or 0)
        assert server, user.stderr.read() if user.stderr else ""
        refused = _retouch(["server", "stop"], env)  # in use: refused, naming the user
        assert refused.returncode == 1
        assert f"pid {user.pid}" in refused.stderr
        assert user.wait(60) == 0
        assert background.is_server_process(server)  # 12 s in use, idle limit 3 s: still up
        assert _wait_gone(server, 60), "the unused server did not stop"
        assert _record(home) is None
        assert list((home / background.LEASES_NAME).iterdir()) == []
    finally:
        if user.poll() is None:
            user.kill()
            user.wait()


def test_idle_zero_keeps_a_server_per_command_stopped_at_its_exit(tmp_path, home):
    env = _env(tmp_path, home, RETOUCH_SERVER_IDLE_S="0")
    src = _source(tmp_path / "src")
    proc = subprocess.Popen(
        [sys.executable, "-m", "retouch.cli", "run", str(src), "-p", "web-ready", "-o",
         str(tmp_path / "o")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    embedded: set[int] = set()
    while proc.poll() is None:  # Prefect's own embedded server, a child of the command
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                    args = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if int(stat[1]) == proc.pid and b"uvicorn" in args:
                    embedded.add(int(entry))
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, out + err
    assert embedded, "no embedded server was started"
    assert STARTED not in err
    assert _record(home) is None
    assert _servers(home) == []
    assert [pid for pid in embedded if _alive(pid)] == []  # stopped with the command


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")
