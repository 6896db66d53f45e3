"""What a run shows while and after it runs: progress bars, the approval prompt, the events
file a front end follows, and the summary tables."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from retouch.cli.common import console, fail, where

if TYPE_CHECKING:
    from retouch.lib import progress as ev
    from retouch.lib.records import RunSummary


class _Rate(ProgressColumn):
    """Images per second over the phase so far."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:5.1f} img/s" if speed else "   -- img/s", style="cyan")


class _Bars:
    """Progress bars fed by lib.progress events (one bar per phase)."""

    PHASES = ("prepare", "process", "review", "export")

    def __init__(self, progress: Progress):
        self.progress = progress
        self.ids = {
            p: progress.add_task(p, total=None, current="", start=False) for p in self.PHASES
        }
        self.lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        from retouch.lib import progress as ev

        with self.lock:
            if isinstance(event, ev.RunStarted):
                for task_id in self.ids.values():
                    self.progress.update(task_id, total=event.total)
                    self.progress.start_task(task_id)
            elif isinstance(event, ev.ImagePhaseDone) and event.phase in self.ids:
                name = escape(event.name)
                mark = "" if event.ok else " [red](failed)[/]"
                self.progress.update(self.ids[event.phase], advance=1, current=f"{name}{mark}")
            elif isinstance(event, ev.FramesDone):
                self.progress.update(self.ids["process"], current=frames_line(event))
            elif isinstance(event, ev.FlowRunLinked) and event.url:
                self.progress.console.print(
                    f"Prefect UI: {escape(event.url)}", highlight=False, soft_wrap=True
                )
            elif isinstance(event, ev.ApprovalWaiting):
                for line in approval_lines(event):
                    self.progress.console.print(line, highlight=False, soft_wrap=True)


def frames_line(event: ev.FramesDone) -> str:
    """A video's progress on the process bar: frames, rate, time left, segment."""
    parts = [f"{escape(event.name)} frame {event.done}/{event.total or '?'}"]
    if event.reused:
        parts.append("stored")
    elif event.fps:
        parts.append(f"{event.fps:.1f} fps")
        if event.eta_s is not None:
            parts.append(f"ETA {round(event.eta_s)} s")
    if event.segments and event.segments > 1:
        parts.append(f"segment {event.segment}/{event.segments}")
    return " · ".join(parts)


@contextmanager
def progress_bars(hidden: bool) -> Iterator[None]:
    """One bar per phase on the terminal while the block runs (none when ``hidden``)."""
    from retouch.lib import progress

    columns = (
        TextColumn("{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}", style="dim"),
    )
    with Progress(*columns, console=console, transient=False, disable=hidden) as bars:
        unsubscribe = progress.subscribe(_Bars(bars))
        try:
            yield
        finally:
            unsubscribe()


def approval_lines(event: ev.ApprovalWaiting) -> list[str]:
    """What a paused run tells the person at the terminal: that it waits, for how long, and
    the exact commands (or the UI page) that resume it."""
    from retouch.lib.settings import get_settings

    run_id = event.run_id
    ws = event.workspace
    at = "" if not ws or ws == get_settings().resolved_workspace() else f" --workspace {ws}"
    timeout = event.timeout_s
    wait = f" (for up to {int(timeout)} s)" if timeout else ""
    lines = [
        f"[bold yellow]paused:[/] run {escape(run_id)} is waiting for approval{wait}",
        f"  approve:  retouch approve {escape(run_id)}{escape(at)}",
        f"  redo:     retouch approve {escape(run_id)}{escape(at)} --regenerate NAME "
        "--set STEP.PARAM=VALUE",
        f"  reject:   retouch approve {escape(run_id)}{escape(at)} --reject",
    ]
    if event.url:
        lines.append(f"  or in the Prefect UI: {escape(event.url)}")
    return lines


