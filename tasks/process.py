"""Process phase task: run the recipe on a chunk, holding models once per worker process."""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from typing import Any

from prefect import task
from prefect.concurrency.sync import concurrency

from retouch.lib import pipeline
from retouch.lib.records import ImageRecord
from retouch.lib.settings import get_settings

from .common import RunConfig, chunk_retry_delays


def process_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Content-based key: the images' sha256, the steps with op versions, the weights, the workspace.

    Prefect's default INPUTS policy would hash paths, and a changed file would give a stale hit.
    """
    config: RunConfig = parameters["config"]
    records: list[ImageRecord] = parameters["records"]
    payload = {
        "images": [(r.index, r.name, r.uri, r.sha256, r.status) for r in records],
        "steps": config.recipe.steps_hash(),
        "weights": config.weights,
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
    ctx = config.context()
    needs_gpu = config.device.startswith("cuda") and bool(config.recipe.models())
    # The GPU is a named, global resource: runs on several workers share it precisely.
    guard = concurrency(get_settings().gpu_concurrency, occupy=1) if needs_gpu else nullcontext()
    with guard:
        return [
            pipeline.process_one(r.model_copy(deep=True), ctx, config.weights, config.device)
            for r in records
        ]
