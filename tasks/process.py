"""Process phase tasks: run the recipe on a chunk (models held once per worker process),
record the results as versions, bound the result cache."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from prefect import task
from prefect.concurrency.sync import concurrency

from retouch.lib.phases import workers
from retouch.lib.phases.context import RunConfig
from retouch.lib.phases.keys import chunk_key
from retouch.lib.phases.process import bound_results
from retouch.lib.records import ImageRecord
from retouch.lib.settings import get_settings
from retouch.tasks.common import chunk_retry_delays


def process_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """The chunk's content key (:func:`retouch.lib.phases.keys.chunk_key`), never the paths
    Prefect's default INPUTS policy would hash; None (not cached) unless every result of the
    chunk is in the workspace."""
    return chunk_key(parameters["records"], parameters["config"])


@task(
    name="process-chunk",
    retries=2,
    retry_delay_seconds=chunk_retry_delays(),
    cache_key_fn=process_cache_key,
    persist_result=True,
)
def process_chunk(records: list[ImageRecord], config: RunConfig) -> list[ImageRecord]:
    """Apply the recipe to every image of the chunk (results reused by content key)."""
    needs_gpu = config.device.startswith("cuda") and config.recipe.uses_models()
    # The GPU is a named, global resource: runs on several workers share it precisely.
    guard = concurrency(get_settings().gpu_concurrency, occupy=1) if needs_gpu else nullcontext()
    with guard:
        return workers.process_records(records, config)


@task(name="record-versions", retries=2, retry_delay_seconds=chunk_retry_delays())
def record_versions_chunk(
    records: list[ImageRecord],
    config: RunConfig,
    image_ids: dict[str, str] | None = None,
    note: str = "",
) -> list[ImageRecord]:
    """Record each processed image's result as a version (``image_ids``: slot ids by name)."""
    return workers.map_images(workers.record_versions(image_ids, note), records, config)


@task(name="bound-cache")
def bound_cache(config: RunConfig, keep: list[str]) -> int:
    """Evict least-recently-used results beyond the cache size setting; returns bytes freed."""
    return bound_results(config, keep)
