"""Export phase tasks: encode results, then write ZIP, manifest, report and artifacts."""

from __future__ import annotations

import os

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from retouch.lib import delivery, pipeline
from retouch.lib.records import ImageRecord, RunSummary
from retouch.lib.storage import redact

from .common import RunConfig, chunk_retry_delays


@task(name="export-chunk", retries=2, retry_delay_seconds=chunk_retry_delays())
def export_chunk(records: list[ImageRecord], config: RunConfig) -> list[ImageRecord]:
    """Encode each result in the export format into the run's staging area."""
    ctx = config.context()
    return [pipeline.export_one(r.model_copy(deep=True), ctx) for r in records]


@task(name="deliver", retries=2, retry_delay_seconds=chunk_retry_delays())
def deliver(
    records: list[ImageRecord],
    skipped: list[dict[str, str]],
    config: RunConfig,
    source: str,
    dest: str,
    started: float,
) -> RunSummary:
    """Write the ZIP, manifest.json and report.html to the destination; publish artifacts."""
    ctx = config.context()
    summary = delivery.finalize(records, skipped, ctx, source=source, dest=dest, started=started)
    try:
        publish_artifacts(summary, records, config)
    except Exception as exc:  # the delivery is done; a missing artifact must not undo it
        get_run_logger().warning("could not publish the run's artifacts: %s", exc)
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
    for key, uri, text in (
        ("retouch-zip", summary.zip_uri, "Download the results (ZIP)"),
        ("retouch-report", summary.report_uri, "Review report (HTML)"),
    ):
        if uri:
            shown = redact(uri)
            link = shown if "://" in shown else "file://" + os.path.abspath(shown)
            create_link_artifact(link, link_text=text, key=key)
