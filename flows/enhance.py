"""The batch flow: prepare -> process -> review -> export, each a task mapped over chunks."""

from __future__ import annotations

import math
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from retouch.flows import approval
from retouch.lib import delivery, pipeline, progress, versions
from retouch.lib.models.loaders import device_for
from retouch.lib.recipe import Recipe
from retouch.lib.records import ImageRecord, RunSummary
from retouch.lib.settings import get_settings
from retouch.lib.storage import redact
from retouch.lib.workspace import Workspace
from retouch.tasks.common import RunConfig
from retouch.tasks.export import deliver, export_chunk
from retouch.tasks.prepare import check_models, discover, prepare_chunk
from retouch.tasks.process import bound_cache, process_chunk, record_versions_chunk
from retouch.tasks.review import review_chunk


class RunOptions(BaseModel):
    """Per-run options beside the recipe (all optional)."""

    masks: str | None = Field(
        None, description="Folder of masks for inpaint, matched to images by file stem"
    )
    chunk_size: int | None = Field(
        None, ge=1, le=10_000, description="Images per mapped task (default: setting)"
    )
    workspace: str | None = Field(
        None, description="Workspace URI (default: RETOUCH_WORKSPACE or ~/.cache/retouch/workspace)"
    )
    refresh: bool = Field(False, description="Ignore cached results and recompute every image")
    device: str | None = Field(None, description="auto, cpu, cuda or cuda:N (default: setting)")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def chunk_size_for(count: int, explicit: int | None, max_chunks: int) -> int:
    """An explicit size wins; otherwise one image per task for small batches and at most
    ``max_chunks`` tasks per phase for large ones (2,000 images: 25 chunks of 80)."""
    if explicit:
        return explicit
    return max(1, math.ceil(count / max_chunks))


def chunked(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _gather(
    futures: list[PrefectFuture], chunks: list[list[ImageRecord]], phase: str
) -> list[list[ImageRecord]]:
    """Results per chunk; a chunk whose task failed outright marks its own images failed only."""
    out = []
    for future, chunk in zip(futures, chunks, strict=True):
        result = future.result(raise_on_failure=False)
        if isinstance(result, BaseException) or not isinstance(result, list):
            reason = f"{phase} task failed: {result}"
            out.append([r.model_copy(deep=True).fail(phase, reason) if r.ok else r for r in chunk])
        else:
            if future.state.name == "Cached":
                # The task body didn't run, so neither did its per-image progress reports.
                for r in result:
                    # These records come from the run that computed them; this run did no work.
                    r.reused = r.reused or r.ok
                    r.model_calls = 0
                    r.timings[phase] = 0.0
                    progress.emit("image", phase=phase, name=r.name, ok=r.ok, reused=True)
            out.append(result)
    return out


def process_phases(
    chunks: list[list[ImageRecord]],
    config: RunConfig,
    *,
    refresh: bool = False,
    image_ids: dict[str, str] | None = None,
    note: str = "",
) -> list[list[ImageRecord]]:
    """prepare -> process -> review -> record versions, each mapped over the chunks (so chunks
    flow through the phases independently); then the result cache is held to its size bound.
    ``image_ids`` gives the version identity of images by name (a run's slots), else each
    image's own content and name are used."""
    prepared_f = prepare_chunk.map(chunks, unmapped(config))
    prepared = _gather(list(prepared_f), chunks, "prepare")
    processor = process_chunk.with_options(refresh_cache=refresh)
    processed_f = processor.map(prepared, unmapped(config))
    processed = _gather(list(processed_f), prepared, "process")
    reviewed_f = review_chunk.map(processed, unmapped(config))
    reviewed = _gather(list(reviewed_f), processed, "review")
    recorded_f = record_versions_chunk.map(
        reviewed, unmapped(config), unmapped(image_ids or {}), unmapped(note)
    )
    recorded = []
    for future, chunk in zip(recorded_f, reviewed, strict=True):
        result = future.result(raise_on_failure=False)
        if isinstance(result, list):
            recorded.append(result)
        else:  # the results exist and are delivered; only their history is missing
            for r in chunk:
                if r.ok:
                    r.problems.append(f"version not recorded: {result}")
            recorded.append(chunk)
    keep = [r.result_key for chunk in recorded for r in chunk if r.result_key]
    state = bound_cache(config, keep, return_state=True)
    if state.is_failed():
        get_run_logger().warning("could not bound the result cache: %s", state.message)
    return recorded


def export_phase(
    records: list[ImageRecord],
    skipped: list[dict[str, str]],
    config: RunConfig,
    source: str,
    dest: str,
    started: float,
    size: int,
) -> RunSummary:
    """Names, export tasks over chunks, then delivery of archives, manifest and report
    (shared by the enhance and regenerate flows)."""
    deliverable = [r for r in records if r.ok]
    # Every profile's names, planned before the export tasks so they never collide.
    pipeline.assign_outputs(deliverable, config.recipe)
    exported_f = export_chunk.map(chunked(records, size), unmapped(config))
    exported = _gather(list(exported_f), chunked(records, size), "export")
    final = [r for chunk in exported for r in chunk]
    summary = deliver(final, skipped, config, source, dest, started)
    delivery.clean_staging(config.context())  # only now: a retried delivery still needs them
    progress.emit("done", summary=summary.model_dump())
    return summary


@flow(
    name="retouch-enhance",
    task_runner=ThreadPoolTaskRunner(max_workers=get_settings().workers),
    validate_parameters=True,
)
def enhance(
    source: str, dest: str, recipe: Recipe, options: RunOptions | None = None
) -> RunSummary:
    """Enhance every image in SOURCE with RECIPE and deliver ZIP, manifest and report to DEST."""
    options = options or RunOptions()
    settings = get_settings()
    logger = get_run_logger()
    started = time.time()
    run_id = new_run_id()
    recipe.validate_steps()

    records, skipped = discover(source)
    weights = check_models(recipe)
    config = RunConfig(
        run_id=run_id,
        workspace=options.workspace or settings.resolved_workspace(),
        recipe=recipe,
        masks=options.masks,
        device=device_for(options.device or settings.device),
        weights=weights,
        refresh=options.refresh,
    )
    size = chunk_size_for(
        len(records), options.chunk_size or settings.chunk_size, settings.max_chunks
    )
    chunks = chunked(records, size)
    logger.info(
        "run %s: %d images in %d chunks, recipe %s", run_id, len(records), len(chunks), recipe.name
    )
    progress.emit(
        "run", run_id=run_id, total=len(records), skipped=len(skipped), chunks=len(chunks)
    )

    versions.save_run_info(
        Workspace(config.workspace),
        run_id,
        {
            "run_id": run_id,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": source,
            "dest": dest,
            "recipe": recipe.model_dump(mode="json"),
            "options": options.model_dump(mode="json"),
        },
    )
    reviewed = process_phases(chunks, config, refresh=options.refresh)

    flat = [r for chunk in reviewed for r in chunk]
    # The recipe's quality gate, then (review.approve) a pause until someone decides.
    flat = approval.apply_gate(flat, config, size)
    flat, _decision = approval.wait_for_approval(flat, config, size)
    summary = export_phase(flat, skipped, config, source, dest, started, size)
    logger.info(
        "run %s: %d succeeded, %d failed; results in %s",
        run_id,
        summary.succeeded,
        summary.failed,
        redact(dest),
    )
    return summary
