"""Process phase tasks: run the recipe on a chunk (models held once per worker process),
record the results as versions, bound the result cache."""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from typing import Any

from prefect import task
from prefect.concurrency.sync import concurrency

from retouch.lib import cache
from retouch.lib.models.pool import default_pool
from retouch.lib.phases import workers
from retouch.lib.records import ImageRecord
from retouch.lib.settings import get_settings
from retouch.lib.workspace import Workspace
from retouch.tasks.common import RunConfig, chunk_retry_delays


def process_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Content-based key over the chunk's result keys (image sha256, steps with op versions,
    weight hashes, per-image inputs such as masks) - never paths, which Prefect's default
    INPUTS policy would hash. Only a chunk whose every result is already in the workspace gets
    a key (None = not cached), so failures are never cached and a hit can always be exported.
    """
    config: RunConfig = parameters["config"]
    records: list[ImageRecord] = parameters["records"]
    if config.refresh:
        return None
    ctx = config.context()
    keys = []
    try:
        for r in records:
            if r.ok:
                key = ctx.image_key(r, config.weights, config.device)
                if not ctx.workspace.has_result(key):
                    return None
                keys.append(key)
    except Exception:  # e.g. an unreadable mask: let the task run and report it per image
        return None
    payload = {
        "records": [(r.index, r.name, r.uri, r.sha256, r.status) for r in records],
        "results": keys,
        "workspace": config.workspace,
    }
    return (
        "retouch-process-"
        + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    )


@task(
    name="process-chunk",
    retries=2,
    retry_delay_seconds=chunk_retry_delays(),
    cache_key_fn=process_cache_key,
    persist_result=True,
)
def process_chunk(records: list[ImageRecord], config: RunConfig) -> list[ImageRecord]:
    """Apply the recipe to every image of the chunk (results reused by content key)."""
    needs_gpu = config.device.startswith("cuda") and bool(config.recipe.models())
    # The GPU is a named, global resource: runs on several workers share it precisely.
    guard = concurrency(get_settings().gpu_concurrency, occupy=1) if needs_gpu else nullcontext()
    pool = default_pool()
    loading = pool.load_seconds
    with guard:
        # Reading and writing overlap with the steps (see lib.phases.process.process_many).
        out = workers.map_images(workers.process_batch, records, config)
    # Model loading this chunk paid for (on its first image), for the performance figures.
    # Another chunk loading at the same time in this process may be counted here too.
    loaded = pool.load_seconds - loading
    if loaded > 0 and out:
        out[0].timings["model_load"] = round(loaded, 3)
    return out


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
    max_bytes = get_settings().cache_max_bytes
    if max_bytes is None:
        return 0
    return cache.enforce_limit(Workspace(config.workspace), max_bytes, keep).freed
