"""Version history of images, kept in the workspace as small immutable JSON objects.

Every result a run produces for an image is a *version*: the recipe, the result key, the
scores, the run id and the time. Nothing is ever rewritten, so two runs recording versions of
the same image at the same moment can't lose one another's work (no read-modify-write):

    versions/<image-id>/v/<stamp>.json            one version (immutable)
    versions/<image-id>/current/<stamp>.json      "make version X current" (rollback)
    versions/<image-id>/thumbs/<stamp>-after.jpg  the version's thumbnails (and -before.jpg)

``<stamp>`` is ``<nanoseconds since the epoch, 20 digits>-<random hex>``: unique per writer and
sortable by time. The current version is decided by the latest event: a new version is
current from the moment it is recorded, until a later version or a later "current" object
(a rollback) supersedes it. Version numbers are positions in time order (1 = oldest).

Image identity: an image is its source *content* (sha256) plus its *file name* (without
folders). The same photo under the same name is the same image wherever it is read from;
editing or renaming the source starts a new history. A run remembers the identity of each
of its images (``output.image_id`` in its records), so a replacement source processed for
that slot (``retouch replace``) continues the slot's history.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from retouch.lib import storage
from retouch.lib.errors import RetouchError
from retouch.lib.records import ImageRecord
from retouch.lib.workspace import Workspace

if TYPE_CHECKING:
    from retouch.lib.phases.context import RunContext

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
    scores: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    output: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    note: str = ""
    number: int = 0  # position in time order, filled in when listed

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("number")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Version:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
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
        scores: dict[str, Any] | None = None,
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
            scores=scores or {},
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
        scored = [v for v in versions if isinstance(v.scores.get("score"), int | float)]
        if not scored:
            return versions[-1] if versions else None
        return max(scored, key=lambda v: (float(v.scores["score"]), v.stamp))

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


# -- runs ----------------------------------------------------------------------------------------


def record_version(
    store: VersionStore,
    record: ImageRecord,
    *,
    image: str,
    run_id: str,
    recipe: dict[str, Any],
    thumbs: dict[str, bytes] | None = None,
    note: str = "",
) -> ImageRecord:
    """Record ``record``'s result as a version of ``image`` and note it in the record.

    A result identical to the current version adds nothing; identical to an older version, it
    makes that one current again instead of duplicating it. The record's ``output`` gets
    ``image_id``, ``version`` (number), ``version_id`` (stamp) and, when the current version
    changed, ``previous``: the version it replaced (number, id, result key, scores, thumbnail
    URIs, run id) so the report can show old and new side by side.
    """
    assert record.result_key is not None and record.sha256 is not None
    versions = store.history(image)
    current = store.current(image, versions)
    same = [v for v in versions if v.result_key == record.result_key]
    if current is not None and current.result_key == record.result_key:
        chosen = current
    elif same:
        chosen = same[-1]
        store.set_current(image, chosen, note=f"same result as run {run_id}")
    else:
        chosen = store.add(
            image,
            result_key=record.result_key,
            run_id=run_id,
            name=record.name,
            source=record.source,
            source_sha256=record.sha256,
            recipe=recipe,
            scores=record.scores,
            problems=record.problems,
            output={k: v for k, v in record.output.items() if k not in _VERSION_FIELDS},
            thumbs=thumbs,
            note=note,
        )
        chosen.number = len(versions) + 1
    record.output["image_id"] = image
    record.output["version"] = chosen.number
    record.output["version_id"] = chosen.stamp
    if current is not None and current.stamp != chosen.stamp:
        record.output["previous"] = previous_entry(store, current)
    else:
        record.output.pop("previous", None)
    return record


def record_run_image(
    record: ImageRecord, ctx: RunContext, image: str | None = None, note: str = ""
) -> ImageRecord:
    """Record the result of a processed and reviewed ``record`` of the run ``ctx`` as a
    version (``image``: the slot's identity; default from the record's content and name).
    A failed image records nothing; a storage problem becomes a problem of this image only."""
    if not record.ok or record.result_key is None or record.sha256 is None:
        return record
    from retouch.lib.phases.review import thumb_path

    try:
        thumbs = {}
        for label in ("before", "after"):
            uri = thumb_path(ctx, record, label)
            if storage.exists(uri):
                thumbs[label] = storage.read_bytes(uri)
        recipe = {
            "name": ctx.recipe.name,
            "steps": ctx.recipe.canonical_steps(),
            "export": ctx.recipe.export.model_dump(mode="json"),
        }
        record_version(
            VersionStore(ctx.workspace),
            record,
            image=image or image_id(record.sha256, record.name),
            run_id=ctx.run_id,
            recipe=storage.redact_tree(recipe),
            thumbs=thumbs,
            note=note,
        )
    except RetouchError as exc:
        record.problems.append(f"version not recorded: {exc}")
    return record


_VERSION_FIELDS = ("image_id", "version", "version_id", "previous", "kept", "bytes", "format")


def previous_entry(store: VersionStore, version: Version) -> dict[str, Any]:
    """What a record says about the version it replaced (for old-vs-new in the report)."""
    return {
        "version": version.number,
        "version_id": version.stamp,
        "result_key": version.result_key,
        "run_id": version.run_id,
        "scores": version.scores,
        "source": version.source,
        "thumb_before": store.thumb_uri(version.image_id, version.stamp, "before"),
        "thumb_after": store.thumb_uri(version.image_id, version.stamp, "after"),
    }


def apply_version(record: ImageRecord, version: Version) -> ImageRecord:
    """Make ``record`` describe ``version`` (for an image a regeneration did not process:
    its current or best version is what gets exported)."""
    record.result_key = version.result_key
    record.scores = dict(version.scores)
    record.problems = list(version.problems)
    record.source = version.source
    record.uri = version.source
    record.sha256 = version.source_sha256
    record.status = "ok"
    record.failed_phase = record.reason = None
    record.output = {
        **version.output,
        "image_id": version.image_id,
        "version": version.number,
        "version_id": version.stamp,
    }
    return record


@dataclass
class RunState:
    """An earlier run as saved in the workspace: enough to regenerate or re-export it."""

    run_id: str
    source: str
    dest: str
    recipe: dict[str, Any]
    records: list[ImageRecord]
    skipped: list[dict[str, str]]
    options: dict[str, Any]


def save_run_info(ws: Workspace, run_id: str, info: dict[str, Any]) -> None:
    """``runs/<run_id>/run.json``: source, destination, recipe and options of a run (URIs
    redacted: credentials belong in the environment)."""
    ws.write_json(ws.run_path(run_id, "run.json"), storage.redact_tree(info))


def load_run(ws: Workspace, run_id: str) -> RunState:
    """The run's saved records (its manifest in the workspace) and its ``run.json``.

    Raises:
        RetouchError: the run is unknown in this workspace, or never finished its delivery.
    """
    manifest_uri = ws.run_path(run_id, "manifest.json")
    if not storage.exists(manifest_uri):
        known = sorted(ws.list_tree("runs"))
        runs = sorted({k.split("/", 1)[0] for k in known if k.endswith("/manifest.json")})
        hint = f" (runs here: {', '.join(runs[-5:])})" if runs else ""
        raise RetouchError(
            f"run {run_id!r}: no manifest in the workspace {ws.root}; give the run id printed "
            f"by `retouch run` and the same --workspace{hint}"
        )
    manifest = ws.read_json(manifest_uri)
    info_uri = ws.run_path(run_id, "run.json")
    info = ws.read_json(info_uri) if storage.exists(info_uri) else {}
    records = []
    for entry in manifest.get("images", []):
        data = dict(entry)
        data["uri"] = data.get("source", "")
        records.append(ImageRecord.model_validate(data))
    return RunState(
        run_id=run_id,
        source=str(info.get("source") or manifest.get("source") or ""),
        dest=str(info.get("dest") or manifest.get("dest") or ""),
        recipe=dict(info.get("recipe") or manifest.get("recipe") or {}),
        records=records,
        skipped=list(manifest.get("skipped") or []),
        options=dict(info.get("options") or {}),
    )


@dataclass
class RunListing:
    """One run of a workspace as ``retouch runs`` shows it."""

    run_id: str
    created: str
    state: str  # delivered | waiting for approval | rejected | not delivered
    preset: str
    source: str
    dest: str
    flow_run_id: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def _read_or_none(ws: Workspace, uri: str) -> Any:
    try:
        return ws.read_json(uri) if storage.exists(uri) else None
    except (RetouchError, ValueError):
        return None


def list_runs(ws: Workspace) -> list[RunListing]:
    """The runs recorded in ``ws``, oldest first, with the state each one is in: delivered
    (its manifest is written), waiting for approval, rejected, or not delivered (still
    running, or stopped before its delivery)."""
    fs, base = storage.filesystem(ws.path("runs"))
    try:
        folders = sorted(fs.ls(base, detail=False))
    except FileNotFoundError:
        return []
    out = []
    for folder in folders:
        run_id = str(folder).rstrip("/").rsplit("/", 1)[-1]
        info = _read_or_none(ws, ws.run_path(run_id, "run.json"))
        if not isinstance(info, dict):
            continue
        manifest = _read_or_none(ws, ws.run_path(run_id, "manifest.json"))
        approval = _read_or_none(ws, ws.run_path(run_id, "approval.json")) or {}
        if approval.get("status") == "waiting":
            state = "waiting for approval"
        elif approval.get("status") == "reject":
            state = "rejected"
        elif isinstance(manifest, dict):
            state = "delivered"
        else:
            state = "not delivered"
        out.append(
            RunListing(
                run_id=run_id,
                created=str(info.get("created") or ""),
                state=state,
                preset=str((info.get("recipe") or {}).get("name") or ""),
                source=str(info.get("source") or ""),
                dest=str(info.get("dest") or ""),
                flow_run_id=approval.get("flow_run_id") or info.get("flow_run_id"),
                summary=dict((manifest or {}).get("summary") or {}),
            )
        )
    return out


def run_image_id(record: ImageRecord) -> str | None:
    """The image identity a run's record carries (its slot), or one from its content."""
    found = record.output.get("image_id")
    if isinstance(found, str) and found:
        return found
    if record.sha256:
        return image_id(record.sha256, record.name)
    return None


