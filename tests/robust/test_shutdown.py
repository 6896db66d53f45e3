"""SIGTERM in the middle of the work, as a service manager or container stops a process:
`retouch run`, `retouch web` with a batch running and `retouch serve` with a run in progress
each exit with 143 (128 + SIGTERM), leave no process of theirs behind (the embedded Prefect
server, a batch's process, a flow run's process), and the same command again finishes the
work, reusing the images finished before the signal. Real processes, real servers."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.tiny_models import install_tiny_models

REPO = Path(__file__).resolve().parents[2]
STOPPED = 128 + signal.SIGTERM
SLOW_RECIPE = """
name = "slow"
[[steps]]
op = "upscale"
params = { model = "realesr-general-x4v3", tile = 0 }
[export]
format = "png"
"""


# -- processes, from /proc ----------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # [state, ppid, pgrp, session, ...]


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _below(pid: int) -> list[int]:
    """Every live process under ``pid``, whatever session or group it put itself in."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def _in_session(sid: int) -> list[int]:
    """Live processes of session ``sid`` (a run started with ``start_new_session``)."""
    return [
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit()
        and (fields := _stat(int(entry)))
        and fields[0] != "Z"
        and int(fields[3]) == sid
    ]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _left_alive(pids: list[int], wait_s: float = 10.0) -> list[str]:
    """Those of ``pids`` still running after up to ``wait_s`` (a process being killed needs
    a moment to go), with their command lines."""
    end = time.monotonic() + wait_s
    while any(_alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.1)
    return [f"{p}: {_cmdline(p)[:120]}" for p in pids if _alive(p)]


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: {proc.args[:4]} exited with {proc.returncode}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_all(proc: subprocess.Popen, below: list[int]) -> None:
    """Never leave a process to the next test, whatever happened in this one."""
    for pid in [*below, *_below(proc.pid)]:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# -- inputs ---------------------------------------------------------------------------------------


