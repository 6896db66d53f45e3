"""The one owner of the batches' processes: a queue of jobs, each one ``retouch run`` or
``retouch regenerate`` subprocess, started up to ``max_running`` at once, followed, cancelled,
and re-attached after a server restart.

Each job is one subprocess in its own process group, so a cancel can stop it with
everything it started. The subprocess writes its progress to the batch's ``events.jsonl``,
which :class:`~retouch.web.batches.Batch` folds into the state the API shows.

Why subprocesses and not runs of the ``enhance`` deployment on the work pool: measured for
a 1-image batch on the same Prefect server, a subprocess shows its first progress event
3.5-4.1 s after the submit; a deployment run is picked up only at its worker's next poll
(10 s by default) and then starts a flow-run process of its own, so its flow began
6.2-11.2 s after the submit (3.9-5.8 s with a 1 s poll), before any progress, which would
also need a channel back to the page (the deployment has no events file). The runner also
needs no worker beside ``retouch web``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retouch.lib.metrics import Metrics
from retouch.lib.settings import Settings
from retouch.web.batches import Batch, now_iso

# Seconds between SIGTERM and SIGKILL when a job is cancelled or the server stops.
KILL_GRACE_S = 8.0


def override_args(overrides: dict[str, Any]) -> list[str]:
    """``{"sharpen.amount": 1.5}`` as ``STEP.PARAM=VALUE`` strings for ``--set``. Values are
    written as JSON, so a string that looks like a number stays a string."""
    return [f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in overrides.items()]


def _prefect_api_url() -> str | None:
    """The Prefect API this process uses (a test harness or PREFECT_API_URL), if any."""
    try:
        from prefect.settings import PREFECT_API_URL
    except ImportError:
        return None
    return PREFECT_API_URL.value() or None


@dataclass
class Job:
    """One ``retouch run`` or ``retouch regenerate`` process of a batch."""

    number: int
    kind: str  # run | regenerate
    names: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    keep_worse: bool = False  # regenerate: take the new version even when it scores lower
    proc: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    cancel_at: float | None = None
    killed: bool = False
    stopping: bool = False  # the server is shutting down: the job runs again at next start

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "names": self.names,
            "overrides": self.overrides,
            "keep_worse": self.keep_worse,
        }


def _alive(pid: int | None) -> bool:
    """True when ``pid`` is a live (not zombie) process running retouch's CLI."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the signal check
    return b"retouch.cli" in cmdline


