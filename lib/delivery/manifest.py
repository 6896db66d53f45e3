"""manifest.json: what a delivery holds, and what an earlier delivery at the destination held."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from retouch.lib import storage
from retouch.lib.delivery import naming
from retouch.lib.errors import StorageError
from retouch.lib.phases.context import RunContext
from retouch.lib.records import ImageRecord


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


def previous_archives(dest: str) -> set[str]:
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


def sidecar_name(archive_name: str) -> str:
    return archive_name[: -len(".zip")] + ".manifest.json"
