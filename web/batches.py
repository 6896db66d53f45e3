"""Batches of ``retouch web``: what was asked and the state folded from their events.

A batch lives in ``$RETOUCH_HOME/web/batches/<id>/``::

    batch.json     what was asked (preset, overrides, images, source) and the job waiting
    input/ masks/  the uploaded files (uploads only)
    out/           the delivery: ZIP, manifest.json, report.html
    events.jsonl   every progress event of its processes, between our own job markers
    job-N.log      stderr of job N (the CLI's error line says why a job failed)
    cache/         ZIPs of selected results and extracted single results (rebuilt on demand)

The state shown is rebuilt by folding ``events.jsonl``: the server can restart at any time
and find every batch as it was. The processes that write the events belong to
:mod:`retouch.web.runner`; what the API shows of a batch is :mod:`retouch.web.views`.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retouch.lib.phases.review import THUMB_LABELS

if TYPE_CHECKING:
    from retouch.web.runner import Job

RUNNING_STATUSES = ("prepared", "processed", "reviewed")
PHASE_STATUS = {
    "prepare": "prepared",
    "process": "processed",
    "review": "reviewed",
    "export": "done",
}


def new_batch_id() -> str:
    return "b-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def now_iso() -> str:
    """The current time as batch.json and the job markers record it."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)


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
    frames: Frames | None = None  # a video's frames in the process phase
    sequence: FrameSequence | None = None  # a video delivered as an image sequence

    def copy(self) -> ImageState:
        return ImageState(**{**self.__dict__, "thumbs": dict(self.thumbs)})


@dataclass(frozen=True)
class FrameSequence:
    """A video delivered as an image sequence (its first output, from the manifest): the
    ``folder`` of ``frames`` numbered images in ``format``, with frames.csv and the audio."""

    folder: str
    frames: int
    format: str

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> FrameSequence | None:
        outputs = entry.get("outputs") or []
        first = outputs[0] if outputs and isinstance(outputs[0], dict) else {}
        frames, folder = first.get("frames"), first.get("name")
        if first.get("kind") != "frames" or not isinstance(folder, str):
            return None
        if not isinstance(frames, int) or isinstance(frames, bool) or frames < 0:
            return None
        return cls(folder, frames, str(first.get("format") or ""))


@dataclass(frozen=True)
class Frames:
    """How far a video's process phase is (its last "frames" event): ``done`` of ``total``
    frames (frames of segments stored by an earlier run count as done), ``fps`` of this
    run's own work and ``eta_s`` seconds left at that rate, ``segment`` of ``segments``."""

    done: int
    total: int | None = None
    fps: float | None = None
    eta_s: float | None = None
    segment: int | None = None
    segments: int | None = None
    reused: bool = False

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Frames | None:
        """The event's numbers, or None when its frame count is missing or absurd (a
        damaged line must not break the page's arithmetic)."""

        def count(key: str) -> int | None:
            value = event.get(key)
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            return value if ok else None

        def rate(key: str) -> float | None:
            value = event.get(key)
            if not isinstance(value, int | float) or isinstance(value, bool):
                return None
            return float(value) if 0 <= value < float("inf") else None  # not NaN either

        done = count("done")
        if done is None:
            return None
        total = count("total") or None  # 0: a count the file did not declare
        return cls(
            done=min(done, total) if total else done,
            total=total,
            fps=rate("fps"),
            eta_s=rate("eta_s"),
            segment=count("segment"),
            segments=count("segments"),
            reused=event.get("reused") is True,
        )


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
        elif kind == "frames":
            image = self.images.get(str(event.get("name")))
            frames = Frames.from_event(event)
            if image is not None and frames is not None:
                image.frames = frames
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
                image.frames = None

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
            image.sequence = FrameSequence.from_entry(entry)

    # -- what the API shows (retouch.web.views) --------------------------------------------
    def to_json(self, with_images: bool = True) -> dict[str, Any]:
        from retouch.web.views import batch_json

        return batch_json(self, with_images)

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
