"""What runs leave in the workspace: their results recorded as versions, their saved
records and options (to regenerate or re-export them), replacements of their sources."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from retouch.lib import storage
from retouch.lib.errors import RetouchError
from retouch.lib.records import ImageRecord, OutputInfo, PreviousVersion
from retouch.lib.versions.store import Version, VersionStore, image_id, new_stamp
from retouch.lib.workspace import Workspace

if TYPE_CHECKING:
    from retouch.lib.phases.context import RunContext


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
            scores=record.scores.to_json(),
            problems=record.problems,
            output={k: v for k, v in record.output.to_json().items() if k not in _VERSION_FIELDS},
            thumbs=thumbs,
            note=note,
        )
        chosen.number = len(versions) + 1
    record.output.image_id = image
    record.output.version = chosen.number
    record.output.version_id = chosen.stamp
    if current is not None and current.stamp != chosen.stamp:
        record.output.previous = previous_entry(store, current)
    else:
        record.output.discard("previous")
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


def previous_entry(store: VersionStore, version: Version) -> PreviousVersion:
    """What a record says about the version it replaced (for old-vs-new in the report)."""
    return PreviousVersion.model_validate(
        {
            "version": version.number,
            "version_id": version.stamp,
            "result_key": version.result_key,
            "run_id": version.run_id,
            "scores": version.scores,
            "source": version.source,
            "thumb_before": store.thumb_uri(version.image_id, version.stamp, "before"),
            "thumb_after": store.thumb_uri(version.image_id, version.stamp, "after"),
        }
    )


def apply_version(record: ImageRecord, version: Version) -> ImageRecord:
    """Make ``record`` describe ``version`` (for an image a regeneration did not process:
    its current or best version is what gets exported)."""
    record.result_key = version.result_key
    record.scores = version.scores.model_copy(deep=True)
    record.problems = list(version.problems)
    record.source = version.source
    record.uri = version.source
    record.sha256 = version.source_sha256
    record.status = "ok"
    record.failed_phase = record.reason = None
    record.output = OutputInfo.model_validate(
        {
            **version.output,
            "image_id": version.image_id,
            "version": version.number,
            "version_id": version.stamp,
        }
    )
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
    if record.output.image_id:
        return record.output.image_id
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
