"""Running one measured command: wall time, peak memory, and the progress events it writes.

The command runs under ``bench/_launch.py`` (a bare interpreter that starts it and waits),
which reports the wall time and ``peak_rss_mb``: the largest single process of the
command's tree (``ru_maxrss`` from ``wait4``; see that file for why it must not be started
straight from the bench). ``peak_tree_rss_mb`` is the largest sum of ``VmRSS`` over the
command's live tree, sampled from ``/proc`` every 0.1 s (it also catches helper processes
that are never waited for).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_S = 0.1
LAUNCHER = Path(__file__).resolve().parent / "_launch.py"


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        out.extend(int(x) for x in text.split())
    return out


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_rss_kb(pid: int, *, include_root: bool = True) -> int:
    """Sum of VmRSS over ``pid`` (unless ``include_root`` is false) and all its live
    descendants, in KiB."""
    total, seen = 0, set()
    todo = [pid] if include_root else _children(pid)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _rss_kb(p)
        todo.extend(_children(p))
    return total


@dataclass
class Measured:
    """What one command did: exit code, wall time, memory, events seen and when."""

    argv: list[str]
    returncode: int
    wall_s: float
    peak_rss_mb: float
    peak_tree_rss_mb: float
    start_epoch: float = 0.0
    first_event_s: float | None = None
    events: int = 0
    log: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "argv": self.argv,
            "returncode": self.returncode,
            "wall_s": round(self.wall_s, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "peak_tree_rss_mb": round(self.peak_tree_rss_mb, 1),
            "first_result_event_s": (
                None if self.first_event_s is None else round(self.first_event_s, 3)
            ),
            "events": self.events,
            **self.extra,
        }


def _is_first_result(event: dict[str, Any]) -> bool:
    return (
        event.get("event") == "image" and event.get("phase") == "process" and bool(event.get("ok"))
    )


def _is_reviewed(event: dict[str, Any]) -> bool:
    return (
        event.get("event") == "image" and event.get("phase") == "review" and bool(event.get("ok"))
    )


class _EventWatcher:
    """Follows a JSON-lines events file and notes when the first process-phase success
    arrives (arrival time, epoch seconds, so it works whatever fields the events carry)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.buffer = b""
        self.first: float | None = None
        self.first_review: float | None = None
        self.count = 0

    def poll(self) -> None:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return
        if not data:
            return
        now = time.time()
        self.offset += len(data)
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            self.count += 1
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if self.first is None and isinstance(event, dict) and _is_first_result(event):
                self.first = now
            if self.first_review is None and isinstance(event, dict) and _is_reviewed(event):
                self.first_review = now


def run_measured(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log_path: Path,
    events_path: Path | None = None,
    timeout_s: float = 1800,
) -> Measured:
    """Run ``argv`` to completion under the launcher and measure it (stdout and stderr go to
    ``log_path``). Times are counted from the moment the launcher started the command."""
    argv = [str(a) for a in argv]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    report = log_path.with_name(log_path.stem + "-launch.json")
    report.unlink(missing_ok=True)
    launcher = [sys.executable, "-S", str(LAUNCHER), str(report), "--", *argv]
    peak_tree = 0
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            launcher,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        watcher = _EventWatcher(events_path) if events_path is not None else None
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak_tree
            while not stop.is_set():
                peak_tree = max(peak_tree, tree_rss_kb(proc.pid, include_root=False))
                if watcher is not None:
                    watcher.poll()
                stop.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            stop.set()
            sampler.join()
    # Helpers the command left running in its session (e.g. a server it spawned) go with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    if watcher is not None:
        watcher.poll()
    text = log_path.read_text(errors="replace")
    if not report.is_file():
        raise RuntimeError(
            f"{argv[0]} did not finish within {timeout_s:.0f} s or could not be started "
            f"(exit {proc.returncode}); log {log_path}:\n{text[-1500:]}"
        )
    launched = json.loads(report.read_text())
    first = None
    extra: dict[str, Any] = {}
    if watcher is not None and watcher.first is not None:
        first = watcher.first - launched["spawn_epoch"]
    if watcher is not None and watcher.first_review is not None:
        extra["first_review_event_s"] = round(watcher.first_review - launched["spawn_epoch"], 3)
    return Measured(
        argv=argv,
        returncode=launched["returncode"],
        wall_s=launched["wall_s"],
        peak_rss_mb=launched["maxrss_kb"] / 1024.0,
        peak_tree_rss_mb=peak_tree / 1024.0,
        start_epoch=launched["spawn_epoch"],
        first_event_s=first,
        events=watcher.count if watcher is not None else 0,
        log=text[-4000:],
        extra=extra,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def venv_tool(name: str) -> str:
    """The console script ``name`` next to this interpreter (the project's venv)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"bench: {path} not found; install retouch into this venv first")
    return str(path)


@contextlib.contextmanager
def prefect_server(home: Path, base_env: dict[str, str], log_path: Path) -> Iterator[str]:
    """A local ``prefect server start`` for the whole bench; yields its API URL."""
    port = free_port()
    env = {
        **base_env,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    home.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    argv = [venv_tool("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"prefect server exited with {proc.returncode}; see {log_path}:\n"
                    + log_path.read_text(errors="replace")[-2000:]
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not answer on {url} within 180 s")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def stop_background_server(env: dict[str, str]) -> bool:
    """``retouch server stop --force`` in ``env`` (its PREFECT_HOME's background server);
    True when one was running and stopped."""
    done = subprocess.run(
        [venv_tool("retouch"), "server", "stop", "--force"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode == 0 and "stopped the background Prefect server" in done.stdout
