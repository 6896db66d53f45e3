"""Export phase tasks: encode results, then write ZIP, manifest, report and artifacts."""

from __future__ import annotations

import os
import time
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from retouch.lib import perf
from retouch.lib.delivery import delivery
from retouch.lib.phases import workers
from retouch.lib.records import ImageRecord, RunSummary
from retouch.lib.settings import get_settings
from retouch.lib.storage import redact
from retouch.tasks.common import RunConfig, chunk_retry_delays


@task(name="export-chunk", retries=2, retry_delay_seconds=chunk_retry_delays())
def export_chunk(records: list[ImageRecord], config: RunConfig) -> list[ImageRecord]:
    """Encode each result in the export format into the run's staging area."""
    return workers.map_images(workers.export_batch, records, config)


def _delivery_worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a delivery only when it may succeed soon (storage not answering), not after a
    full disk, a read-only or forbidden destination or a path under a file."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 (no result to look at: retry as before)
        return True
    return not isinstance(exc, BaseException) or delivery.worth_retrying(exc)


@task(
    name="deliver",
    retries=2,
    retry_delay_seconds=chunk_retry_delays(),
    retry_condition_fn=_delivery_worth_retrying,
)
def deliver(
    records: list[ImageRecord],
    skipped: list[dict[str, str]],
    config: RunConfig,
    source: str,
    dest: str,
    started: float,
    performance: dict[str, Any] | None = None,
) -> RunSummary:
    """Write the ZIP, manifest.json and report.html to the destination; publish artifacts.

    A write to the destination that stalls is logged as a warning while it stalls."""
    ctx = config.context()
    delivering = time.time()
    logger = get_run_logger()
    summary = delivery.finalize(
        records,
        skipped,
        ctx,
        source=source,
        dest=dest,
        started=started,
        performance=performance,
        notify=logger.warning,
        stall_s=get_settings().delivery_stall_s,
    )
    if summary.performance:
        summary.performance["spans"]["deliver"] = round(time.time() - delivering, 3)
    try:
        publish_artifacts(summary, records, config)
    except Exception as exc:  # the delivery is done; a missing artifact must not undo it
        logger.warning("could not publish the run's artifacts: %s", exc)
    return summary


def publish_artifacts(summary: RunSummary, records: list[ImageRecord], config: RunConfig) -> None:
    """A markdown summary, a per-image table and links to the downloads."""
    failed = [r for r in records if not r.ok]
    lines = [
        f"# retouch run `{summary.run_id}`",
        f"Recipe **{config.recipe.name}**: {' → '.join(s.op for s in config.recipe.steps) or 'no steps'}",
        "",
        "| images | succeeded | failed | skipped files | reused | seconds |",
        "|---|---|---|---|---|---|",
        f"| {summary.total} | {summary.succeeded} | {summary.failed} | {len(summary.skipped)} | "
        f"{sum(1 for r in records if r.reused)} | {summary.seconds:.1f} |",
    ]
    if failed:
        lines += ["", "## Failed images", ""] + [f"- `{r.name}`: {r.reason}" for r in failed[:50]]
    create_markdown_artifact(
        "\n".join(lines), key="retouch-summary", description="retouch run summary"
    )
    table = [
        {
            "index": r.index,
            "image": r.name,
            "status": r.status,
            "score": r.scores.get("score"),
            "verdict": r.scores.get("verdict"),
            "output": r.output_name,
            "reason": r.reason or "; ".join(r.problems),
        }
        for r in records
    ]
    create_table_artifact(table, key="retouch-images", description="Per-image status and scores")
    archives = summary.archives or ([summary.zip_uri] if summary.zip_uri else [])
    targets = [
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
    for key, uri, text in targets:
        if uri:
            shown = redact(uri)
            link = shown if "://" in shown else "file://" + os.path.abspath(shown)
            create_link_artifact(link, link_text=text, key=key)
    publish_share_links(summary)
    publish_previews(records)
    if summary.performance:
        create_markdown_artifact(
            perf.markdown(summary.performance),
            key="retouch-performance",
            description="Throughput, time per phase, model loading, memory",
        )


def publish_previews(records: list[ImageRecord], limit: int = 100) -> None:
    """Result previews with scores, for images whose storage gave a browser-fetchable URL
    (share links); nothing is published where there is none (local files can't be shown)."""
    rows = []
    for r in records:
        link = next((o["link"] for o in r.outputs if o.get("link")), None)
        if r.ok and link:
            score = r.scores.get("score")
            rows.append(
                f"| {r.name} | {'' if score is None else f'{score:.0f}'} | "
                f"{r.scores.get('verdict') or ''} | ![{r.name}]({link}) |"
            )
    if rows:
        lines = ["# Results", "", "| image | score | verdict | preview |", "|---|---|---|---|"]
        create_markdown_artifact(
            "\n".join(lines + rows[:limit]), key="retouch-previews", description="Result previews"
        )


def publish_share_links(summary: RunSummary) -> None:
    """Share links (presigned URLs) as link artifacts, and one markdown list of them all."""
    if not summary.links:
        return
    for i, (label, url) in enumerate(sorted(summary.links.items()), start=1):
        create_link_artifact(
            url,
            link_text=f"Share link: {label} (valid until {summary.links_expire} UTC)",
            key=f"retouch-share-{i}",
            description=f"Presigned URL for {label}",
        )
    lines = [f"# Share links (valid until {summary.links_expire} UTC)", ""]
    lines += [f"- [{label}]({url})" for label, url in sorted(summary.links.items())]
    create_markdown_artifact("\n".join(lines), key="retouch-links", description="Share links")
