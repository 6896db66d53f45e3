"""Finishing a run: archives, manifest.json and the report at the destination; mirror and share links."""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import PurePosixPath
from typing import Any

from retouch.lib import storage
from retouch.lib.delivery import archive, naming, sync
from retouch.lib.errors import RetouchError, StorageError
from retouch.lib.phases.context import RunContext
from retouch.lib.phases.export import assign_outputs, staging_path
from retouch.lib.phases.review import THUMB_LABELS, thumb_path
from retouch.lib.quality.report import write_report
from retouch.lib.recipe import ExportSettings, Recipe
from retouch.lib.records import ImageRecord, RunSummary


def retouch_version() -> str:
    try:
        return version("retouch")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


@dataclass
class _Member:
    name: str  # path in the archive and the mirror
    local: str  # a local copy of the staged file
    sha256: str
    size: int
    record: ImageRecord
    profile: str


@dataclass
class _Archive:
    name: str
    members: list[_Member]
    group: str | None = None
    part: int = 1
    parts: int = 1
    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


_NO_CATEGORY = {"group": "ungrouped", "verdict": "unscored", "tag": "untagged", "folder": "top"}


# -- the destination: checked before a run, written all or nothing, failures said plainly ------


class DeliveryError(StorageError):
    """Delivering to the destination failed, or the destination cannot take a delivery.

    The message says what failed and where, what the destination holds now and what to do.
    ``retry`` is True when trying again soon may succeed (storage not answering, a ZIP that
    failed verification), False when it cannot (full disk, read-only, no permission, a path
    under a file).
    """

    def __init__(self, message: str, *, retry: bool = False):
        self.retry = retry
        super().__init__(message)


_NO_SPACE = "free space there or choose another --out, then re-run the same command"
_HINTS = {
    errno.ENOSPC: _NO_SPACE,
    errno.EDQUOT: _NO_SPACE,
    errno.EFBIG: _NO_SPACE,
    errno.EROFS: "it is on a read-only file system: choose another --out or make it writable",
    errno.EACCES: "no permission to write there: choose another --out or fix its access rights",
    errno.EPERM: "no permission to write there: choose another --out or fix its access rights",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another --out",
    errno.EISDIR: "a folder is in the way of a file retouch writes there: move it away",
}


