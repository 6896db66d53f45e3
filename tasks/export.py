"""Export phase tasks: encode results, then write ZIP, manifest, report and artifacts."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from retouch.lib.delivery.delivery import worth_retrying
from retouch.lib.phases import deliver as delivering
from retouch.lib.phases import workers
from retouch.lib.phases.context import RunConfig
from retouch.lib.records import ImageRecord, RunSummary
from retouch.tasks.common import chunk_retry_delays


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
    return not isinstance(exc, BaseException) or worth_retrying(exc)


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
    started: float,
    performance: dict[str, Any] | None = None,
) -> RunSummary:
    """Write the ZIP, manifest.json and report.html to the destination; publish artifacts.

    A write to the destination that stalls is logged as a warning while it stalls."""
    logger = get_run_logger()
    summary = delivering.deliver(
        records, skipped, config, started, performance, notify=logger.warning
    )
    try:
        publish(delivering.artifacts(summary, records, config.recipe))
    except Exception as exc:  # the delivery is done; a missing artifact must not undo it
        logger.warning("could not publish the run's artifacts: %s", exc)
    return summary


def publish(artifacts: list[delivering.Artifact]) -> None:
    """Create each artifact in this flow run."""
    for artifact in artifacts:
        if isinstance(artifact, delivering.Markdown):
            create_markdown_artifact(
                artifact.markdown, key=artifact.key, description=artifact.description
            )
        elif isinstance(artifact, delivering.Table):
            create_table_artifact(artifact.rows, key=artifact.key, description=artifact.description)
        else:
            create_link_artifact(
                artifact.link,
                link_text=artifact.text,
                key=artifact.key,
                description=artifact.description,
            )
