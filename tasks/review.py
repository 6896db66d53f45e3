"""Review phase task: scores, problems and thumbnails per image."""

from __future__ import annotations

from prefect import task

from retouch.lib import pipeline
from retouch.lib.records import ImageRecord

from .common import RunConfig, chunk_retry_delays


@task(name="review-chunk", retries=2, retry_delay_seconds=chunk_retry_delays())
def review_chunk(records: list[ImageRecord], config: RunConfig) -> list[ImageRecord]:
    """Score each result against its input and write the report's thumbnails."""
    ctx = config.context()
    return [pipeline.review_one(r.model_copy(deep=True), ctx) for r in records]
