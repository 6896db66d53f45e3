"""``retouch cache``: the result cache's size, and pruning it."""

from __future__ import annotations

from typing import Annotated

import typer

from retouch.cli.common import WorkspaceOpt, fail, open_workspace, out, reported, where

cache_app = typer.Typer(help="The result cache: its size, and pruning it.", no_args_is_help=True)


def _when(epoch: float | None) -> str:
    from datetime import UTC, datetime

    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@cache_app.command("info")
@reported()
def cache_info(workspace: WorkspaceOpt = None) -> None:
    """Count, size and oldest/newest use of the cached results (pinned = a current version)."""
    from retouch.lib import cache

    ws = open_workspace(workspace)
    found = cache.info(ws)
    out.print(f"workspace:  {where(ws.root)}", highlight=False, soft_wrap=True)
    out.print(f"results:    {found.count} ({found.pinned} pinned)", highlight=False)
    out.print(f"bytes:      {found.bytes} ({found.bytes / 1e6:.1f} MB)", highlight=False)
    out.print(f"oldest use: {_when(found.oldest_use)}", highlight=False)
    out.print(f"newest use: {_when(found.newest_use)}", highlight=False)


@cache_app.command("prune")
@reported()
def cache_prune(
    max_bytes: Annotated[
        int | None, typer.Option(min=0, help="Evict least recently used results beyond this size")
    ] = None,
    older_than: Annotated[
        float | None, typer.Option(min=0, help="Evict results unused for more than DAYS days")
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Evict cached results (never an image's current version). Without options: down to the
    cache_max_bytes setting.

    Examples: retouch cache prune --max-bytes 2000000000; retouch cache prune --older-than 30
    """
    from retouch.lib import cache
    from retouch.lib.settings import get_settings

    if max_bytes is None and older_than is None:
        max_bytes = get_settings().cache_max_bytes
        if max_bytes is None:
            raise fail("give --max-bytes N or --older-than DAYS (no cache size is set)")
    report = cache.prune(
        open_workspace(workspace),
        max_bytes=max_bytes,
        older_than_s=older_than * 86400 if older_than is not None else None,
    )
    out.print(
        f"removed {report.removed} results ({report.freed} bytes); kept {report.kept} "
        f"({report.kept_bytes} bytes, {report.pinned} pinned)",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``cache info`` and ``prune`` to the ``retouch`` command line."""
    app.add_typer(cache_app, name="cache")
