"""Review phase task: scores, problems and thumbnails per image."""

from __future__ import annotations

from prefect import task

from retouch.lib.phases import workers
from retouch.lib.phases.context import RunConfig
from retouch.lib.records import ImageRecord
from retouch.tasks.common import chunk_retry_delays


@task(name="review-chunk", retries=2, retry_delay_seconds=chunk_retry_delays())
def review_chunk(records: list[ImageRecord], config: RunConfig) -> list[ImageRecord]:
    """Score each result against its input and write the report's thumbnails."""
    return workers.map_images(workers.review_batch, records, config)
