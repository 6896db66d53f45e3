"""Finishing a run: the ZIP, manifest.json and the report, written to the destination."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import archive, storage
from .errors import StorageError
from .pipeline import RunContext, staging_path, thumb_path
from .records import ImageRecord, RunSummary
from .report import render_report


def retouch_version() -> str:
    try:
        return version("retouch")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def build_manifest(
    records: list[ImageRecord],
    skipped: list[dict[str, str]],
    ctx: RunContext,
    *,
    source: str,
    dest: str,
    zip_info: dict[str, Any] | None,
) -> dict[str, Any]:
    ok = [r for r in records if r.ok]
    return {
        "retouch": retouch_version(),
        "run_id": ctx.run_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": storage.redact(source),
        "dest": storage.redact(dest),
        "recipe": _redacted(ctx.recipe.model_dump(mode="json")),
        "summary": {
            "total": len(records),
            "succeeded": len(ok),
            "failed": len(records) - len(ok),
            "skipped": len(skipped),
            "reused": sum(1 for r in ok if r.reused),
        },
        "zip": zip_info,
        "images": [r.manifest_entry() for r in records],
        "skipped": skipped,
    }


def finalize(
    records: list[ImageRecord],
    skipped: list[dict[str, str]],
    ctx: RunContext,
    *,
    source: str,
    dest: str,
    started: float,
) -> RunSummary:
    """Write ZIP, manifest and report to ``dest`` (atomically each) and return the summary."""
    ok = [r for r in records if r.ok and r.output_name and r.output_sha256]
    zip_uri = storage.join(dest, ctx.recipe.export.zip_name)
    zip_info: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="retouch-zip-") as tmp:
        names = {r.index: str(r.output_name) for r in ok}
        members = [
            (names[r.index], _local_copy(staging_path(ctx, names[r.index]), tmp)) for r in ok
        ]
        if members:
            zip_info = archive.write_zip(members, zip_uri)
            problems = archive.verify_zip(
                zip_uri, {names[r.index]: str(r.output_sha256) for r in ok}
            )
            if problems:
                storage.remove(zip_uri)  # never leave a ZIP we know to be wrong
                raise StorageError(
                    f"{storage.redact(zip_uri)}: the written ZIP failed verification and was "
                    f"removed: {'; '.join(problems)}"
                )
            zip_info["name"] = ctx.recipe.export.zip_name
        elif storage.exists(zip_uri):
            # Nothing to deliver this time: an older run's ZIP must not pass for this run's.
            storage.remove(zip_uri)
    manifest = build_manifest(records, skipped, ctx, source=source, dest=dest, zip_info=zip_info)
    manifest_uri = storage.join(dest, "manifest.json")
    ctx.workspace.write_json(manifest_uri, manifest)
    ctx.workspace.write_json(ctx.workspace.run_path(ctx.run_id, "manifest.json"), manifest)

    thumbs = {}
    for r in ok:
        pair = {}
        for label in ("before", "after"):
            uri = thumb_path(ctx, r, label)
            if storage.exists(uri):
                pair[label] = storage.read_bytes(uri)
        thumbs[r.index] = pair
    html = render_report(manifest, thumbs)
    report_uri = storage.join(dest, "report.html")
    storage.write_bytes(report_uri, html.encode("utf-8"))
    storage.write_bytes(ctx.workspace.run_path(ctx.run_id, "report.html"), html.encode("utf-8"))

    return RunSummary(
        run_id=ctx.run_id,
        total=len(records),
        succeeded=len(ok),
        failed=len(records) - len(ok),
        skipped=skipped,
        zip_uri=zip_uri if zip_info else None,
        manifest_uri=manifest_uri,
        report_uri=report_uri,
        seconds=round(time.time() - started, 3),
        model_calls=sum(r.model_calls for r in records),
    )


def _redacted(value: Any) -> Any:
    """URLs inside a recipe (mask folders...) with any credentials removed."""
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return storage.redact(value)
    return value


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