def _error_line(log: Path) -> str | None:
    """The CLI's own ``error:`` line from a job's stderr, else the last line said."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:") :].strip()[:1000]
    return lines[-1][:1000] if lines else None


class Runner:
    """Holds every batch, starts queued jobs up to ``max_running`` at once and follows them.

    A supervisor thread reads the events of running jobs and notices when their processes
    end; requests read the same state under one lock.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_running: int = 1,
        prefect_api_url: str | None = None,
        poll_s: float = 0.25,
        python: str = sys.executable,
    ):
        self.root = root
        self.max_running = max_running
        self.prefect_api_url = prefect_api_url
        self.poll_s = poll_s
        self.python = python
        self.batches: dict[str, Batch] = {}
        self.queue: deque[tuple[str, Job]] = deque()
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # /metrics: fed from each running job's events file (this process runs no batch).
        self.metrics = Metrics(queue=self.queue_depth)

    @classmethod
    def from_settings(cls, settings: Settings, prefect_api_url: str | None = None) -> Runner:
        """The server's runner: over ``$RETOUCH_HOME/web/batches``, its jobs using
        ``prefect_api_url`` (default: the current Prefect settings' API URL)."""
        return cls(
            settings.home / "web" / "batches",
            max_running=settings.web_max_running,
            prefect_api_url=prefect_api_url or _prefect_api_url(),
        )

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Load the batches on disk (re-queueing or re-attaching their jobs), then supervise."""
        with self.lock:
            if self._thread is not None:
                return
            self.root.mkdir(parents=True, exist_ok=True)
            self._load()
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="retouch-web", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop supervising; jobs still running are stopped and run again at the next start."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self.lock:
            running = [b for b in self.batches.values() if b.job is not None]
            for batch in running:
                assert batch.job is not None
                batch.job.stopping = True
                self._signal(batch.job, signal.SIGTERM)
            deadline = time.monotonic() + KILL_GRACE_S
            for batch in running:
                job = batch.job
                assert job is not None
                if job.proc is not None:
                    try:
                        job.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        self._signal(job, signal.SIGKILL)
                        job.proc.wait()
                else:  # re-attached after a restart: not our child, so poll it
                    while _alive(job.pid) and time.monotonic() < deadline:
                        time.sleep(0.1)
                    self._signal(job, signal.SIGKILL)
                self._finish(batch, job.proc.returncode if job.proc else None)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.tick()
            except Exception:  # the supervisor must outlive any one bad batch folder
                import logging

                logging.getLogger("retouch.web").exception("supervisor tick failed")

    def tick(self) -> None:
        with self.lock:
            for batch in list(self.batches.values()):
                job = batch.job
                if job is None:
                    continue
                batch.read_events()
                self.metrics.poll(batch.id)
                if job.proc is not None:
                    rc = job.proc.poll()
                    ended = rc is not None
                else:
                    rc, ended = None, not _alive(job.pid)
                if ended:
                    self._finish(batch, rc)
                elif job.cancel_at and not job.killed:
                    if time.monotonic() - job.cancel_at > KILL_GRACE_S:
                        self._signal(job, signal.SIGKILL)
                        job.killed = True
            self._start_queued()

    # -- loading ---------------------------------------------------------------------------
    def _load(self) -> None:
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith("."):
                if folder.name.startswith(".staging-"):
                    shutil.rmtree(folder, ignore_errors=True)  # an upload cut by a restart
                continue
            meta = folder / "batch.json"
            if folder.name in self.batches or not meta.is_file():
                continue
            try:
                info = json.loads(meta.read_text(encoding="utf-8"))
                batch = Batch(folder, info)
            except (OSError, ValueError, KeyError):
                continue
            batch.read_events()
            self.batches[batch.id] = batch
            if batch.open_job is not None:
                pid = info.get("pid")
                if _alive(pid):
                    job = Job(int(batch.open_job.get("job", batch.jobs)), batch.open_job["kind"])
                    job.pid = pid
                    batch.job = job
                    self.metrics.follow(batch.id, batch.events_path)  # counted from now on
                    continue
                self._finish(batch, None, vanished=True)
            pending = info.get("pending_job")
            if pending and batch.state == "queued":
                self.queue.append(
                    (
                        batch.id,
                        Job(
                            batch.jobs + 1,
                            pending["kind"],
                            list(pending.get("names") or []),
                            dict(pending.get("overrides") or {}),
                            keep_worse=bool(pending.get("keep_worse")),
                        ),
                    )
                )

    # -- requests --------------------------------------------------------------------------
    def add(self, folder: Path, info: dict[str, Any]) -> Batch:
        """Register a prepared batch folder and queue its run."""
        with self.lock:
            batch = Batch(folder, info)
            job = Job(1, "run")
            batch.persist(pending=job.spec())
            self.batches[batch.id] = batch
            self.queue.append((batch.id, job))
            self._start_queued()
            return batch

    def get(self, batch_id: str) -> Batch | None:
        with self.lock:
            batch = self.batches.get(batch_id)
            if batch is not None and batch.job is not None:
                batch.read_events()
            return batch

    def snapshot(self, batch_id: str, with_images: bool = True) -> dict[str, Any] | None:
        with self.lock:
            batch = self.get(batch_id)
            return batch.to_json(with_images) if batch else None

    def summaries(self) -> list[dict[str, Any]]:
        """Every batch, newest first, without the per-image list."""
        with self.lock:
            ordered = sorted(self.batches.values(), key=lambda b: b.info["created"], reverse=True)
            return [b.to_json(with_images=False) for b in ordered]

    def regenerate(
        self,
        batch: Batch,
        names: list[str],
        overrides: dict[str, Any],
        *,
        keep_worse: bool = False,
    ) -> None:
        with self.lock:
            if not batch.idle:
                raise RuntimeError(f"batch {batch.id} is {batch.state}")
            job = Job(batch.jobs + 1, "regenerate", names, overrides, keep_worse=keep_worse)
            batch.state, batch.error = "queued", None
            batch.persist(pending=job.spec())
            self.queue.append((batch.id, job))
            self._start_queued()

    def cancel(self, batch: Batch) -> bool:
        """Stop the batch's job (or take it out of the queue); False when nothing runs."""
        with self.lock:
            if batch.state == "queued":
                self.queue = deque((b, j) for b, j in self.queue if b != batch.id)
                batch.append_event({"event": "web-job-end", "state": "cancelled", "error": None})
                batch.persist(pending=None)
                return True
            job = batch.job
            if job is None:
                return False
            if job.cancel_at is None:
                job.cancel_at = time.monotonic()
                self._signal(job, signal.SIGTERM)
            return True

    # -- jobs ------------------------------------------------------------------------------
    def running_count(self) -> int:
        return sum(1 for b in self.batches.values() if b.job is not None)

    def queue_depth(self) -> tuple[int, int]:
        """Batches (waiting, running) now."""
        with self.lock:
            return len(self.queue), self.running_count()

    def _start_queued(self) -> None:
        """Start waiting jobs in order while slots are free (a batch runs one job at a time)."""
        self.queue = deque((b, j) for b, j in self.queue if b in self.batches)
        while self.running_count() < self.max_running:
            ready = [i for i, (b, _j) in enumerate(self.queue) if self.batches[b].job is None]
            if not ready:
                return
            batch_id, job = self.queue[ready[0]]
            del self.queue[ready[0]]
            self._spawn(self.batches[batch_id], job)

    def command(self, batch: Batch, job: Job) -> list[str]:
        events = str(batch.events_path)
        out = str(batch.out_dir)
        base = [self.python, "-m", "retouch.cli"]
        if job.kind == "run":
            cmd = [*base, "run", batch.info["source"], "--preset", batch.info["preset"]]
            for item in override_args(batch.info.get("overrides") or {}):
                cmd += ["--set", item]
            if batch.info.get("masks"):
                cmd += ["--masks", str(batch.folder / "masks")]
            return [*cmd, "--out", out, "--events", events, "--json"]
        cmd = [*base, "regenerate", str(batch.run_id)]
        for name in job.names:
            cmd += ["--select", name]
        for item in override_args(job.overrides):
            cmd += ["--set", item]
        if job.keep_worse:
            cmd.append("--keep-worse")
        return [*cmd, "--out", out, "--events", events, "--json"]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("RETOUCH_WEB_TOKEN", None)  # a run has no use for the web server's secret
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        if self.prefect_api_url:
            env["PREFECT_API_URL"] = self.prefect_api_url
        return env

    def _spawn(self, batch: Batch, job: Job) -> None:
        shutil.rmtree(batch.folder / "cache", ignore_errors=True)  # results are about to change
        batch.append_event(
            {
                "event": "web-job",
                "job": job.number,
                "kind": job.kind,
                "names": job.names,
                "overrides": job.overrides,
                "started": now_iso(),
            }
        )
        log = batch.folder / f"job-{job.number}.log"
        self.metrics.follow(batch.id, batch.events_path)  # what the job's process adds
        try:
            with open(log, "wb") as err, open(batch.folder / f"job-{job.number}.out", "wb") as out:
                job.proc = subprocess.Popen(
                    self.command(batch, job),
                    cwd=batch.folder,
                    env=self.environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,  # its own process group: cancel stops all of it
                )
        except OSError as exc:
            self.metrics.forget(batch.id)
            batch.append_event(
                {
                    "event": "web-job-end",
                    "state": "failed",
                    "error": f"could not start retouch: {exc}",
                }
            )
            batch.persist(pending=None)
            return
        job.pid = job.proc.pid
        batch.job = job
        batch.persist(pending=None)

    @staticmethod
    def _signal(job: Job, sig: int) -> None:
        if job.pid is None:
            return
        try:
            os.killpg(job.pid, sig)  # the group id is the pid: start_new_session
        except (ProcessLookupError, PermissionError):
            pass

    def _finish(self, batch: Batch, rc: int | None, vanished: bool = False) -> None:
        """Write the job's end marker: its state, error and exit code."""
        batch.read_events()
        self.metrics.poll(batch.id, last=True)
        job = batch.job
        kind = (batch.open_job or {}).get("kind", job.kind if job else "run")
        error: str | None = None
        log = batch.folder / f"job-{(job.number if job else batch.jobs)}.log"
        pending: dict[str, Any] | None = None
        if batch.done_seen:
            code = _summary_code(batch.summary or {})
            rc = rc if rc is not None and rc >= 0 else code
            state = "done" if code in (0, 2) else "failed"
            if state == "failed":
                error = "no image succeeded: see each image's error"
        elif job is not None and job.cancel_at is not None:
            state = "cancelled"
        elif job is not None and job.stopping:
            state = "queued"
            error = "interrupted: `retouch web` stopped; the job runs again when it starts"
            pending = job.spec()
        else:
            state = "failed"
            if vanished or rc is None:
                error = (
                    "the job's process ended without a result (the server was restarted while "
                    "it ran); start the batch again"
                )
            elif rc < 0:
                error = f"the run was killed (signal {-rc}) before it finished"
            else:
                error = _error_line(log) or f"retouch exited with code {rc}"
            if kind == "regenerate":
                error = f"regeneration failed: {error}"
        batch.append_event(
            {"event": "web-job-end", "state": state, "error": error, "exit_code": rc}
        )
        batch.job = None
        batch.persist(pending=pending)


def _summary_code(summary: dict[str, Any]) -> int:
    total, succeeded, failed = (
        summary.get("total", 0),
        summary.get("succeeded", 0),
        summary.get("failed", 0),
    )
    if not total or not succeeded:
        return 1
    return 0 if not failed else 2
