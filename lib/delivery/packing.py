"""Packing a run's outputs into archives: grouped, split into parts, written and verified."""

from __future__ import annotations

import os
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from retouch.lib import storage
from retouch.lib.delivery import archive, naming
from retouch.lib.delivery.destination import Outbox
from retouch.lib.errors import StorageError
from retouch.lib.phases.context import RunContext
from retouch.lib.phases.export import frames_listing, staging_path
from retouch.lib.recipe import ExportSettings
from retouch.lib.records import ImageRecord


@dataclass
class Member:
    """One output going into an archive."""

    name: str  # path in the archive and the mirror
    local: str  # a local copy of the staged file
    sha256: str
    size: int
    record: ImageRecord
    profile: str


@dataclass
class Archive:
    """One archive written to the destination, with what went into it."""

    name: str
    members: list[Member]
    group: str | None = None
    part: int = 1
    parts: int = 1
    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


_NO_CATEGORY = {"group": "ungrouped", "verdict": "unscored", "tag": "untagged", "folder": "top"}


def collect_members(ok: list[ImageRecord], ctx: RunContext, tmp: str) -> list[Member]:
    """Every output of the records ``ok``, with a local copy of it (remote ones in ``tmp``)."""
    members = []
    for r in ok:
        for out in r.outputs:
            if out.get("kind") == "frames":  # an image sequence: a folder of files
                members += _sequence_members(r, out, ctx, tmp)
                continue
            members.append(
                Member(
                    name=str(out["name"]),
                    local=local_copy(staging_path(ctx, str(out["name"])), tmp),
                    sha256=str(out["sha256"]),
                    size=int(out["bytes"]),
                    record=r,
                    profile=str(out.get("profile") or ""),
                )
            )
    return members


def _sequence_members(
    record: ImageRecord, out: dict[str, Any], ctx: RunContext, tmp: str
) -> list[Member]:
    """The files of an image-sequence output, as its export listed them once all were staged.

    Raises:
        StorageError: the listing is missing (the export did not finish) or names a file
            that is not staged.
    """
    folder = str(out["name"])
    listing_uri = frames_listing(ctx, folder)
    if not storage.exists(listing_uri):
        raise StorageError(
            f"{record.name}: the frames of {folder}/ are not all staged (the export did not "
            "finish); run the same command again to export them"
        )
    listing = ctx.workspace.read_json(listing_uri)
    members = []
    for name, size, sha in listing["files"]:
        member = f"{folder}/{name}"
        members.append(
            Member(
                name=member,
                local=local_copy(staging_path(ctx, member), tmp),
                sha256=str(sha),
                size=int(size),
                record=record,
                profile=str(out.get("profile") or ""),
            )
        )
    return members


def plan_archives(
    members: list[tuple[str, int, ImageRecord]], export: ExportSettings
) -> list[dict[str, Any]]:
    """Which archive each output goes to: grouped by ``export.group_by``, split under
    ``export.split_mb``.

    Args:
        members: ``(name in the archive, size in bytes, the image's record)`` in order.
        export: the run's export settings.

    Returns:
        One ``{"name", "group", "part", "parts", "members"}`` per archive (``members`` are
        positions in ``members``), in delivery order. Grouped archives are named
        ``<zip stem>-<category>.zip`` and parts ``...-part01.zip``; a single archive keeps
        ``zip_name``.
    """
    stem = export.zip_name[: -len(".zip")]
    groups: dict[str, list[int]] = {}
    labels: dict[str, str] = {}
    for i, (_name, _size, record) in enumerate(members):
        if export.group_by == "none":
            key = ""
        else:
            label = record.category(export.group_by) or _NO_CATEGORY[export.group_by]
            key = label.casefold()
            labels.setdefault(key, label)
        groups.setdefault(key, []).append(i)
    used: set[str] = set()
    planned = []
    for key, positions in groups.items():
        if export.group_by == "none":
            base, group = export.zip_name, None
        else:
            group = labels[key]
            slug = naming.sanitize_part(group.replace("/", "-")).strip(" .") or "other"
            base = naming.unique_name(f"{stem}-{slug}.zip", used)
        limit = export.split_bytes
        parts = (
            archive.plan_parts([(members[i][0], members[i][1]) for i in positions], limit)
            if limit
            else [list(range(len(positions)))]
        )
        for number, part in enumerate(parts, start=1):
            name = archive.part_name(base, number, len(parts)) if len(parts) > 1 else base
            planned.append(
                {
                    "name": name,
                    "group": group,
                    "part": number,
                    "parts": len(parts),
                    "members": [positions[j] for j in part],
                }
            )
    return planned


def write_archives(members: list[Member], ctx: RunContext, outbox: Outbox) -> list[Archive]:
    """Write the archives :func:`plan_archives` plans through ``outbox``, each verified when
    the export asks; on failure the ones already at their final names are removed."""
    export = ctx.recipe.export
    plan = plan_archives([(m.name, m.size, m.record) for m in members], export)
    written: list[Archive] = []
    try:
        for item in plan:
            entry = Archive(
                name=item["name"],
                members=[members[i] for i in item["members"]],
                group=item["group"],
                part=item["part"],
                parts=item["parts"],
            )
            uri = outbox.target(entry.name)
            final = storage.join(outbox.dest, entry.name)
            entry.info = archive.write_zip(
                [(m.name, m.local) for m in entry.members],
                uri,
                compresslevel=export.compresslevel,
                compression=export.compression,
            )
            entry.info["uri"] = final
            outbox.wrote(entry.name)
            written.append(entry)
            if export.verify:
                outbox.step("checking", uri, final)
                problems = archive.verify_zip(uri, {m.name: m.sha256 for m in entry.members})
                if problems:
                    raise StorageError(
                        f"{storage.redact(final)}: the written ZIP failed verification: "
                        f"{'; '.join(problems)}"
                    )
            limit = export.split_bytes
            if limit and entry.info["size"] > limit:
                if len(entry.members) == 1:
                    m = entry.members[0]
                    entry.warnings.append(
                        f"{m.name} ({m.size} bytes) is larger than the split limit "
                        f"({limit} bytes), so it is alone in this part"
                    )
                else:  # plan_parts bounds sizes from above: this would be a bug, say so
                    entry.warnings.append(
                        f"this part is {entry.info['size']} bytes, over the {limit} byte limit"
                    )
    except Exception:
        # Never leave archives we know to be wrong or incomplete (staged local files are
        # removed with the rest of the delivery; these are objects at their final names).
        for entry in written if not outbox.local else []:
            with suppress(StorageError):
                storage.remove(storage.join(outbox.dest, entry.name))
                outbox.written.remove(entry.name)
        raise
    return written


def local_copy(uri: str, tmp: str) -> str:
    """A local path for ``uri``: itself when local, else a download into ``tmp``."""
    local = storage.local_path(uri)
    if local is not None:
        return local
    target = os.path.join(tmp, f"{len(os.listdir(tmp)):06d}")
    with open(target, "wb") as fh:
        fh.write(storage.read_bytes(uri))
    return target