class _EventLog:
    """Appends every lib.progress event to a file as one JSON line (for a front end to follow).

    Events come from the flow's worker threads: a lock keeps lines whole, and each line is
    flushed so a reader sees it at once.
    """

    def __init__(self, path: str):
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115  (closed by close())
        self.lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        from retouch.lib import progress as ev

        line = ev.to_json(event)
        with self.lock:
            self.file.write(line + "\n")
            self.file.flush()

    def close(self) -> None:
        with self.lock:
            self.file.close()


def follow_events(path: str | None) -> Callable[[], None]:
    """Subscribe an :class:`_EventLog` on ``path`` (if given); returns the function that stops it."""
    from retouch.lib import progress

    if not path:
        return lambda: None
    try:
        log = _EventLog(path)
    except OSError as exc:
        raise fail(f"{path}: cannot write the events file ({exc.strerror})") from None
    unsubscribe = progress.subscribe(log)

    def stop() -> None:
        unsubscribe()
        log.close()

    return stop


def print_summary(summary: RunSummary) -> None:
    """The run's counts, its failed images, the review's notes and where the results are."""
    from retouch.lib import storage

    manifest = (
        json.loads(storage.read_bytes(summary.manifest_uri))
        if summary.manifest_uri
        else {"images": []}
    )
    failed = [img for img in manifest["images"] if img["status"] == "failed"]
    table = Table(title=f"run {summary.run_id}", show_header=True)
    for col in ("images", "succeeded", "failed", "skipped files", "reused", "seconds"):
        table.add_column(col, justify="right")
    table.add_row(
        str(summary.total),
        str(summary.succeeded),
        str(summary.failed),
        str(len(summary.skipped)),
        str(manifest.get("summary", {}).get("reused", 0)),
        f"{summary.seconds:.1f}",
    )
    console.print(table)
    if failed:
        bad = Table(title="failed images", show_header=True)
        bad.add_column("image")
        bad.add_column("phase")
        bad.add_column("reason")
        for img in failed:
            bad.add_row(
                escape(img["name"]), img.get("failed_phase") or "", escape(img.get("reason") or "")
            )
        console.print(bad)
    _print_notes(manifest["images"])
    console.print(f"ZIP:      {where(summary.zip_uri)}", highlight=False, soft_wrap=True)
    console.print(f"manifest: {where(summary.manifest_uri)}", highlight=False, soft_wrap=True)
    console.print(f"report:   {where(summary.report_uri)}", highlight=False, soft_wrap=True)


def _print_notes(images: list[dict[str, Any]], limit: int = 20) -> None:
    """The verdict counts, then the delivered images with a problem: their two scores, the
    verdict and what to do (the same numbers as the report's)."""
    delivered = [img for img in images if img["status"] != "failed" and img.get("scores")]
    if not delivered:
        return
    counts = {v: 0 for v in ("improved", "unchanged", "restyled", "worse")}
    for img in delivered:
        verdict = img["scores"].get("verdict")
        if verdict in counts:
            counts[verdict] += 1
    if not counts["restyled"]:
        del counts["restyled"]  # said only by recipes that re-draw the picture
    console.print(
        "review: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + " (score input → result)",
        highlight=False,
    )
    flagged = [img for img in delivered if img.get("problems")]
    if not flagged:
        return
    table = Table(title="images to look at", show_header=True)
    table.add_column("image", overflow="fold")
    table.add_column("score", no_wrap=True)
    table.add_column("verdict")
    table.add_column("problems", overflow="fold")
    for img in flagged[:limit]:
        scores = img["scores"]
        before, after = scores.get("score_before"), scores.get("score")
        shown = f"{before:.1f} → {after:.1f}" if before is not None and after is not None else ""
        table.add_row(
            escape(img["name"]),
            shown,
            str(scores.get("verdict") or ""),
            escape("; ".join(img["problems"])),
        )
    console.print(table)
    if len(flagged) > limit:
        console.print(f"… and {len(flagged) - limit} more: see the report", highlight=False)
