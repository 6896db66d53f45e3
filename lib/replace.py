"""Replacing the source of images in a run (the run keeps its recipe), and undoing it.

A replacement is planned first (:func:`plan`: names checked, new files found, old/new
preview thumbnails written) so it can be shown and confirmed, then saved (:func:`save`); the
regenerate flow then processes the new sources as new versions of the same images. Undoing
(:func:`undo`) makes the versions current before the replacement current again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retouch.lib import storage, versions
from retouch.lib.errors import SourceError
from retouch.lib.imageio import probe
from retouch.lib.settings import get_settings
from retouch.lib.workspace import Workspace


@dataclass
class Replacement:
    """One image's new source, and what it replaces."""

    name: str
    image_id: str | None
    old_source: str
    new_source: str
    previous_version: str | None
    old_size: str  # "WxH, N bytes" as the run recorded it
    new_size: str

    def record(self) -> dict[str, Any]:
        """As saved in the run's replacements (what :func:`undo` reads back)."""
        return {
            "name": self.name,
            "image_id": self.image_id,
            "old_source": self.old_source,
            "new_source": self.new_source,
            "previous_version": self.previous_version,
        }

    def describe(self) -> str:
        return (
            f"{self.name}: {self.old_source} ({self.old_size})\n"
            f"  -> {storage.redact(self.new_source)} ({self.new_size})"
        )


def read_map(path: Path) -> list[tuple[str, str]]:
    """The ``OLD-NAME -> NEW-FILE`` lines of a map file (blank and ``#`` lines skipped).

    Raises:
        SourceError: the file can't be read, has a line of another form, or no pairs at all.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror})") from None
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "->" not in line:
            raise SourceError(f"{path}:{number}: expected 'OLD-NAME -> NEW-FILE', got {line!r}")
        old, new = (part.strip() for part in line.split("->", 1))
        pairs.append((old, new))
    if not pairs:
        raise SourceError(f"{path}: no 'OLD-NAME -> NEW-FILE' lines")
    return pairs


def plan(
    ws: Workspace, run_id: str, pairs: list[tuple[str, str]], preview_folder: str
) -> list[Replacement]:
    """Check each ``(image name, new file)`` of run ``run_id`` and write its old and new
    thumbnails into ``preview_folder`` (``<stem>-old.jpg``, ``<stem>-new.jpg``).

    Raises:
        SourceError: a name that is not an image of the run, or a new file that isn't there.
        RetouchError: the run is unknown; a file that can't be read as an image.
    """
    state = versions.load_run(ws, run_id)
    by_name = {r.name: r for r in state.records}
    unknown = [old for old, _ in pairs if old not in by_name]
    if unknown:
        raise SourceError(
            f"no image {', '.join(map(repr, unknown))} in run {run_id}; its images: "
            + ", ".join(sorted(by_name)[:20])
        )
    store = versions.VersionStore(ws)
    planned = []
    for old, new in pairs:
        record = by_name[old]
        new_uri = new if "://" in new else os.path.abspath(new)
        if not storage.exists(new_uri):
            raise SourceError(f"{new}: not found (the new source for {old})")
        stem = Path(old).stem
        storage.write_bytes(
            os.path.join(preview_folder, f"{stem}-old.jpg"), versions.preview_jpeg(record.uri)
        )
        storage.write_bytes(
            os.path.join(preview_folder, f"{stem}-new.jpg"), versions.preview_jpeg(new_uri)
        )
        image_id = versions.run_image_id(record)
        current = store.current(image_id) if image_id else None
        planned.append(
            Replacement(
                name=old,
                image_id=image_id,
                old_source=record.source,
                new_source=new_uri,
                previous_version=current.stamp if current else None,
                old_size=f"{record.input.width or '?'}x{record.input.height or '?'}, "
                f"{record.bytes or 0} bytes",
                new_size=_image_size(new_uri),
            )
        )
    return planned


def save(ws: Workspace, run_id: str, planned: list[Replacement]) -> dict[str, str]:
    """Record the replacement (so :func:`undo` can take it back); returns the new source per
    image name, as the regenerate flow takes them."""
    versions.save_replacement(ws, run_id, [r.record() for r in planned])
    return {r.name: r.new_source for r in planned}


def undo(ws: Workspace, run_id: str) -> list[dict[str, Any]]:
    """Undo the run's latest replacement: each image's version from before it is current
    again. Returns the replacement's items (``name``, ``old_source``...); re-delivering the
    run with the old sources is the caller's next step.

    Raises:
        RetouchError: the run has no replacement left to undo.
    """
    store = versions.VersionStore(ws)
    undone = versions.undo_replacement(ws, run_id)
    items: list[dict[str, Any]] = undone["items"]
    for item in items:
        if item.get("image_id") and item.get("previous_version"):
            target = next(
                (v for v in store.history(item["image_id"]) if v.stamp == item["previous_version"]),
                None,
            )
            if target is not None:
                store.set_current(item["image_id"], target, note="replacement undone")
    return items


def _image_size(uri: str) -> str:
    data = storage.read_bytes(uri)
    info = probe(data, uri, pixel_limit=get_settings().pixel_limit)
    return f"{info.width}x{info.height}, {len(data)} bytes"
