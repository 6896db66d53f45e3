"""Prepare phase tasks: list the source, check models, validate and analyse images."""

from __future__ import annotations

from prefect import task

from retouch.lib.phases import workers
from retouch.lib.phases.context import RunConfig
from retouch.lib.phases.keys import weights_ids
from retouch.lib.phases.prepare import list_inputs
from retouch.lib.recipe import Recipe
from retouch.lib.records import ImageRecord
from retouch.tasks.common import chunk_retry_delays


@task(name="discover", retries=2, retry_delay_seconds=chunk_retry_delays())
def discover(
    source: str, skip_masks: bool = False
) -> tuple[list[ImageRecord], list[dict[str, str]]]:
    """The source's images as records, and the files skipped with their reasons (see
    :func:`retouch.lib.phases.prepare.list_inputs`)."""
    return list_inputs(source, skip_masks)


@task(name="check-models")
def check_models(recipe: Recipe) -> dict[str, str]:
    """Resolve every weight file the recipe needs before any image is touched."""
    return weights_ids(recipe)


@task(name="prepare-chunk", retries=2, retry_delay_seconds=chunk_retry_delays())
def prepare_chunk(records: list[ImageRecord], config: RunConfig) -> list[ImageRecord]:
    """Fingerprint, validate and analyse a chunk of images."""
    return workers.map_images(workers.prepare_batch, records, config)