# -- replacements ------------------------------------------------------------------------------


def save_replacement(ws: Workspace, run_id: str, items: list[dict[str, Any]]) -> str:
    """Remember a replacement of sources in a run (immutable; undone by a later object)."""
    stamp = new_stamp()
    ws.write_json(
        ws.run_path(run_id, "replacements", stamp + ".json"),
        {"stamp": stamp, "items": storage.redact_tree(items)},
    )
    return stamp


def undo_replacement(ws: Workspace, run_id: str) -> dict[str, Any]:
    """Mark the latest replacement of ``run_id`` not yet undone as undone and return it.

    Raises:
        RetouchError: the run has no replacement left to undo.
    """
    files = ws.list_tree("runs", run_id, "replacements")
    done = {n[: -len(".undo.json")] for n in files if n.endswith(".undo.json")}
    active = sorted(
        n[: -len(".json")] for n in files if n.endswith(".json") and not n.endswith(".undo.json")
    )
    active = [s for s in active if s not in done]
    if not active:
        raise RetouchError(f"run {run_id}: no replacement to undo")
    stamp = active[-1]
    data = ws.read_json(ws.run_path(run_id, "replacements", stamp + ".json"))
    ws.write_json(
        ws.run_path(run_id, "replacements", stamp + ".undo.json"),
        {"undone": stamp, "at": datetime.now(UTC).isoformat(timespec="seconds")},
    )
    return dict(data)


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