def _tiny_pngs(folder: Path, count: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(count):
        arr = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        PILImage.fromarray(arr).save(folder / f"img{i:02d}.png")
    return folder


def _jpegs(count: int, seed: int = 9) -> list[tuple[str, bytes]]:
    """Photos big enough that a classic preset takes a few seconds over them."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        arr = rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)
        buf = io.BytesIO()
        PILImage.fromarray(arr).save(buf, "JPEG", quality=90)
        out.append((f"photo{i:02d}.jpg", buf.getvalue()))
    return out


def _results(workspace: Path) -> list[Path]:
    """Images whose result is committed in the workspace."""
    return sorted((workspace / "results").glob("*/*.json"))


def _env(tmp_path: Path, *, api_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RETOUCH_"))}
    env.update(
        {
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "RETOUCH_HOME": str(tmp_path / "home"),
            "RETOUCH_WORKSPACE": str(tmp_path / "workspace"),
            "RETOUCH_OFFLINE": "1",
            "RETOUCH_SERVER_IDLE_S": "0",  # a server per command, stopped with it
            **extra,
        }
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- retouch run ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["process", "group"])
def test_sigterm_mid_run_stops_every_child_and_the_same_command_resumes(
    tmp_path, monkeypatch, target
):
    """No PREFECT_API_URL: the run starts its own Prefect server. ``process``: SIGTERM to the
    run alone (``kill PID``, ``docker stop``); ``group``: to its whole process group, as
    systemd stops a service, so the server goes down at the same moment as the run."""
    count = 8
    model_dir = install_tiny_models(tmp_path / "models", monkeypatch, faces=None)
    src = _tiny_pngs(tmp_path / "src", count)
    recipe = tmp_path / "slow.toml"
    recipe.write_text(SLOW_RECIPE)
    workspace = tmp_path / "workspace"
    env = _env(
        tmp_path,
        api_url=None,
        RETOUCH_MODEL_DIR=str(model_dir),
        RETOUCH_WORKERS="1",
        RETOUCH_CHUNK_SIZE="1",
        RETOUCH_TEST_MODEL_DELAY="0.5",
    )
    cmd = [sys.executable, "-m", "tests.robust._tiny_cli", "run", str(src), "-p", str(recipe),
           "-o", str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    below: list[int] = []
    try:
        _wait(lambda: len(_results(workspace)) >= 2, 150, "the first results", proc)
        below = _below(proc.pid)
        assert any("uvicorn" in _cmdline(p) for p in below), "no embedded Prefect server"
        if target == "group":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=90)
        assert proc.returncode == STOPPED, output
        assert _left_alive(below) == [], output
        assert _in_session(proc.pid) == [], output
    finally:
        _kill_all(proc, below)
    assert "stopped by SIGTERM" in output, output
    assert "the same command again reuses them and does the rest" in output, output
    if target == "process":  # the server was up: the crash is recorded without noise
        assert "Traceback" not in output, output
    done = len(_results(workspace))
    assert 2 <= done < count, f"the signal came too late ({done} of {count} done)"
    assert not (tmp_path / "out" / "manifest.json").exists()

    rerun = subprocess.run(
        cmd, cwd=REPO, env={**env, "RETOUCH_TEST_MODEL_DELAY": "0"}, capture_output=True,
        text=True, timeout=240,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["summary"]["succeeded"] == count
    assert manifest["summary"]["reused"] == done
    assert sum(img["model_calls"] for img in manifest["images"]) == count - done


# -- retouch web ----------------------------------------------------------------------------------


def test_sigterm_to_web_stops_the_running_batch_and_a_restart_finishes_it(prefect_server, tmp_path):
    import httpx

    count = 10
    port = _free_port()
    env = _env(tmp_path, api_url=_api_url(), RETOUCH_CHUNK_SIZE="1", RETOUCH_WORKERS="1")
    cmd = [sys.executable, "-m", "retouch.cli", "web", "--port", str(port), "--no-open"]

    def start() -> subprocess.Popen:
        log = (tmp_path / "web.log").open("ab")
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip

    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

    def up() -> bool:
        try:
            return client.get("/api/batches").status_code == 200
        except httpx.HTTPError:
            return False

    web = start()
    below: list[int] = []
    try:
        _wait(up, 90, "retouch web", web)
        created = client.post("/api/batches", files=[("files", f) for f in _jpegs(count)],
                              data={"preset": "quick"})  # fmt: skip
        assert created.status_code == 201, created.text
        bid = created.json()["id"]

        def one_done() -> dict | None:
            batch = client.get(f"/api/batches/{bid}").json()
            assert batch["state"] in ("queued", "running"), batch
            return batch if batch["counts"]["done"] >= 1 else None

        at_signal = _wait(one_done, 120, "the batch's first image", web)
        below = _below(web.pid)
        job = [p for p in below if "retouch.cli run" in _cmdline(p)]
        assert len(job) == 1, [_cmdline(p) for p in below]
        web.send_signal(signal.SIGTERM)
        web.wait(timeout=60)
        log = (tmp_path / "web.log").read_text()
        assert web.returncode == STOPPED, log
        assert _left_alive(below) == [], log
        with pytest.raises(ProcessLookupError):
            os.killpg(job[0], 0)  # the batch's whole process group is gone
        web = start()  # the same command again
        _wait(up, 90, "retouch web, restarted", web)
        final = _wait(
            lambda: (
                (b := client.get(f"/api/batches/{bid}").json())["state"]
                not in ("queued", "running")
                and b
            ),
            180,
            "the batch to finish after the restart",
            web,
        )
        assert final["state"] == "done", final
        assert final["counts"]["done"] == count
        manifest = json.loads(
            (tmp_path / "home" / "web" / "batches" / bid / "out" / "manifest.json").read_text()
        )
        # Images finished before the signal (at least those the page showed done) are reused.
        assert manifest["summary"]["reused"] >= max(1, at_signal["counts"]["done"])
    finally:
        client.close()
        if web.poll() is None:
            web.send_signal(signal.SIGTERM)
            try:
                web.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        _kill_all(web, below)


# -- retouch serve --------------------------------------------------------------------------------


def test_sigterm_to_serve_hands_back_the_run_in_progress_and_a_restart_finishes_it(
    prefect_server, tmp_path
):
    from prefect import get_client

    from retouch.deployments.deploy import submit

    count = 10
    src = tmp_path / "src"
    src.mkdir()
    for name, data in _jpegs(count, seed=4):
        (src / name).write_bytes(data)
    dest = tmp_path / "out"
    env = _env(
        tmp_path,
        api_url=_api_url(),
        RETOUCH_CHUNK_SIZE="1",
        RETOUCH_WORKERS="1",
        PREFECT_RUNNER_POLL_FREQUENCY="1",
    )
    cmd = [sys.executable, "-m", "retouch.cli", "serve"]

    def start() -> subprocess.Popen:
        log = (tmp_path / "serve.log").open("ab")
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip

    def prefect(call):  # Prefect's sync client, outside any event loop of the test's
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(call).result()

    def read_run(ident):
        def call():
            with get_client(sync_client=True) as client:
                return client.read_flow_run(ident)

        return prefect(call)

    def served() -> bool:
        def call():
            with get_client(sync_client=True) as client:
                try:
                    deployment = client.read_deployment_by_name("retouch-enhance/enhance-served")
                except Exception:  # noqa: BLE001 (not there yet)
                    return False
                return not deployment.paused

        return prefect(call)

    def processed(ident) -> int:
        """Process-phase chunks (one image each) of the run that completed."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterId,
            TaskRunFilter,
            TaskRunFilterName,
            TaskRunFilterState,
            TaskRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        def call():
            with get_client(sync_client=True) as client:
                return client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[ident])),
                    task_run_filter=TaskRunFilter(
                        name=TaskRunFilterName(like_="process-chunk"),
                        state=TaskRunFilterState(
                            type=TaskRunFilterStateType(any_=[StateType.COMPLETED])
                        ),
                    ),
                )

        return len(prefect(call))

    serve = start()
    below: list[int] = []
    try:
        _wait(served, 120, "the served deployment", serve)
        params = {"source": str(src), "dest": str(dest), "preset": "quick"}
        ident = prefect(lambda: submit("retouch-enhance/enhance-served", params))
        _wait(lambda: processed(ident) >= 1, 150, "the run's first processed image", serve)
        below = _below(serve.pid)
        assert any("prefect.engine" in _cmdline(p) for p in below), "no flow-run process"
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=90)
        log = (tmp_path / "serve.log").read_text()
        assert serve.returncode == STOPPED, log
        assert _left_alive(below) == [], log
        assert "handing back 1 run(s) in progress" in log, log
        state = read_run(ident).state
        assert state.type.value == "SCHEDULED" and state.name == "AwaitingRetry", state
        assert "handed back" in state.message
        serve = start()  # the same command again: it takes the run back up
        final = _wait(
            lambda: (s := read_run(ident).state).is_final() and s, 180, "the run to end", serve
        )
        assert final.is_completed(), (final, (tmp_path / "serve.log").read_text()[-3000:])
        manifest = json.loads((dest / "manifest.json").read_text())
        assert manifest["summary"]["succeeded"] == count
        assert manifest["summary"]["reused"] >= 1  # finished before the signal
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        _kill_all(serve, below)
