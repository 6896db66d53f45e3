"""Version records and the store that keeps them: history, current and best version,
rollback, lookup; comparison pictures."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from retouch.lib import storage
from retouch.lib.errors import RetouchError
from retouch.lib.records import Scores
from retouch.lib.workspace import Workspace

VERSIONS_DIR = "versions"


def image_id(source_sha256: str, name: str) -> str:
    """The identity of an image: its content hash and file name (folders ignored)."""
    base = PurePosixPath(name.replace("\\", "/")).name
    return hashlib.sha256(f"{source_sha256}\0{base}".encode()).hexdigest()[:24]


def new_stamp() -> str:
    """A unique, time-ordered object name (two writers never produce the same one)."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"


def stamp_time(stamp: str) -> datetime:
    return datetime.fromtimestamp(int(stamp.split("-", 1)[0]) / 1e9, tz=UTC)


@dataclass
class Version:
    """One recorded result of one image."""

    stamp: str
    image_id: str
    result_key: str
    run_id: str
    name: str
    source: str
    source_sha256: str
    recipe: dict[str, Any] = field(default_factory=dict)
    scores: Scores = field(default_factory=Scores)
    problems: list[str] = field(default_factory=list)
    output: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    note: str = ""
    number: int = 0  # position in time order, filled in when listed

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("number")
        data["scores"] = self.scores.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Version:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["scores"] = Scores.model_validate(known.get("scores") or {})
        return cls(**known)


class VersionStore:
    """The version history of every image in one workspace."""

    def __init__(self, workspace: Workspace):
        self.ws = workspace

    def _dir(self, image: str, *parts: str) -> str:
        return self.ws.path(VERSIONS_DIR, image, *parts)

    # -- writing ---------------------------------------------------------------------------
    def add(
        self,
        image: str,
        *,
        result_key: str,
        run_id: str,
        name: str,
        source: str,
        source_sha256: str,
        recipe: dict[str, Any] | None = None,
        scores: Mapping[str, Any] | None = None,
        problems: list[str] | None = None,
        output: dict[str, Any] | None = None,
        thumbs: dict[str, bytes] | None = None,
        note: str = "",
    ) -> Version:
        """Record a new version of ``image``; it becomes current. Thumbnails (JPEG bytes by
        label, "before"/"after") are written first, so a listed version always has them."""
        stamp = new_stamp()
        for label, data in (thumbs or {}).items():
            storage.write_bytes(self.thumb_uri(image, stamp, label), data, durable=False)
        version = Version(
            stamp=stamp,
            image_id=image,
            result_key=result_key,
            run_id=run_id,
            name=name,
            source=storage.redact(source),
            source_sha256=source_sha256,
            recipe=recipe or {},
            scores=Scores.model_validate(scores or {}),
            problems=list(problems or []),
            output=output or {},
            created=stamp_time(stamp).isoformat(timespec="seconds"),
            note=note,
        )
        self.ws.write_json(self._dir(image, "v", stamp + ".json"), version.to_json())
        return version

    def set_current(self, image: str, version: Version, *, note: str = "") -> None:
        """Make ``version`` the current one (a new pointer object; latest wins)."""
        stamp = new_stamp()
        self.ws.write_json(
            self._dir(image, "current", stamp + ".json"),
            {"version": version.stamp, "created": stamp_time(stamp).isoformat(), "note": note},
        )

    def thumb_uri(self, image: str, stamp: str, label: str) -> str:
        return self._dir(image, "thumbs", f"{stamp}-{label}.jpg")

    # -- reading ---------------------------------------------------------------------------
    def history(self, image: str) -> list[Version]:
        """Every version of ``image``, oldest first, numbered from 1."""
        names = sorted(
            n for n in self.ws.list_tree(VERSIONS_DIR, image, "v") if n.endswith(".json")
        )
        out = []
        for number, rel in enumerate(names, start=1):
            version = Version.from_json(self.ws.read_json(self._dir(image, "v", rel)))
            version.number = number
            out.append(version)
        return out

    def current(self, image: str, versions: list[Version] | None = None) -> Version | None:
        """The current version: the latest of (newest version, newest rollback pointer)."""
        versions = self.history(image) if versions is None else versions
        if not versions:
            return None
        newest = versions[-1]
        pointers = sorted(
            n for n in self.ws.list_tree(VERSIONS_DIR, image, "current") if n.endswith(".json")
        )
        by_stamp = {v.stamp: v for v in versions}
        for rel in reversed(pointers):
            if rel[: -len(".json")] < newest.stamp:
                break  # a version recorded after this pointer supersedes it
            target = self.ws.read_json(self._dir(image, "current", rel)).get("version")
            if target in by_stamp:
                return by_stamp[target]
        return newest

    def best(self, image: str, versions: list[Version] | None = None) -> Version | None:
        """The version with the highest review score (the newest among equals)."""
        versions = self.history(image) if versions is None else versions
        scored = [(v.scores.score, v) for v in versions if v.scores.score is not None]
        if not scored:
            return versions[-1] if versions else None
        return max(scored, key=lambda sv: (float(sv[0]), sv[1].stamp))[1]

    def get(self, image: str, number: int) -> Version:
        versions = self.history(image)
        for v in versions:
            if v.number == number:
                return v
        raise RetouchError(
            f"image {image}: no version {number} (it has {len(versions)}: "
            f"1..{len(versions)}); see `retouch versions {image}`"
        )

    def images(self) -> list[str]:
        """The ids of every image with a history."""
        return sorted({rel.split("/", 1)[0] for rel in self.ws.list_tree(VERSIONS_DIR)})

    def current_keys(self) -> set[str]:
        """Result keys of every image's current version (never evicted from the cache)."""
        keys = set()
        for image in self.images():
            current = self.current(image)
            if current:
                keys.add(current.result_key)
        return keys

    def find(self, query: str) -> str:
        """Resolve what a user typed to an image id: a local file (its content and name), an
        image id or unique prefix of one, or an image name recorded in some version.

        Raises:
            RetouchError: nothing matches, or several images match (they are listed).
        """
        if os.path.isfile(query):
            with open(query, "rb") as fh:
                found = image_id(hashlib.sha256(fh.read()).hexdigest(), query)
            if found not in self.images():
                raise RetouchError(
                    f"{query}: this file has no versions in the workspace {self.ws.root} "
                    "(an image is identified by its content and file name)"
                )
            return found
        images = self.images()
        by_id = [i for i in images if i.startswith(query)]
        if len(by_id) == 1:
            return by_id[0]
        matches = []
        for image in images:
            versions = self.history(image)
            names = {v.name for v in versions} | {PurePosixPath(v.name).name for v in versions}
            if query in names:
                matches.append((image, versions[-1]))
        if len(matches) == 1:
            return matches[0][0]
        if not matches:
            raise RetouchError(
                f"no image {query!r} in the workspace {self.ws.root}: give a source file, an "
                f"image id or an image name ({len(images)} images have versions)"
            )
        listed = "; ".join(f"{i} ({v.source})" for i, v in matches[:10])
        raise RetouchError(
            f"{query!r} names {len(matches)} different images: give one of their ids: {listed}"
        )


