"""The end of a run: its delivery (archives, manifest, report) timed into the performance
figures, and what the run shows of itself afterwards (summary, per-image table, download
and share links, previews, performance) as plain artifact descriptions that the deliver
task publishes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from retouch.lib import perf
from retouch.lib.delivery import delivery
from retouch.lib.phases.context import RunConfig
from retouch.lib.recipe import Recipe
from retouch.lib.records import ImageRecord, RunSummary
from retouch.lib.storage import redact

PREVIEW_LIMIT = 100
"""Result previews shown at most (a markdown table of images loads every one of them)."""

FAILED_LISTED = 50
"""Failed images named in the summary at most."""


def deliver(
    records: list[ImageRecord],
    skipped: list[dict[str, str]],
    config: RunConfig,
    started: float,
    performance: dict[str, Any] | None = None,
    notify: Callable[[str], None] | None = None,
) -> RunSummary:
    """Write the ZIP, manifest.json and report.html to the run's destination (see
    :func:`retouch.lib.delivery.delivery.finalize`); the time it took joins the
    performance figures' spans. ``notify`` hears of a write that stalls while it stalls."""
    ctx = config.context()
    delivering = time.time()
    summary = delivery.finalize(
        records,
        skipped,
        ctx,
        source=config.source,
        dest=config.dest,
        started=started,
        performance=performance,
        notify=notify,
        stall_s=ctx.settings.delivery_stall_s,
    )
    if summary.performance:
        summary.performance["spans"]["deliver"] = round(time.time() - delivering, 3)
    return summary


@dataclass(frozen=True)
class Markdown:
    key: str
    markdown: str
    description: str


@dataclass(frozen=True)
class Table:
    key: str
    rows: list[dict[str, Any]]
    description: str


@dataclass(frozen=True)
class Link:
    key: str
    link: str
    text: str
    description: str | None = None


Artifact = Markdown | Table | Link


def artifacts(summary: RunSummary, records: list[ImageRecord], recipe: Recipe) -> list[Artifact]:
    """What a delivered run publishes, in order: a markdown summary, a per-image table,
    links to the downloads, share links, result previews and the performance figures."""
    return [
        _summary(summary, records, recipe),
        _table(records),
        *_downloads(summary),
        *_share_links(summary),
        *_previews(records),
        *(
            [
                Markdown(
                    "retouch-performance",
                    perf.markdown(summary.performance),
                    "Throughput, time per phase, model loading, memory",
                )
            ]
            if summary.performance
            else []
        ),
    ]


def _summary(summary: RunSummary, records: list[ImageRecord], recipe: Recipe) -> Markdown:
    failed = [r for r in records if not r.ok]
    lines = [
        f"# retouch run `{summary.run_id}`",
        f"Recipe **{recipe.name}**: {' → '.join(s.op for s in recipe.steps) or 'no steps'}",
        "",
        "| images | succeeded | failed | skipped files | reused | seconds |",
        "|---|---|---|---|---|---|",
        f"| {summary.total} | {summary.succeeded} | {summary.failed} | {len(summary.skipped)} | "
        f"{sum(1 for r in records if r.reused)} | {summary.seconds:.1f} |",
    ]
    if failed:
        lines += ["", "## Failed images", ""]
        lines += [f"- `{r.name}`: {r.reason}" for r in failed[:FAILED_LISTED]]
    return Markdown("retouch-summary", "\n".join(lines), "retouch run summary")


def _table(records: list[ImageRecord]) -> Table:
    rows = [
        {
            "index": r.index,
            "image": r.name,
            "status": r.status,
            "score": r.scores.score,
            "verdict": r.scores.verdict,
            "output": r.output_name,
            "reason": r.reason or "; ".join(r.problems),
        }
        for r in records
    ]
    return Table("retouch-images", rows, "Per-image status and scores")


def _downloads(summary: RunSummary) -> list[Link]:
    """Links to the archives (one, or each part) and to the report."""
    archives = summary.archives or ([summary.zip_uri] if summary.zip_uri else [])
    targets: list[tuple[str, str | None, str]] = [
        (
            "retouch-zip" if i == 0 else f"retouch-zip-{i + 1}",
            uri,
            "Download the results (ZIP)"
            if len(archives) == 1
            else f"Download part {i + 1} of {len(archives)}: {uri.rsplit('/', 1)[-1]}",
        )
        for i, uri in enumerate(archives)
    ]
    targets.append(("retouch-report", summary.report_uri, "Review report (HTML)"))
    links = []
    for key, uri, text in targets:
        if uri:
            shown = redact(uri)
            link = shown if "://" in shown else "file://" + os.path.abspath(shown)
            links.append(Link(key, link, text))
    return links


def _share_links(summary: RunSummary) -> list[Artifact]:
    """Share links (presigned URLs) one by one, and one markdown list of them all."""
    if not summary.links:
        return []
    shared = sorted(summary.links.items())
    found: list[Artifact] = [
        Link(
            f"retouch-share-{i}",
            url,
            f"Share link: {label} (valid until {summary.links_expire} UTC)",
            f"Presigned URL for {label}",
        )
        for i, (label, url) in enumerate(shared, start=1)
    ]
    lines = [f"# Share links (valid until {summary.links_expire} UTC)", ""]
    lines += [f"- [{label}]({url})" for label, url in shared]
    found.append(Markdown("retouch-links", "\n".join(lines), "Share links"))
    return found


def _previews(records: list[ImageRecord]) -> list[Markdown]:
    """Result previews with scores, for images whose storage gave a browser-fetchable URL
    (share links); none where there is none (local files can't be shown)."""
    rows = []
    for r in records:
        # An image sequence's link is its frames.csv, no picture to show.
        link = next(
            (o["link"] for o in r.outputs if o.get("link") and o.get("kind") != "frames"), None
        )
        if r.ok and link:
            score = r.scores.score
            rows.append(
                f"| {r.name} | {'' if score is None else f'{score:.0f}'} | "
                f"{r.scores.verdict or ''} | ![{r.name}]({link}) |"
            )
    if not rows:
        return []
    lines = ["# Results", "", "| image | score | verdict | preview |", "|---|---|---|---|"]
    return [
        Markdown("retouch-previews", "\n".join(lines + rows[:PREVIEW_LIMIT]), "Result previews")
    ]
