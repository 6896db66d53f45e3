"""The result cache: size, age and least-recently-used eviction of stored results.

Every result in the workspace (a recipe's final result and the intermediate after each of
its steps, see ``phases.keys.step_keys``) is a cache entry: ``results/<k[:2]>/<key>.png`` (a
video's encoded file for a video result) plus
its ``.json`` sidecar, which records ``created`` and ``last_used`` (epoch seconds, refreshed
when a run reuses the entry). Eviction removes the least recently used entries first and
never removes a *pinned* one: the result of some image's current version (see
``lib/versions/``) or one the caller names (the results of a run in progress).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from retouch.lib.errors import RetouchError
from retouch.lib.versions import VersionStore
from retouch.lib.workspace import RESULT_MEDIA, Workspace


@dataclass
class Entry:
    key: str
    bytes: int
    last_used: float
    pinned: bool = False


@dataclass
class CacheInfo:
    count: int
    bytes: int
    pinned: int
    oldest_use: float | None
    newest_use: float | None


@dataclass
class PruneReport:
    removed: int = 0
    freed: int = 0
    kept: int = 0
    kept_bytes: int = 0
    pinned: int = 0
    removed_keys: list[str] = field(default_factory=list)


def entries(ws: Workspace, keep: Iterable[str] = ()) -> list[Entry]:
    """Every stored result with its size (pixels + sidecar) and last use, oldest use first.

    A pixel file without a sidecar (an interrupted write, or a half-evicted entry) is an
    entry too, with a last use of 0, so it is the first to go.
    """
    files = ws.list_tree("results")
    pinned = set(VersionStore(ws).current_keys()) | set(keep)
    sizes: dict[str, int] = {}
    for rel, size in files.items():
        name = rel.rsplit("/", 1)[-1]
        key, _, ext = name.rpartition(".")
        if (ext in ("png", "json") or ext in RESULT_MEDIA) and key:
            sizes[key] = sizes.get(key, 0) + size
    out = []
    for key, size in sizes.items():
        last = 0.0
        if f"{key[:2]}/{key}.json" in files:
            try:
                meta = ws.result_meta(key)
                last = float(meta.get("last_used") or meta.get("created") or 0.0)
            except (RetouchError, ValueError):
                last = 0.0
        out.append(Entry(key=key, bytes=size, last_used=last, pinned=key in pinned))
    out.sort(key=lambda e: (e.last_used, e.key))
    return out


def info(ws: Workspace) -> CacheInfo:
    """Count, total bytes, pinned count and the oldest/newest last-use time of the cache."""
    found = entries(ws)
    uses = [e.last_used for e in found if e.last_used]
    return CacheInfo(
        count=len(found),
        bytes=sum(e.bytes for e in found),
        pinned=sum(1 for e in found if e.pinned),
        oldest_use=min(uses) if uses else None,
        newest_use=max(uses) if uses else None,
    )


def prune(
    ws: Workspace,
    *,
    max_bytes: int | None = None,
    older_than_s: float | None = None,
    keep: Iterable[str] = (),
    now: float | None = None,
) -> PruneReport:
    """Evict unpinned entries unused for more than ``older_than_s`` seconds, then the least
    recently used ones until the cache holds at most ``max_bytes`` (pinned entries count
    toward the size but are never removed, so the bound can stay exceeded by them).

    Args:
        keep: result keys to treat as pinned besides the current versions.
        now: the time to measure ages from (default: now).
    """
    now = time.time() if now is None else now
    found = entries(ws, keep)
    report = PruneReport(pinned=sum(1 for e in found if e.pinned))
    total = sum(e.bytes for e in found)
    remaining = []
    for entry in found:
        too_old = older_than_s is not None and now - entry.last_used > older_than_s
        too_big = max_bytes is not None and total > max_bytes
        if not entry.pinned and (too_old or too_big):
            ws.remove_result(entry.key)
            total -= entry.bytes
            report.removed += 1
            report.freed += entry.bytes
            report.removed_keys.append(entry.key)
        else:
            remaining.append(entry)
    report.kept = len(remaining)
    report.kept_bytes = sum(e.bytes for e in remaining)
    return report


def enforce_limit(ws: Workspace, max_bytes: int | None, keep: Iterable[str] = ()) -> PruneReport:
    """Apply the cache size bound (``settings.cache_max_bytes``; None = unbounded)."""
    if max_bytes is None:
        return PruneReport()
    return prune(ws, max_bytes=max_bytes, keep=keep)
