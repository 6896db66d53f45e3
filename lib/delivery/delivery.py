"""Finishing a run: archives, manifest.json and the report at the destination; mirror and share links.

The parts live beside this module: :mod:`.destination` (checks, all-or-nothing writes, failure
messages), :mod:`.packing` (which outputs go into which archive), :mod:`.manifest`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from retouch.lib import storage
from retouch.lib.delivery import sync
from retouch.lib.delivery.destination import (
    DeliveryError,
    Outbox,
    check_destination,
    worth_retrying,
)
from retouch.lib.delivery.manifest import (
    build_manifest,
    previous_archives,
    retouch_version,
    sidecar_name,
)
from retouch.lib.delivery.packing import Archive, Member, collect_members, write_archives
from retouch.lib.errors import StorageError
from retouch.lib.phases.context import RunContext
from retouch.lib.phases.export import assign_outputs
from retouch.lib.phases.review import THUMB_LABELS, thumb_path
from retouch.lib.quality.report import write_report
from retouch.lib.recipe import Recipe
from retouch.lib.records import ImageRecord, RunSummary
from retouch.lib.video.review import PREVIEW_CLIP, moment_labels, preview_clip_path

__all__ = [
    "DeliveryError",
    "build_manifest",
    "check_destination",
    "clean_staging",
    "finalize",
    "preview_names",
    "worth_retrying",
]


def finalize(
    records: list[ImageRecord],
    skipped: list[dict[str, str]],
    ctx: RunContext,
    *,
    source: str,
    dest: str,
    started: float,
    performance: dict[str, Any] | None = None,
    notify: Callable[[str], None] | None = None,
    stall_s: float = 10.0,
) -> RunSummary:
    """Deliver a run to ``dest``: the archives, manifest.json and report.html.

    ``performance`` (figures of the run up to delivery, see ``lib/perf.py``) goes into the
    manifest and the summary.

    Every output of every delivered image goes into the archives (one ZIP, or one per
    category with ``group_by``, each split into independent parts under ``split_mb``); each
    archive is re-read and its members' sha256 checked. With several archives each gets a
    ``<name>.manifest.json`` beside it. With ``export.sync`` the outputs, the manifest and
    the report are mirrored (changed files only); with ``export.link_expiry_s`` share links
    are made where the storage can sign them, and listed in the manifest. Archives an
    earlier run left at ``dest`` under other names are removed, once this run's are there.

    All or nothing where the storage allows: at a local ``dest`` every file is written under
    a temporary name first and renamed into place once all are written, so a failed
    delivery leaves ``dest`` as it was; on an object store manifest.json is written last
    and the error says which of this run's files are there. With ``notify``, a step that
    takes longer than ``stall_s`` seconds is reported while it lasts.

    Raises:
        DeliveryError: a write failed (after retries, where retrying helps) or an archive
            failed verification (the run's archives are removed); the message says what,
            where, what ``dest`` holds now and what to do.
    """
    outbox = Outbox(dest, notify, stall_s)
    try:
        return _deliver(records, skipped, ctx, outbox, source, started, performance)
    except (StorageError, OSError) as exc:
        raise outbox.failure(exc) from exc
    finally:
        outbox.close()
        outbox.discard()


def _deliver(
    records: list[ImageRecord],
    skipped: list[dict[str, str]],
    ctx: RunContext,
    outbox: Outbox,
    source: str,
    started: float,
    performance: dict[str, Any] | None,
) -> RunSummary:
    dest = outbox.dest
    export = ctx.recipe.export
    ok = [r for r in records if r.ok and r.output_name and r.output_sha256 and r.outputs]
    outbox.step("reading", storage.join(dest, "manifest.json"))
    previous = previous_archives(dest)
    with tempfile.TemporaryDirectory(prefix="retouch-zip-") as tmp:
        members = collect_members(ok, ctx, tmp)
        written = write_archives(members, ctx, outbox) if members else []
        keep = {a.name for a in written}
        if len(written) > 1:
            keep |= {sidecar_name(a.name) for a in written}

        sync_info: dict[str, Any] | None = None
        mirror = export.sync.dest if export.sync else None
        if mirror and export.sync:
            outbox.step("mirroring to", mirror)
            sync_info = sync.sync_files(
                [(m.name, m.local) for m in members], mirror, versioning=export.sync.versioning
            )

        links: dict[str, Any] | None = None
        summary_links: dict[str, str] = {}
        if export.link_expiry_s:
            links = _make_links(written, members, ok, dest, mirror, export.link_expiry_s)
            summary_links = {k: v for k, v in links["archives"].items()}
            for key in ("report", "manifest"):
                if links.get(key):
                    summary_links[key] = links[key]

        archives_info = []
        for a in written:
            item = {
                "name": a.name,
                "uri": storage.redact(a.info["uri"]),
                "size": a.info["size"],
                "sha256": a.info["sha256"],
                "count": a.info["count"],
                "group": a.group,
                "part": a.part,
                "parts": a.parts,
                "warnings": a.warnings,
            }
            if len(written) > 1:
                item["sidecar"] = sidecar_name(a.name)
            if links and links["archives"].get(a.name):
                item["link"] = links["archives"][a.name]
            archives_info.append(item)
        zip_info: dict[str, Any] | None = None
        if len(written) == 1:
            zip_info = {**written[0].info, "name": written[0].name}
        if len(written) > 1:
            for a, item in zip(written, archives_info, strict=True):
                sidecar = {
                    "retouch": retouch_version(),
                    "run_id": ctx.run_id,
                    **{k: v for k, v in item.items() if k != "sidecar"},
                    "members": [
                        {
                            "name": m.name,
                            "sha256": m.sha256,
                            "bytes": m.size,
                            "profile": m.profile,
                            "image": m.record.name,
                            "index": m.record.index,
                            "verdict": m.record.scores.verdict,
                        }
                        for m in a.members
                    ],
                }
                ctx.workspace.write_json(outbox.target(sidecar_name(a.name)), sidecar)
                outbox.wrote(sidecar_name(a.name))

        manifest = build_manifest(
            records,
            skipped,
            ctx,
            source=source,
            dest=dest,
            zip_info=zip_info,
            archives=archives_info,
            sync=sync_info,
            links=links,
        )
        if performance:
            manifest["performance"] = performance
        manifest_uri = storage.join(dest, "manifest.json")

        by_index = {r.index: r for r in ok}

        def views_of(index: int) -> dict[str, bytes]:
            r = by_index.get(index)
            if r is None:
                return {}
            pair = {}
            moments = moment_labels(len(r.scores.frames or []))  # a video's sampled moments
            for label in (*THUMB_LABELS, *moments):
                uri = thumb_path(ctx, r, label)
                if storage.exists(uri):
                    pair[label] = storage.read_bytes(uri)
            clip = preview_clip_path(ctx, r)  # a video's before/after clip, when it has one
            if r.scores.preview_clip and storage.exists(clip):
                pair[PREVIEW_CLIP] = storage.read_bytes(clip)
            # The version this run replaced, beside the new one (old vs new in the report).
            replaced = r.output.previous
            old_thumb = replaced.thumb_after if replaced is not None else None
            if replaced is not None and old_thumb and storage.exists(old_thumb):
                pair[f"version:{replaced.version}"] = storage.read_bytes(old_thumb)
                if "after" in pair:
                    pair[f"version:{r.output.version}"] = pair["after"]
            return pair

        report_uri = storage.join(dest, "report.html")
        # Written section by section to a local file: the report of a large batch holds
        # every image's previews, which need not all be in memory at once.
        report_local = os.path.join(tmp, "report.html")
        with open(report_local, "w", encoding="utf-8") as fh:
            write_report(fh, manifest, views_of)
        storage.put_file(report_local, outbox.target("report.html"))
        outbox.wrote("report.html")
        # Last: a manifest.json naming this run means the whole delivery is there.
        ctx.workspace.write_json(outbox.target("manifest.json"), manifest)
        outbox.wrote("manifest.json")
        outbox.commit()

        for name in sorted((previous | {export.zip_name}) - keep):
            # An older run's archives must not pass for this run's.
            uri = storage.join(dest, name)
            outbox.step("removing", uri)
            if storage.exists(uri):
                storage.remove(uri)
        ctx.workspace.write_json(ctx.workspace.run_path(ctx.run_id, "manifest.json"), manifest)
        storage.put_file(report_local, ctx.workspace.run_path(ctx.run_id, "report.html"))
        uploaded = len(sync_info["uploaded"]) if sync_info else 0
        if mirror and export.sync:
            outbox.step("mirroring to", mirror)
            manifest_local = os.path.join(tmp, "manifest.json")
            with open(manifest_local, "w", encoding="utf-8") as mf:
                mf.write(json.dumps(manifest, indent=1))
            extra = [("manifest.json", manifest_local), ("report.html", report_local)]
            more = sync.sync_files(extra, mirror, versioning=export.sync.versioning)
            uploaded += len(more["uploaded"])

    return RunSummary(
        run_id=ctx.run_id,
        total=len(records),
        succeeded=len(ok),
        failed=len(records) - len(ok),
        skipped=skipped,
        zip_uri=storage.join(dest, written[0].name) if written else None,
        archives=[storage.join(dest, a.name) for a in written],
        manifest_uri=manifest_uri,
        report_uri=report_uri,
        mirror_uri=mirror,
        uploaded=uploaded,
        links=summary_links,
        links_expire=links["expires"] if links else None,
        seconds=round(time.time() - started, 3),
        model_calls=sum(r.model_calls for r in records),
        performance=performance or {},
    )


def _make_links(
    written: list[Archive],
    members: list[Member],
    ok: list[ImageRecord],
    dest: str,
    mirror: str | None,
    expiry_s: int,
) -> dict[str, Any]:
    """Presigned URLs for the archives and report at ``dest`` and each mirrored output;
    each output's link is also put in its record's ``outputs`` entry (an image sequence's:
    the link to its frames.csv, with a ``link_note`` saying so)."""
    links: dict[str, Any] = {
        "expires": sync.expiry_time(expiry_s),
        "archives": {},
        "report": None,
        "manifest": None,
        "files": {},
    }
    for a in written:
        url = sync.share_link(storage.join(dest, a.name), expiry_s)
        if url:
            links["archives"][a.name] = url
    for key, base in (("report", mirror or dest), ("manifest", mirror or dest)):
        links[key] = sync.share_link(
            storage.join(base, f"{key}.{'html' if key == 'report' else 'json'}"), expiry_s
        )
    if mirror:
        by_name = {}
        for m in members:
            url = sync.share_link(storage.join(mirror, m.name), expiry_s)
            if url:
                links["files"][m.name] = url
                by_name[m.name] = url
        for r in ok:
            for out in r.outputs:
                if out["name"] in by_name:
                    out["link"] = by_name[out["name"]]
                elif out.get("kind") == "frames" and f"{out['name']}/frames.csv" in by_name:
                    out["link"] = by_name[f"{out['name']}/frames.csv"]
                    out["link_note"] = (
                        "an image sequence is a folder, which no single link can fetch: this "
                        "link is its frames.csv (every frame's file and time, in order); each "
                        f"file's own link is in links.files under {out['name']}/, and the "
                        "archive's link holds the whole sequence"
                    )
    if not any((links["archives"], links["files"], links["report"])):
        links["note"] = (
            "no share links: neither the destination nor the mirror can sign URLs "
            "(share links need S3 or another signing store)"
        )
    return links


_SNIFF_BY_EXTENSION = {
    "jpg": "jpeg", "jpeg": "jpeg", "jpe": "jpeg", "png": "png", "webp": "webp",
    "tif": "tiff", "tiff": "tiff", "bmp": "bmp", "gif": "gif",
}  # fmt: skip


def preview_names(
    names: list[str], recipe: Recipe, *, date: str | None = None
) -> list[dict[str, Any]]:
    """The output names an export of ``names`` would get, before any image is read.

    Args:
        names: the images' paths relative to the source, in source order (as
            :func:`retouch.lib.sources.discover` lists them).
        recipe: the recipe whose export profiles and name templates apply.
        date: the ``{date}`` value (default: today, UTC).

    Returns:
        One ``{"index", "image", "profile", "name"}`` per image and profile, in order. With
        ``format = "same"`` the source format is taken from the file extension; ``{score}``,
        ``{verdict}`` and ``{group}`` are not known before a run and show as ``na``. With
        ``alpha = "keep"`` or ``depth = "keep"``, an image with transparency or 16 bits
        (known once it is read) may get another extension than the one shown here.

    Raises:
        RecipeError: a bad name template or an unreadable tag file.
    """
    records = []
    for index, name in enumerate(names, start=1):
        ext = PurePosixPath(name).suffix.lower().lstrip(".")
        records.append(
            ImageRecord(
                index=index,
                source=name,
                name=name,
                uri=name,
                input={"format": _SNIFF_BY_EXTENSION.get(ext)},
            )
        )
    assign_outputs(records, recipe, date=date)
    return [
        {"index": r.index, "image": r.name, "profile": o["profile"], "name": o["name"]}
        for r in records
        for o in r.outputs
    ]


def clean_staging(ctx: RunContext) -> None:
    """Remove the run's export staging copies once they are in the ZIP (local workspaces)."""
    local = storage.local_path(ctx.workspace.run_path(ctx.run_id, "export"))
    if local and os.path.isdir(local):
        shutil.rmtree(local, ignore_errors=True)