def _os_error(exc: BaseException) -> OSError | None:
    """The first OSError with an errno in ``exc`` and its causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and (current.errno or 0) in _HINTS:
            return current
        current = current.__cause__ or current.__context__
    return None


def worth_retrying(exc: BaseException) -> bool:
    """Whether a delivery that failed with ``exc`` may succeed if tried again soon: not for a
    full disk, a read-only or forbidden destination, a path under a file (the same error
    again, after a wait)."""
    if isinstance(exc, DeliveryError):
        return exc.retry
    if _os_error(exc) is not None:
        return False
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, StorageError):
        return "failed verification" in str(exc) or (
            cause is not None and storage.is_transient(cause)
        )
    return not isinstance(exc, RetouchError)


def _what_failed(exc: BaseException, uri: str, final: str) -> str:
    """``exc`` as one sentence about ``final`` (never the temporary name written first)."""
    os_error = _os_error(exc)
    if os_error is not None:
        reason = os_error.strerror or str(os_error)
        return f"could not write {storage.redact(final)}: {reason}; {_HINTS[os_error.errno or 0]}"
    text = str(exc)
    if uri != final:
        text = text.replace(uri, final).replace(os.path.abspath(uri), final)
    return text.rstrip(". ")


def check_destination(dest: str) -> None:
    """Check that a delivery to ``dest`` can be written, before any image is processed.

    A local destination's folder is created (with its parents) and a small temporary file
    is written and removed there; an object store destination gets a temporary object,
    deleted at once. Nothing else is left behind.

    Raises:
        DeliveryError: what is wrong with ``dest`` and what to do (a path under a file, a
            read-only or full file system, no permission, storage not answering).
    """
    probe_name = f"{storage.TEMP_MARKER.lstrip('.')}check-{secrets.token_hex(4)}"
    local = storage.local_path(dest)
    shown = storage.redact(dest)
    if local is None:
        probe = storage.join(dest, "." + probe_name)
        try:
            storage.write_bytes(probe, b"")
            storage.remove(probe)
        except StorageError as exc:
            raise DeliveryError(
                f"{shown}: the destination cannot be written ({str(exc).rstrip('. ')}); "
                "nothing was processed",
                retry=worth_retrying(exc),
            ) from exc
        return
    path = os.path.abspath(local)
    existing = path
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == path else f"is under {existing}, which is a file"
        raise DeliveryError(f"{dest}: {where}, not a folder: choose another --out")
    probe = os.path.join(path, "." + probe_name)
    try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "xb") as fh:
            fh.write(b"retouch")
            fh.flush()
            os.fsync(fh.fileno())
        os.unlink(probe)
    except OSError as exc:
        with suppress(OSError):
            os.unlink(probe)
        hint = _HINTS.get(exc.errno or 0, "choose another --out")
        raise DeliveryError(
            f"{dest}: cannot write there ({exc.strerror or exc}); {hint}; nothing was processed"
        ) from None


class _Outbox:
    """Where :func:`finalize` writes the destination's files, and what it is doing there.

    At a local destination each file is written under a temporary name beside its final one
    and all are renamed into place once every one is written: a failed delivery leaves the
    destination as it was. An object store has no rename: files are written to their final
    names (archives, then sidecars, the report, and manifest.json last), and :meth:`state`
    says which ones a failure left there.

    With ``notify``, a step (one write, one check) still unfinished after ``stall_s``
    seconds is reported, and again each time as long again: a destination that stalls is
    reported while it stalls, not only once the retries are spent.
    """

    def __init__(self, dest: str, notify: Callable[[str], None] | None, stall_s: float):
        self.dest = dest
        self.local = storage.local_path(dest) is not None
        self.staged: list[tuple[str, str, str]] = []  # (name, written to, final URI)
        self.planned: list[str] = []
        self.written: list[str] = []  # names at their final place
        self.lock = threading.Lock()
        self.doing: tuple[str, str, str] = ("writing to", dest, dest)  # (what, URI, final)
        self.since = time.monotonic()
        self.reported = 0
        self.notify = notify
        self.stall_s = stall_s
        self.stopped = threading.Event()
        if notify is not None:
            threading.Thread(target=self._watch, name="retouch-delivery-watch", daemon=True).start()

    def step(self, what: str, uri: str, final: str | None = None) -> None:
        """Say what is being done now (for stall reports and failure messages)."""
        with self.lock:
            self.doing = (what, uri, final or uri)
            self.since = time.monotonic()
            self.reported = 0

    def target(self, name: str) -> str:
        """The URI to write ``name`` to (also the current step)."""
        final = storage.join(self.dest, name)
        self.planned.append(name)
        written_to = final
        if self.local:
            written_to = storage.temp_name(os.path.abspath(final))
            self.staged.append((name, written_to, final))
        self.step("writing", written_to, final)
        return written_to

    def wrote(self, name: str) -> None:
        if not self.local:
            self.written.append(name)

    def commit(self) -> None:
        """Move the staged files into place (a local destination)."""
        self.step("moving the new files into", self.dest)
        for name, temporary, final in self.staged:
            os.replace(temporary, final)
            self.written.append(name)
        if self.staged:
            storage.fsync_dir(os.path.dirname(self.staged[0][2]))
        self.staged = []

    def discard(self) -> None:
        for _name, temporary, _final in self.staged:
            with suppress(OSError):
                os.unlink(temporary)
        self.staged = []

    def state(self) -> str:
        """What the destination holds after a failure, as a sentence."""
        shown = storage.redact(self.dest)
        if not self.written:
            return f"Nothing of this run was delivered: {shown} is as it was."
        missing = [n for n in self.planned if n not in self.written]
        return (
            f"{shown} now holds this run's {', '.join(self.written)}"
            + (f" but not its {', '.join(missing)}" if missing else "")
            + " (a manifest.json there that is not this run's describes an earlier delivery)."
        )

    def _watch(self) -> None:
        while not self.stopped.wait(min(1.0, self.stall_s / 4)):
            message = None
            with self.lock:
                elapsed = time.monotonic() - self.since
                if elapsed >= self.stall_s * (self.reported + 1):
                    self.reported += 1
                    what, _uri, final = self.doing
                    message = (
                        f"still {what} {storage.redact(final)} after {elapsed:.0f} s: the "
                        "destination is slow or not answering; retrying (Ctrl-C stops; the "
                        "same command resumes)"
                    )
            if message and self.notify is not None:
                with suppress(Exception):
                    self.notify(message)

    def close(self) -> None:
        self.stopped.set()

    def failure(self, exc: BaseException) -> DeliveryError:
        """``exc`` as a :class:`DeliveryError`: what failed, where, what the destination
        holds now (the staged files are removed first), what to do."""
        _what, uri, final = self.doing
        self.discard()
        message = _what_failed(exc, uri, final)
        return DeliveryError(f"{message}. {self.state()}", retry=worth_retrying(exc))


def build_manifest(
    records: list[ImageRecord],
    skipped: list[dict[str, str]],
    ctx: RunContext,
    *,
    source: str,
    dest: str,
    zip_info: dict[str, Any] | None,
    archives: list[dict[str, Any]] | None = None,
    sync: dict[str, Any] | None = None,
    links: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's manifest.json: recipe, summary, archives, mirror, share links, per image."""
    ok = [r for r in records if r.ok]
    return {
        "retouch": retouch_version(),
        "run_id": ctx.run_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": storage.redact(source),
        "dest": storage.redact(dest),
        "recipe": storage.redact_tree(ctx.recipe.model_dump(mode="json")),
        "profiles": [p.name for p in ctx.recipe.export.effective_profiles()],
        "summary": {
            "total": len(records),
            "succeeded": len(ok),
            "failed": len(records) - len(ok),
            "skipped": len(skipped),
            "reused": sum(1 for r in ok if r.reused),
        },
        "zip": zip_info,
        "archives": archives or [],
        "sync": sync,
        "links": links,
        "images": [r.manifest_entry() for r in records],
        "skipped": skipped,
    }


