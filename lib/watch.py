"""Notice new images under a local folder or an fsspec prefix and group them into batches.

A :class:`Watcher` polls a source (``/srv/inbox``, ``s3://studio/inbox``): a file counts as
arrived once its size and modification time have stayed the same for ``settle_s`` seconds
(so a file still being copied or uploaded is not taken half-written). Settled files are
handed out in batches of at most ``max_batch``; once the caller has acted on a batch
(emitted its event) it calls :meth:`Watcher.mark_seen`, which records the files in a small
JSON object in the workspace. A restarted watcher reads that object back and never hands
out the same file again, unless its size or time changes (a replaced file is a new arrival).

Batches are also written as list files (one URI a line, which ``sources.discover`` reads),
so a run can be given a whole batch as one ``source``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from retouch.lib import storage
from retouch.lib.errors import SourceError, StorageError
from retouch.lib.settings import get_settings
from retouch.lib.sources import is_image_name, is_video_name

STATE_VERSION = 1


@dataclass(frozen=True)
class FileStamp:
    """What the watcher knows of one file: its size in bytes and modification time (epoch s)."""

    size: int
    mtime: float

    def key(self) -> str:
        return f"{self.size}:{self.mtime:.6f}"


def _mtime(info: dict[str, Any]) -> float:
    # Local files give "mtime" (epoch seconds); object stores give "LastModified" (datetime)
    # or "mtime"/"last_modified" depending on the backend.
    for name in ("mtime", "LastModified", "last_modified", "updated", "modified"):
        value = info.get(name)
        if value is None:
            continue
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
        try:
            return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
    return 0.0


def scan(source: str) -> dict[str, FileStamp]:
    """The image and video files under ``source`` (recursively) with their size and
    modification time.

    Hidden files and folders (a name starting with ``.``, as partial uploads and editor
    temporaries are) and other extensions are left out. URIs keep the source's own form
    (a local source gives local paths, ``s3://bucket/prefix`` gives ``s3://`` URIs).

    Raises:
        SourceError: the source does not exist (say which and what to do).
        StorageError: listing failed after retries.
    """
    fs, root = storage.filesystem(source)
    if not storage.retrying(lambda: fs.exists(root), what="check", uri=source):
        raise SourceError(
            f"watched source {storage.redact(source)} does not exist: create the folder or "
            "prefix, or give the right one"
        )
    found = storage.retrying(lambda: fs.find(root, detail=True), what="list", uri=source)
    local = storage.is_local(source)
    prefix = "" if local else source.split("://", 1)[0] + "://"
    out: dict[str, FileStamp] = {}
    for path, info in found.items():
        rel = path[len(root) :].lstrip("/")
        wanted = is_image_name(path) or is_video_name(path)
        if not wanted or any(p.startswith(".") for p in rel.split("/")):
            continue
        if storage.TEMP_MARKER in path.rsplit("/", 1)[-1]:
            continue
        uri = path if local else prefix + path.split("://", 1)[-1]
        out[uri] = FileStamp(int(info.get("size") or 0), _mtime(info))
    return out


def state_uri(source: str, workspace: str | None = None) -> str:
    """Where the watcher of ``source`` keeps what it has seen: a JSON object in the workspace,
    named by a hash of the source (so two watched sources never share one)."""
    ws = workspace or get_settings().resolved_workspace()
    digest = hashlib.sha256(source.rstrip("/").encode()).hexdigest()[:16]
    return storage.join(ws, "watch", f"{digest}.json")


@dataclass
class Watcher:
    """Polls ``source`` and hands out settled, unseen image files in batches.

    ``clock`` returns the current time in seconds (injectable so tests need not sleep).
    """

    source: str
    settle_s: float = 10.0
    max_batch: int = 50
    workspace: str | None = None
    clock: Callable[[], float] = time.time
    seen: dict[str, str] = field(default_factory=dict)
    # uri -> (stamp, first time this stamp was observed)
    _pending: dict[str, tuple[FileStamp, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.settle_s < 0 or self.max_batch < 1:
            raise ValueError("settle_s must be >= 0 and max_batch >= 1")
        self.state = state_uri(self.source, self.workspace)
        self.seen = self._load()

    def _load(self) -> dict[str, str]:
        if not storage.exists(self.state):
            return {}
        raw = storage.read_bytes(self.state)
        try:
            data = json.loads(raw)
            seen = data["seen"]
            if not isinstance(seen, dict):
                raise TypeError("'seen' is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(
                f"the watcher state {storage.redact(self.state)} is unreadable ({exc}): "
                "delete it to start over (every file present will then be taken as new)"
            ) from None
        return {str(k): str(v) for k, v in seen.items()}

    def _save(self) -> None:
        data = {"version": STATE_VERSION, "source": storage.redact(self.source), "seen": self.seen}
        storage.write_bytes(self.state, json.dumps(data, indent=1, sort_keys=True).encode())

    def poll(self) -> list[list[str]]:
        """Scan once; return the settled, unseen files as batches of at most ``max_batch``
        URIs (sorted). Nothing is recorded as seen until :meth:`mark_seen` is called, so a
        batch whose event could not be sent comes back on the next poll."""
        now = self.clock()
        current = scan(self.source)
        ready: list[str] = []
        pending: dict[str, tuple[FileStamp, float]] = {}
        for uri, stamp in current.items():
            if self.seen.get(uri) == stamp.key():
                continue
            before = self._pending.get(uri)
            since = before[1] if before is not None and before[0] == stamp else now
            pending[uri] = (stamp, since)
            if now - since >= self.settle_s:
                ready.append(uri)
        self._pending = pending  # files that vanished are forgotten
        ready.sort()
        return [ready[i : i + self.max_batch] for i in range(0, len(ready), self.max_batch)]

    def mark_seen(self, uris: list[str]) -> None:
        """Record ``uris`` as handled (with the size and time they had when they settled)
        and save the state, so neither this watcher nor a restarted one hands them out again."""
        for uri in uris:
            entry = self._pending.pop(uri, None)
            if entry is not None:
                self.seen[uri] = entry[0].key()
        self._save()


def write_batch_list(uris: list[str], workspace: str | None = None) -> str:
    """Write ``uris`` as a list file (one a line) under the workspace's ``watch/batches`` and
    return its URI; the name is a hash of the content, so the same batch gives the same file."""
    ws = workspace or get_settings().resolved_workspace()
    body = "".join(u + "\n" for u in uris)
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    uri = storage.join(ws, "watch", "batches", f"batch-{digest}.txt")
    storage.write_bytes(uri, body.encode())
    return uri
