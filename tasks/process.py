"""Process phase tasks: run the recipe on a chunk (models held once per worker process), a
video's segments as task runs of their own, record the results as versions, bound the
result cache."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from prefect import task
from prefect.concurrency.sync import concurrency
from prefect.futures import PrefectFuture
from prefect.utilities.annotations import allow_failure

from retouch.lib.phases import workers
from retouch.lib.phases.context import RunConfig, is_video
from retouch.lib.phases.keys import chunk_key
from retouch.lib.phases.process import bound_results
from retouch.lib.records import ImageRecord
from retouch.lib.settings import get_settings
from retouch.lib.video import phases as video
from retouch.tasks.common import chunk_retry_delays


def process_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """The chunk's content key (:func:`retouch.lib.phases.keys.chunk_key`), never the paths
    Prefect's default INPUTS policy would hash; None (not cached) unless every result of the
    chunk is in the workspace."""
    return chunk_key(parameters["records"], parameters["config"])


def _device_guard(config: RunConfig) -> AbstractContextManager[Any]:
    """The GPU is a named, global resource: runs on several workers share it precisely."""
    if config.device.startswith("cuda") and config.recipe.uses_models():
        return concurrency(get_settings().gpu_concurrency, occupy=1)
    return nullcontext()


def segment_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """The segment's content key while it is stored in the workspace (None otherwise:
    joined segments are removed, and a refreshing run makes them again)."""
    config: RunConfig = parameters["config"]
    if config.refresh:
        return None
    ctx = config.context()
    try:
        key = video.video_key(
            parameters["record"], ctx, config.weights, config.device,
            segment=parameters["index"],
        )  # fmt: skip
    except Exception:  # let the task run and say what is wrong
        return None
    return "retouch-segment-" + key if ctx.workspace.has_result(key) else None


@task(
    name="process-segment",
    retries=2,
    retry_delay_seconds=chunk_retry_delays(),
    cache_key_fn=segment_cache_key,
    persist_result=True,
)
def process_segment(record: ImageRecord, config: RunConfig, index: int) -> str | None:
    """Make segment ``index`` (from 0) of one video and store it in the workspace for the
    process phase's join; None, or why it failed (the join then fails the video with it)."""
    with _device_guard(config):
        return video.make_segment(record, config.context(), config.weights, config.device, index)


def submit_segments(
    records: list[ImageRecord],
    config: RunConfig,
    wrap: Callable[[Any], Any],
    *,
    one_at_a_time: bool,
) -> list[PrefectFuture[Any]]:
    """A task run per segment of every video of ``records`` still to be made (several
    segments, result not stored), submitted before the chunk's process task so they run
    first; ``one_at_a_time``: each waits for the one before (a model on the CPU already
    keeps every core busy)."""
    ctx = config.context()
    futures: list[PrefectFuture[Any]] = []
    for record in records:
        if not is_video(record):
            continue
        for index in range(video.segments_to_make(record, ctx, config.weights, config.device)):
            before = [allow_failure(futures[-1])] if one_at_a_time and futures else None
            futures.append(
                process_segment.with_options(
                    task_run_name=f"process-segment-{record.index}-{index + 1}"
                ).submit(wrap(record), wrap(config), index, wait_for=before, return_state=False)
            )
    return futures


@task(
    name="process-chunk",
    retries=2,
    retry_delay_seconds=chunk_retry_delays(),
    cache_key_fn=process_cache_key,
    persist_result=True,
)
def process_chunk(records: list[ImageRecord], config: RunConfig) -> list[ImageRecord]:
    """Apply the recipe to every image of the chunk (results reused by content key)."""
    with _device_guard(config):
        return workers.process_records(records, config)


@task(name="prepare-process-review", retries=2, retry_delay_seconds=chunk_retry_delays())
def one_pass_chunk(
    records: list[ImageRecord],
    config: RunConfig,
    image_ids: dict[str, str] | None = None,
    note: str = "",
) -> list[ImageRecord]:
    """A chunk of images through prepare, process, review and versions in one pass per image,
    in worker processes (recipes without models; see ``workers.one_pass_batch``): each image
    read and decoded once. Results are reused by content key as in ``process-chunk``."""
    return workers.map_images(workers.in_one_pass(image_ids, note), records, config)


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
