"""Batches of ``retouch web``: their state, their ``retouch run`` processes and their files.

A batch lives in ``$RETOUCH_HOME/web/batches/<id>/``::

    batch.json     what was asked (preset, overrides, images, source) and the job waiting
    input/ masks/  the uploaded files (uploads only)
    out/           the delivery: ZIP, manifest.json, report.html
    events.jsonl   every progress event of its processes, between our own job markers
    job-N.log      stderr of job N (the CLI's error line says why a job failed)
    cache/         ZIPs of selected results and extracted single results (rebuilt on demand)

Each job (the first run, then any regeneration) is one subprocess in its own process group,
so a cancel can stop it with everything it started. The state shown is rebuilt by folding
``events.jsonl``: the server can restart at any time and find every batch as it was.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

THUMB_LABELS = ("before", "after", "crop-before", "crop-after")
RUNNING_STATUSES = ("prepared", "processed", "reviewed")
PHASE_STATUS = {
    "prepare": "prepared",
    "process": "processed",
    "review": "reviewed",
    "export": "done",
}
# How far through the batch an image counts, by its status (the bar and the ETA): the
# process phase is most of the work, and an image in it moves on with each step.
PROGRESS_AT = {
    "pending": 0.0,
    "prepared": 0.05,
    "processed": 0.8,
    "reviewed": 0.95,
    "done": 1.0,
    "failed": 1.0,
}
# Seconds between SIGTERM and SIGKILL when a job is cancelled or the server stops.
KILL_GRACE_S = 8.0
# ZIPs of selected results kept per batch (the most recently used ones).
MAX_SELECTIONS = 8
# The full-size comparison: images of more pixels than this are not sent to the browser
# (two of them are decoded there at once); the page keeps the preview and says why.
FULL_VIEW_MAX_PIXELS = 100_000_000
# Formats every browser shows as they are (8 bits, one frame); others are converted.
BROWSER_FORMATS = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
FULL_VIEWS = ("before", "after")
# Bytes read to learn an image's format, size and depth (the header; the whole file when
# the header needs more, as a TIFF whose directory is at its end does).
_HEAD_BYTES = 4 * 1024 * 1024
# One conversion at a time: each holds a whole decoded image in memory.
_CONVERTING = threading.BoundedSemaphore(1)


def new_batch_id() -> str:
    return "b-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)


def override_args(overrides: dict[str, Any]) -> list[str]:
    """``{"sharpen.amount": 1.5}`` as ``STEP.PARAM=VALUE`` strings for ``--set``. Values are
    written as JSON, so a string that looks like a number stays a string."""
    return [f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in overrides.items()]


@dataclass
class ImageState:
    name: str
    index: int
    status: str = "pending"
    phase: str | None = None
    error: str | None = None
    note: str | None = None
    score: float | None = None
    score_before: float | None = None  # the input's score on the same scale
    verdict: str | None = None
    thumbs: dict[str, str] = field(default_factory=dict)
    output_name: str | None = None
    outputs: list[str] = field(default_factory=list)
    step: int | None = None  # the last step of the recipe done on it (process phase)
    step_op: str | None = None
    reused: bool = False  # the result came from the cache: nothing was computed again
    source: str | None = None  # where the input was read from (the manifest's "source")
    size: tuple[int, int] | None = None  # width, height of the delivered file

    def copy(self) -> ImageState:
        return ImageState(**{**self.__dict__, "thumbs": dict(self.thumbs)})


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


class Batch:
    """One batch: what was asked (``batch.json``) plus the state folded from its events."""

    def __init__(self, folder: Path, info: dict[str, Any]):
        self.folder = folder
        self.info = info
        self.id: str = info["id"]
        self.images: dict[str, ImageState] = {
            name: ImageState(name=name, index=i) for i, name in enumerate(info["names"], start=1)
        }
        self.state: str = info.get("state", "queued")
        self.error: str | None = info.get("error")
        self.exit_code: int | None = None
        self.run_id: str | None = None
        self.summary: dict[str, Any] | None = None
        self.skipped: list[dict[str, str]] = list(info.get("skipped", []))
        self.jobs = 0
        self.job: Job | None = None  # the job whose process runs now
        self.open_job: dict[str, Any] | None = None  # started, no end marker yet (replay)
        self.done_seen = False
        self._snapshot: dict[str, ImageState] = {}
        self._offset = 0
        self._partial = b""

    # -- paths -----------------------------------------------------------------------------
    @property
    def events_path(self) -> Path:
        return self.folder / "events.jsonl"

    @property
    def out_dir(self) -> Path:
        return self.folder / "out"

    def by_index(self, index: int) -> ImageState | None:
        names = self.info["names"]
        return self.images[names[index - 1]] if 1 <= index <= len(names) else None

    def archives(self) -> list[Path]:
        """The delivered ZIPs (the first is the main one), when they exist."""
        if not self.summary:
            return []
        uris = self.summary.get("archives") or (
            [self.summary["zip_uri"]] if self.summary.get("zip_uri") else []
        )
        paths = [self._local(u) for u in uris]
        return [p for p in paths if p is not None and p.is_file()]

    def report_path(self) -> Path | None:
        path = self._local((self.summary or {}).get("report_uri"))
        return path if path is not None and path.is_file() else None

    def _local(self, uri: str | None) -> Path | None:
        if not uri or "://" in uri:
            return None
        path = Path(uri)
        return path if path.is_absolute() else self.folder / path

    @property
    def idle(self) -> bool:
        return self.state not in ("queued", "running")

    # -- events ----------------------------------------------------------------------------
    def read_events(self) -> None:
        """Fold the complete lines appended to events.jsonl since the last read."""
        try:
            with open(self.events_path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return
        if not data:
            return
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an unfinished last line waits for the next read
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash: the next lines are still good
            if isinstance(event, dict):
                self.fold(event)

    def append_event(self, event: dict[str, Any]) -> None:
        """Write one of our own markers (no process writes the file at the same time)."""
        self.read_events()
        # A process killed in the middle of a line leaves it unfinished: end it first, or
        # the marker would be glued to it and lost with it (the batch stuck as running).
        torn = "\n" if self._partial else ""
        with open(self.events_path, "a", encoding="utf-8") as fh:
            fh.write(torn + json.dumps(event, ensure_ascii=False) + "\n")
        self.read_events()

    def fold(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "web-job":
            self._job_started(event)
        elif kind == "web-job-end":
            self._job_ended(event)
        elif kind == "run":
            self.run_id = event.get("run_id") or self.run_id
        elif kind == "image":
            self._image_event(event)
        elif kind == "step":
            image = self.images.get(str(event.get("name")))
            if image is not None and isinstance(event.get("number"), int):
                image.step = event["number"]
                image.step_op = str(event.get("op") or "") or None
        elif kind == "done":
            summary = event.get("summary")
            if isinstance(summary, dict):
                self.summary = summary
                self.run_id = summary.get("run_id") or self.run_id
                self.skipped = list(self.info.get("skipped", [])) or [
                    {
                        "name": str(s.get("name") or s.get("uri") or ""),
                        "reason": str(s.get("reason")),
                    }
                    for s in summary.get("skipped") or []
                    if isinstance(s, dict)
                ]
                self.done_seen = True
                self._reconcile_manifest()

    def _job_started(self, event: dict[str, Any]) -> None:
        self.jobs = max(self.jobs, int(event.get("job", 0)))
        self.open_job = event
        self.state = "running"
        self.error = None
        self.exit_code = None
        self.done_seen = False
        names = event.get("names") or list(self.images)
        self._snapshot = {n: self.images[n].copy() for n in names if n in self.images}
        for name in names:
            image = self.images.get(name)
            if image is not None:
                image.status, image.phase, image.error, image.note = "pending", None, None, None
                image.step, image.step_op, image.reused = None, None, False

    def _job_ended(self, event: dict[str, Any]) -> None:
        self.state = str(event.get("state") or "failed")
        self.error = event.get("error")
        self.exit_code = event.get("exit_code")
        regenerating = (self.open_job or {}).get("kind") == "regenerate"
        self.open_job = None
        if self.state == "queued":
            return
        if regenerating:  # images the job never reached keep what they had
            for name, old in self._snapshot.items():
                if self.images[name].status in ("pending", *RUNNING_STATUSES):
                    old.note = f"not regenerated: {self.error or self.state}"
                    self.images[name] = old
        self._snapshot = {}

    def _image_event(self, event: dict[str, Any]) -> None:
        image = self.images.get(str(event.get("name")))
        phase = event.get("phase")
        if image is None or phase not in PHASE_STATUS:
            return
        image.phase = phase
        if event.get("reused") and event.get("ok") is not False:
            image.reused = True
        if event.get("ok") is False:
            image.status = "failed"
            image.error = event.get("reason") or image.error or f"failed in the {phase} phase"
            return
        if image.status != "failed":
            image.status = PHASE_STATUS[phase]
        elif phase == "export":
            # A regeneration that failed keeps the delivered result, which is exported again.
            image.note = f"kept the earlier result ({image.error})"
            image.status, image.error = "done", None
        else:
            return
        if phase == "review":
            if isinstance(event.get("score"), int | float):
                image.score = float(event["score"])
            if isinstance(event.get("score_before"), int | float):
                image.score_before = float(event["score_before"])
            image.verdict = event.get("verdict") or image.verdict
            thumbs = event.get("thumbs")
            if isinstance(thumbs, dict):
                image.thumbs = {
                    label: path
                    for label, path in thumbs.items()
                    if label in THUMB_LABELS and isinstance(path, str) and _exists(path)
                }
        if phase == "export" and event.get("output_name"):
            image.output_name = str(event["output_name"])

    def _reconcile_manifest(self) -> None:
        """The manifest has the last word on each image (e.g. a cached review sent no score)."""
        path = self._local((self.summary or {}).get("manifest_uri"))
        if path is None:
            return
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        for entry in manifest.get("images") or []:
            image = self.images.get(str(entry.get("name")))
            if image is None:
                continue
            if entry.get("status") == "failed":
                image.status = "failed"
                image.phase = entry.get("failed_phase") or image.phase
                image.error = entry.get("reason") or image.error
            elif entry.get("output_name"):
                image.status, image.phase, image.error = "done", "export", None
            image.output_name = entry.get("output_name") or (
                None if image.status == "failed" else image.output_name
            )
            image.outputs = [
                str(o["name"]) for o in entry.get("outputs") or [] if o.get("name")
            ] or ([image.output_name] if image.output_name else [])
            scores = entry.get("scores") or {}
            if scores.get("score") is not None:
                image.score = float(scores["score"])
            if scores.get("score_before") is not None:
                image.score_before = float(scores["score_before"])
            image.verdict = scores.get("verdict") or image.verdict
            kept = (entry.get("output") or {}).get("kept")
            if kept:
                image.note = str(kept)
            if isinstance(entry.get("source"), str):
                image.source = entry["source"]
            image.size = _size_of(entry)

    # -- JSON --------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        counts = {"pending": 0, "running": 0, "done": 0, "failed": 0}
        for image in self.images.values():
            key = "running" if image.status in RUNNING_STATUSES else image.status
            counts[key] = counts.get(key, 0) + 1
        return counts

    def progress(self, now: float | None = None) -> dict[str, Any]:
        """How far the batch (its current job) is: the fraction of the work done, images
        reviewed and exported, and an estimate of the seconds left while it runs."""
        names = (self.open_job or {}).get("names") or list(self.images)
        images = [self.images[n] for n in names if n in self.images]
        total_steps = len(self.info.get("steps") or [])
        work = 0.0
        for image in images:
            work += PROGRESS_AT.get(image.status, 0.0)
            if image.status == "prepared" and image.step and total_steps:
                span = PROGRESS_AT["processed"] - PROGRESS_AT["prepared"]
                work += span * min(image.step, total_steps) / total_steps
        fraction = work / len(images) if images else (1.0 if self.idle else 0.0)
        elapsed: float | None = None
        eta: float | None = None
        started = (self.open_job or {}).get("started")
        if self.state == "running" and isinstance(started, str):
            try:
                began = datetime.fromisoformat(started).timestamp()
            except ValueError:
                began = None
            if began is not None:
                elapsed = max(0.0, (now if now is not None else time.time()) - began)
                # Only once a real share of the work is done: earlier guesses swing wildly.
                if fraction >= 0.05 and elapsed >= 1:
                    eta = round(elapsed * (1 - fraction) / fraction, 1)
        return {
            "fraction": round(min(1.0, fraction), 4),
            "reviewed": sum(1 for i in self.images.values() if i.status in ("reviewed", "done")),
            "exported": sum(1 for i in self.images.values() if i.status == "done"),
            "elapsed_s": round(elapsed, 1) if elapsed is not None else None,
            "eta_s": eta,
        }

    def to_json(self, with_images: bool = True) -> dict[str, Any]:
        base = f"/api/batches/{self.id}"
        downloadable = self.idle and bool(self.archives())
        data: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "created": self.info["created"],
            "preset": self.info["preset"],
            "overrides": self.info.get("overrides") or {},
            "total": len(self.images),
            "counts": self.counts(),
            "progress": self.progress(),
            "steps": list(self.info.get("steps") or []),
            "skipped": self.skipped,
            "error": self.error,
            "run_id": self.run_id,
            "zip_url": f"{base}/zip" if downloadable else None,
            "report_url": f"{base}/report" if self.idle and self.report_path() else None,
            "exit_code": self.exit_code,
        }
        if with_images:
            data["images"] = [self._image_json(i, downloadable) for i in self.images.values()]
        return data

    def _image_json(self, image: ImageState, downloadable: bool) -> dict[str, Any]:
        base = f"/api/batches/{self.id}"
        return {
            "name": image.name,
            "index": image.index,
            "status": image.status,
            "phase": image.phase,
            "error": image.error,
            "note": image.note,
            "score": image.score,
            "score_before": image.score_before,
            "verdict": image.verdict,
            "step": image.step,
            "step_op": image.step_op,
            "reused": image.reused,
            "thumbs": {
                label: (f"{base}/thumbs/{image.index}/{label}" if label in image.thumbs else None)
                for label in THUMB_LABELS
            },
            "output_name": image.output_name,
            "result_url": (
                f"{base}/results/{image.index}" if self._delivered(image, downloadable) else None
            ),
            "full": {
                "before": (
                    f"{base}/full/{image.index}/before"
                    if self._delivered(image, downloadable) and self.input_uri(image)
                    else None
                ),
                "after": (
                    f"{base}/full/{image.index}/after"
                    if self._delivered(image, downloadable)
                    else None
                ),
            },
            "size": (
                {"width": image.size[0], "height": image.size[1]}
                if image.size and self._delivered(image, downloadable)
                else None
            ),
        }

    @staticmethod
    def _delivered(image: ImageState, downloadable: bool) -> bool:
        return bool(downloadable and image.output_name and image.status == "done")

    def input_uri(self, image: ImageState) -> str | None:
        """Where the image's input is: the uploaded file, or the URI the run read it from
        (as its manifest says); None when it is not known."""
        from retouch.lib.delivery.naming import is_safe_name

        if image.source:
            return image.source
        upload = self.folder / "input"
        if self.info.get("source") == str(upload) and is_safe_name(image.name):
            return str(upload / image.name)
        return None

    def persist(self, pending: dict[str, Any] | None | bool = False) -> None:
        """Save batch.json (``pending``: the job spec waiting in the queue, None to clear it)."""
        if pending is not False:
            self.info["pending_job"] = pending
        self.info["state"] = self.state
        self.info["error"] = self.error
        self.info["pid"] = self.job.pid if self.job else None
        _write_json(self.folder / "batch.json", self.info)


def _size_of(entry: dict[str, Any]) -> tuple[int, int] | None:
    """Width and height of the delivered file (its first output), from a manifest entry."""
    outputs = entry.get("outputs") or []
    for found in (outputs[0] if outputs else None, entry.get("output")):
        if isinstance(found, dict):
            width, height = found.get("width"), found.get("height")
            if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
                return width, height
    return None


def _exists(path: str) -> bool:
    return os.path.exists(path) if "://" not in path else True


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

    def list(self) -> list[dict[str, Any]]:
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
                "started": _now(),
            }
        )
        log = batch.folder / f"job-{job.number}.log"
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


# -- downloads ------------------------------------------------------------------------------


def _zip_stamp(paths: list[Path]) -> str:
    return "-".join(f"{p.stat().st_mtime_ns:x}{p.stat().st_size:x}" for p in paths)


def extract_result(batch: Batch, member: str) -> Path | None:
    """The delivered file ``member`` (a path in the batch's ZIPs), extracted once into the
    batch's cache so it can be served with ranges; None when no archive holds it."""
    from retouch.lib.delivery.naming import is_safe_name

    archives = batch.archives()
    if not archives or not is_safe_name(member):  # never a path out of the cache
        return None
    target = batch.folder / "cache" / f"results-{_zip_stamp(archives)}" / member
    if target.is_file():
        return target
    for archive in archives:
        with zipfile.ZipFile(archive) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
            with zf.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
            tmp.replace(target)
            return target
    return None


def selection_zip(batch: Batch, members: list[str]) -> Path:
    """A ZIP of only ``members`` (paths in the batch's ZIPs), built once per selection and
    delivery, in the batch's cache."""
    import hashlib

    archives = batch.archives()
    wanted = sorted(set(members))
    key = hashlib.sha256(
        (_zip_stamp(archives) + "\n" + "\n".join(wanted)).encode("utf-8")
    ).hexdigest()[:20]
    target = batch.folder / "cache" / f"selected-{key}.zip"
    if target.is_file():
        # Marked as recently used by its access time: the modification time is part of the
        # ETag that resumed downloads rely on, so it stays.
        os.utime(target, ns=(time.time_ns(), target.stat().st_mtime_ns))
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _drop_old_selections(target.parent, keep=MAX_SELECTIONS - 1)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    left = set(wanted)
    with zipfile.ZipFile(tmp, "w", allowZip64=True) as out:
        for archive in archives:
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if info.filename in left:
                        left.discard(info.filename)
                        with zf.open(info) as src, out.open(info, "w") as dst:
                            shutil.copyfileobj(src, dst, 1024 * 1024)
    tmp.replace(target)
    return target


def _drop_old_selections(cache: Path, keep: int) -> None:
    """Delete all but the ``keep`` most recently used selection ZIPs: each distinct
    selection is a copy of its results, and asking for many must not fill the disk."""
    found = []
    for path in cache.glob("selected-*.zip"):
        try:
            found.append((path.stat().st_atime_ns, path))
        except FileNotFoundError:
            continue
    for _mtime, path in sorted(found, reverse=True)[keep:]:
        path.unlink(missing_ok=True)


def archive_members(batch: Batch) -> dict[str, int]:
    """Every file in the batch's ZIPs with its size."""
    sizes: dict[str, int] = {}
    for archive in batch.archives():
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    sizes.setdefault(info.filename, info.file_size)
    return sizes


# -- the full-size comparison -----------------------------------------------------------------


class FullViewError(Exception):
    """An image that cannot be shown at full size: the HTTP status and why."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(message)


def full_view(batch: Batch, which: str, index: int, uri: str, name: str) -> tuple[Path, str]:
    """The file to send for the full-size ``which`` (before or after) of image ``index``,
    read from ``uri``, with its media type. JPEG, PNG and WebP of 8 bits and one frame are
    sent as they are; other formats, 16-bit images and animations are converted once
    (their first frame) into the batch's cache: PNG when the image has alpha, else JPEG of
    quality 95. Raises :class:`FullViewError` for a missing file, one that is not an image,
    or one of more than :data:`FULL_VIEW_MAX_PIXELS` pixels."""
    from retouch.lib import storage
    from retouch.lib.errors import RetouchError

    cache = batch.folder / "cache" / "full"
    local = storage.local_path(uri)
    if local is None:  # in an object store: fetched once (the cache goes with a new job)
        import hashlib

        path = cache / f"source-{hashlib.sha256(uri.encode()).hexdigest()[:20]}"
        if not path.is_file():
            from retouch.lib.settings import get_settings

            try:
                data = storage.read_bytes(uri, max_bytes=get_settings().max_file_bytes)
            except RetouchError as exc:
                raise FullViewError(
                    404, f"{name}: the {which} image cannot be read: {exc}"
                ) from None
            _write_atomic(path, data)
            del data
    else:
        path = Path(local)
    try:
        stat = path.stat()
    except OSError:
        raise FullViewError(404, f"{name}: the {which} image is gone from the server") from None
    stem = f"{which}-{index}-{stat.st_mtime_ns:x}{stat.st_size:x}"
    done = _converted_before(cache, stem)
    if done is not None:
        return done
    info = _probe_file(path, name, stat.st_size)
    pixels = info.width * info.height
    if pixels > FULL_VIEW_MAX_PIXELS:
        raise FullViewError(
            413,
            f"{name}: the {which} image is {info.width}x{info.height} = {pixels / 1e6:.1f} MP, "
            f"more than the {FULL_VIEW_MAX_PIXELS / 1e6:g} MP the full-size view shows; "
            "download the file to see it at full size",
        )
    if info.format in BROWSER_FORMATS and info.bit_depth <= 8 and info.frames == 1:
        return path, BROWSER_FORMATS[info.format]
    with _CONVERTING:
        done = _converted_before(cache, stem)  # by a request that waited ahead of this one
        if done is not None:
            return done
        data = _converted(path, name)
        ext, media = ("png", "image/png") if data[:4] == b"\x89PNG" else ("jpg", "image/jpeg")
        for old in cache.glob(f"{which}-{index}-*"):  # an earlier version of the same image
            old.unlink(missing_ok=True)
        target = cache / f"{stem}.{ext}"
        _write_atomic(target, data)
    return target, media


def _converted_before(cache: Path, stem: str) -> tuple[Path, str] | None:
    for ext, media in (("png", "image/png"), ("jpg", "image/jpeg")):
        if (cache / f"{stem}.{ext}").is_file():
            return cache / f"{stem}.{ext}", media
    return None


def _probe_file(path: Path, name: str, size: int) -> Any:
    """The header of an image file (format, size, depth, frames), read from its first bytes
    (all of them when the header needs more)."""
    from retouch.lib import imageio
    from retouch.lib.errors import InvalidImageError

    unlimited = 1 << 62  # the pixel bound is checked by the caller, in its own words
    with open(path, "rb") as fh:
        head = fh.read(_HEAD_BYTES)
    try:
        return imageio.probe(head, name, pixel_limit=unlimited)
    except InvalidImageError as exc:
        if size <= len(head):
            raise FullViewError(415, f"{name}: cannot be shown: {exc.reason}") from None
    try:
        return imageio.probe(path.read_bytes(), name, pixel_limit=unlimited)
    except InvalidImageError as exc:
        raise FullViewError(415, f"{name}: cannot be shown: {exc.reason}") from None


def _converted(path: Path, name: str) -> bytes:
    """The image at ``path`` as 8-bit PNG (with alpha) or JPEG (without)."""
    from retouch.lib import imageio
    from retouch.lib.errors import InvalidImageError
    from retouch.lib.image import Image, to_uint8

    try:
        image = imageio.decode(path.read_bytes(), name, pixel_limit=FULL_VIEW_MAX_PIXELS)
    except InvalidImageError as exc:
        raise FullViewError(415, f"{name}: cannot be shown: {exc.reason}") from None
    alpha = None if image.alpha is None else to_uint8(image.alpha)
    eight = Image(to_uint8(image.pixels), alpha, image.is_gray, image.info)
    del image
    return imageio.encode(eight, "png" if alpha is not None else "jpg", quality=95)


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
