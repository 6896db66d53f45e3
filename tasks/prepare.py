"""Prepare phase tasks: discover the source, check models, validate and analyse images."""

from __future__ import annotations

from prefect import task

from retouch.lib import sources
from retouch.lib.errors import SourceError
from retouch.lib.masks import masks_beside
from retouch.lib.phases import workers
from retouch.lib.phases.keys import weights_ids
from retouch.lib.phases.prepare import new_record
from retouch.lib.recipe import Recipe
from retouch.lib.records import ImageRecord
from retouch.lib.settings import get_settings
from retouch.lib.storage import redact
from retouch.tasks.common import RunConfig, chunk_retry_delays


@task(name="discover", retries=2, retry_delay_seconds=chunk_retry_delays())
def discover(
    source: str, skip_masks: bool = False
) -> tuple[list[ImageRecord], list[dict[str, str]]]:
    """List the source's images as records, and the files skipped with their reasons;
    with ``skip_masks``, inpaint masks kept beside their images are skipped too."""
    found = sources.discover(source, follow_symlinks=get_settings().follow_symlinks)
    skipped = [{"uri": redact(uri), "reason": reason} for uri, reason in found.skipped]
    if skip_masks:
        beside = masks_beside([item.name for item in found.items])
        skipped += [
            {"uri": redact(item.uri), "reason": f"the inpaint mask of {beside[item.name]}"}
            for item in found.items
            if item.name in beside
        ]
        found.items = [item for item in found.items if item.name not in beside]
    if not found.items:
        detail = (
            f" ({len(skipped)} other files skipped, e.g. {skipped[0]['uri']}: {skipped[0]['reason']})"
            if skipped
            else ""
        )
        raise SourceError(f"{redact(source)}: no images found{detail}")
    records = [new_record(item, i) for i, item in enumerate(found.items, start=1)]
    return records, skipped


@task(name="check-models")
def check_models(recipe: Recipe) -> dict[str, str]:
    """Resolve every weight file the recipe needs before any image is touched."""
    return weights_ids(recipe)


@task(name="prepare-chunk", retries=2, retry_delay_seconds=chunk_retry_delays())
def prepare_chunk(records: list[ImageRecord], config: RunConfig) -> list[ImageRecord]:
    """Fingerprint, validate and analyse a chunk of images."""
    return workers.map_images(workers.prepare_batch, records, config)