def _members(ok: list[ImageRecord], ctx: RunContext, tmp: str) -> list[_Member]:
    members = []
    for r in ok:
        for out in r.outputs:
            members.append(
                _Member(
                    name=str(out["name"]),
                    local=_local_copy(staging_path(ctx, str(out["name"])), tmp),
                    sha256=str(out["sha256"]),
                    size=int(out["bytes"]),
                    record=r,
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


def _write_archives(members: list[_Member], ctx: RunContext, outbox: _Outbox) -> list[_Archive]:
    export = ctx.recipe.export
    plan = plan_archives([(m.name, m.size, m.record) for m in members], export)
    written: list[_Archive] = []
    try:
        for item in plan:
            entry = _Archive(
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


def _previous_archives(dest: str) -> set[str]:
    """Archive and sidecar names an earlier run's manifest at ``dest`` listed."""
    uri = storage.join(dest, "manifest.json")
    try:
        if not storage.exists(uri):
            return set()
        old = json.loads(storage.read_bytes(uri))
    except (StorageError, ValueError):
        return set()
    names: set[str] = set()
    for item in old.get("archives") or []:
        if isinstance(item, dict):
            for key in ("name", "sidecar"):
                value = item.get(key)
                if isinstance(value, str) and naming.is_safe_name(value) and "/" not in value:
                    names.add(value)
    return names


def _sidecar_name(archive_name: str) -> str:
    return archive_name[: -len(".zip")] + ".manifest.json"


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
    outbox = _Outbox(dest, notify, stall_s)
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
    outbox: _Outbox,
    source: str,
    started: float,
    performance: dict[str, Any] | None,
) -> RunSummary:
    dest = outbox.dest
    export = ctx.recipe.export
    ok = [r for r in records if r.ok and r.output_name and r.output_sha256 and r.outputs]
    outbox.step("reading", storage.join(dest, "manifest.json"))
    previous = _previous_archives(dest)
    with tempfile.TemporaryDirectory(prefix="retouch-zip-") as tmp:
        members = _members(ok, ctx, tmp)
        written = _write_archives(members, ctx, outbox) if members else []
        keep = {a.name for a in written}
        if len(written) > 1:
            keep |= {_sidecar_name(a.name) for a in written}

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
                item["sidecar"] = _sidecar_name(a.name)
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
                            "verdict": m.record.scores.get("verdict"),
                        }
                        for m in a.members
                    ],
                }
                ctx.workspace.write_json(outbox.target(_sidecar_name(a.name)), sidecar)
                outbox.wrote(_sidecar_name(a.name))

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
            for label in THUMB_LABELS:
                uri = thumb_path(ctx, r, label)
                if storage.exists(uri):
                    pair[label] = storage.read_bytes(uri)
            # The version this run replaced, beside the new one (old vs new in the report).
            replaced = (r.output or {}).get("previous") or {}
            old_thumb = replaced.get("thumb_after")
            if old_thumb and storage.exists(old_thumb):
                pair[f"version:{replaced.get('version')}"] = storage.read_bytes(old_thumb)
                if "after" in pair:
                    pair[f"version:{r.output.get('version')}"] = pair["after"]
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
    written: list[_Archive],
    members: list[_Member],
    ok: list[ImageRecord],
    dest: str,
    mirror: str | None,
    expiry_s: int,
) -> dict[str, Any]:
    """Presigned URLs for the archives and report at ``dest`` and each mirrored output;
    each output's link is also put in its record's ``outputs`` entry."""
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


def _local_copy(uri: str, tmp: str) -> str:
    """A local path for ``uri``: itself when local, else a download into ``tmp``."""
    local = storage.local_path(uri)
    if local is not None:
        return local
    target = os.path.join(tmp, f"{len(os.listdir(tmp)):06d}")
    with open(target, "wb") as fh:
        fh.write(storage.read_bytes(uri))
    return target


def clean_staging(ctx: RunContext) -> None:
    """Remove the run's export staging copies once they are in the ZIP (local workspaces)."""
    local = storage.local_path(ctx.workspace.run_path(ctx.run_id, "export"))
    if local and os.path.isdir(local):
        shutil.rmtree(local, ignore_errors=True)