def dumps(version: Version) -> str:
    """A version as JSON text (for ``--json`` output)."""
    data = version.to_json()
    data["number"] = version.number
    return json.dumps(data)


# -- pictures ----------------------------------------------------------------------------------

COMPARE_GAP = 8


def side_by_side(ws: Workspace, versions: list[Version], *, max_height: int = 1024) -> bytes:
    """A PNG with the results of ``versions`` side by side (left to right), each scaled to a
    common height (at most ``max_height``), separated by a white gap.

    Raises:
        RetouchError: a version's result is no longer stored (evicted from the cache).
    """
    import numpy as np

    from retouch.lib.image import Image, resize_plane
    from retouch.lib.imageio import encode

    planes = []
    for v in versions:
        if not ws.has_result(v.result_key):
            raise RetouchError(
                f"version {v.number} of image {v.image_id}: its result {v.result_key[:12]} is "
                "no longer in the workspace (evicted from the cache); roll back to it and "
                "regenerate the run to compute it again"
            )
        planes.append(ws.load_result(v.result_key).to_uint8())
    height = min(max_height, max(p.shape[0] for p in planes))
    scaled = [
        resize_plane(p, max(1, round(p.shape[1] * height / p.shape[0])), height) for p in planes
    ]
    gap = np.full((height, COMPARE_GAP, 3), 255, np.uint8)
    row = [scaled[0]]
    for plane in scaled[1:]:
        row += [gap, plane]
    return encode(Image(np.concatenate(row, axis=1)), "png", keep_metadata=False)


def preview_jpeg(uri: str, *, max_side: int = 320, pixel_limit: int = 100_000_000) -> bytes:
    """A small JPEG of the image at ``uri`` (for previews before a replacement).

    Raises:
        InvalidImageError, StorageError: the file can't be read or isn't an image.
    """
    from retouch.lib.image import Image, resize_plane
    from retouch.lib.imageio import decode, encode

    image = decode(storage.read_bytes(uri), storage.redact(uri), pixel_limit=pixel_limit)
    scale = min(1.0, max_side / max(image.width, image.height))
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    small = Image(resize_plane(image.to_uint8(), w, h))
    return encode(small, "jpg", quality=82, keep_metadata=False)
