"""The batch flow: prepare -> process -> review -> export, each a task run per chunk of images."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from retouch.flows import approval
from retouch.flows.links import flow_run_id, flow_run_url
from retouch.flows.runtime import release_memory_after_run
from retouch.lib import perf, progress, versions
from retouch.lib.delivery import delivery
from retouch.lib.errors import RecipeError
from retouch.lib.models.device import run_device
from retouch.lib.phases import workers
from retouch.lib.phases.context import RunConfig
from retouch.lib.phases.export import assign_outputs
from retouch.lib.recipe import (
    DEFAULT_PRESET,
    Recipe,
    apply_overrides,
    load_preset,
    preset_names,
)
from retouch.lib.records import ImageRecord, RunSummary
from retouch.lib.settings import get_settings
from retouch.lib.storage import redact
from retouch.lib.workspace import Workspace
from retouch.tasks.export import deliver, export_chunk
from retouch.tasks.prepare import check_models, discover, prepare_chunk
from retouch.tasks.process import bound_cache, process_chunk, record_versions_chunk
from retouch.tasks.review import review_chunk


class RunOptions(BaseModel):
    """Per-run options beside the recipe (all optional; empty = the setting's default).

    Fields are plain values rather than ``None`` defaults, so the Prefect UI's run form shows
    them as ordinary inputs; ``None`` is still accepted and means empty."""

    masks: str = Field(
        "",
        description="Masks for inpaint: a folder (matched to images by file stem) or one "
        "mask file for every image",
    )
    chunk_size: int = Field(
        0, ge=0, le=10_000, description="Images per mapped task (0: automatic, or the setting)"
    )
    workspace: str = Field(
        "", description="Workspace URI (empty: RETOUCH_WORKSPACE or ~/.cache/retouch/workspace)"
    )
    refresh: bool = Field(False, description="Ignore cached results and recompute every image")
    device: str = Field("", description="auto, cpu, cuda or cuda:N (empty: the setting)")

    @field_validator("masks", "workspace", "device", "chunk_size", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return 0 if info.field_name == "chunk_size" else ""
        return value


def resolve_recipe(preset: str, overrides: list[str], recipe: Recipe | None) -> Recipe:
    """The recipe a run executes: ``recipe`` when given in full, else the preset, with the
    overrides applied. A recipe without steps is refused unless it gives export settings (a
    delivery-only recipe: convert, rename, split): it would deliver the inputs untouched
    while reporting success (as ``recipe={"name": "quick"}`` once did)."""
    if recipe is None:
        chosen = load_preset(preset)
    elif not recipe.steps and "export" not in recipe.model_fields_set:
        hint = (
            f"to run the preset, pass preset={recipe.name!r}"
            if recipe.name in preset_names()
            else "pass a preset (e.g. preset="
            + DEFAULT_PRESET
            + "), list the recipe's steps, or give export settings for a delivery-only run"
        )
        raise RecipeError(f"recipe {recipe.name!r} has no steps, so nothing would be done: {hint}")
    else:
        chosen = recipe
    return apply_overrides(chosen, overrides) if overrides else chosen


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


SMALL_BATCH_CHUNK = 4
"""Automatic chunking of a small batch: up to this many images per task, one chunk per
worker. A task run costs the flow process ~20 ms and the Prefect server ~40 ms of CPU (four
phases for each chunk), which one image per task paid for every image: 8 upscaled images in
chunks of 4 ran about 8% faster than one image per task on a 2-core machine (bench/)."""


def chunk_size_for(count: int, explicit: int | None, max_chunks: int, workers: int = 1) -> int:
    """Images per task. An explicit size wins. Otherwise enough chunks to keep ``workers``
    busy, each of at most :data:`SMALL_BATCH_CHUNK` images (8 images, 2 workers: 2 chunks of
    4; 100 images: 25 chunks of 4), and at most ``max_chunks`` tasks per phase for large
    batches (2,000 images: 25 chunks of 80)."""
    if explicit:
        return explicit
    per_worker = math.ceil(count / max(1, workers))
    return max(1, math.ceil(count / max_chunks), min(per_worker, SMALL_BATCH_CHUNK))


def chunked(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _in_threads() -> bool:
    """Whether this flow run's tasks run in threads of this process (not on Dask)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return isinstance(ctx.task_runner if ctx is not None else None, ThreadPoolTaskRunner)


def _quoting() -> Callable[[Any], Any]:
    """How chunk arguments are handed to task runs in this flow run.

    In threads, ``quote``: Prefect would otherwise walk every record of every chunk (looking
    for futures and upstream tasks) on each task run, most of a large run's orchestration
    time. Other task runners (Dask) ship arguments to other processes and are given them
    plain.
    """
    return quote if _in_threads() else (lambda value: value)


def _settle(future: PrefectFuture, chunk: list[ImageRecord], phase: str) -> list[ImageRecord]:
    """A chunk task's records; a task that failed outright marks its own images failed only."""
    result = future.result(raise_on_failure=False)
    if isinstance(result, BaseException) or not isinstance(result, list):
        reason = f"{phase} task failed: {result}"
        return [r.model_copy(deep=True).fail(phase, reason) if r.ok else r for r in chunk]
    if future.state.name == "Cached":
        # The task body didn't run, so neither did its per-image progress reports.
        for r in result:
            # These records come from the run that computed them; this run did no work.
            r.reused = r.reused or r.ok
            r.model_calls = 0
            r.timings[phase] = 0.0
            progress.emit(progress.ImagePhaseDone(phase=phase, name=r.name, ok=r.ok, reused=True))
    return result


def _gather(
    futures: list[PrefectFuture], chunks: list[list[ImageRecord]], phase: str
) -> list[list[ImageRecord]]:
    """Results per chunk (see :func:`_settle`)."""
    return [_settle(f, chunk, phase) for f, chunk in zip(futures, chunks, strict=True)]


def _versions_settled(future: PrefectFuture, chunk: list[ImageRecord]) -> list[ImageRecord]:
    result = future.result(raise_on_failure=False)
    if isinstance(result, list):
        return result
    for r in chunk:  # the results exist and are delivered; only their history is missing
        if r.ok:
            r.problems.append(f"version not recorded: {result}")
    return chunk


def _stream(
    chunks: list[list[ImageRecord]],
    stages: list[tuple[str, Callable[[list[ImageRecord]], PrefectFuture]]],
    slots: int,
) -> list[list[ImageRecord]]:
    """Run every chunk through ``stages`` (phase name, submit function) in order, each chunk
    as soon as its previous stage is done, with at most ``slots`` task runs in flight.

    Later stages go first: a chunk that has been processed is reviewed and recorded before
    the next chunk starts processing, so first results (and their previews) appear while
    the batch is still running, and only about ``slots`` chunks' worth of work is ever
    pending - where waiting for a whole phase to finish would leave the other workers idle
    behind its slowest chunk.
    """
    results: list[list[ImageRecord]] = list(chunks)
    ready: list[tuple[int, int]] = [(0, i) for i in range(len(chunks))]  # (stage, chunk)
    running: dict[PrefectFuture, tuple[int, int]] = {}
    while ready or running:
        ready.sort(key=lambda item: (-item[0], item[1]))
        while ready and len(running) < slots:
            stage, i = ready.pop(0)
            running[stages[stage][1](results[i])] = (stage, i)
        future = next(as_completed(list(running)))
        stage, i = running.pop(future)
        phase = stages[stage][0]
        if phase == "versions":
            results[i] = _versions_settled(future, results[i])
        else:
            results[i] = _settle(future, results[i], phase)
        if stage + 1 < len(stages):
            ready.append((stage + 1, i))
    return results


def phase_slots(config: RunConfig) -> int:
    """Chunk tasks in flight. One when a model runs on the CPU: torch already keeps every
    core busy, and any Python work beside it (reviewing the previous chunk) costs the model
    more than its own time, as its threads wait for the interpreter lock and for each other
    (24 upscaled images: 37.9 s with one in flight, 40.2 s with two; bench/). Otherwise the
    ``workers`` setting, so phases overlap (a GPU computes while the CPU reviews), and
    always on other task runners (Dask), whose workers are separate processes."""
    workers = max(1, get_settings().workers)
    if config.recipe.models() and not config.device.startswith("cuda") and _in_threads():
        return 1
    return workers


def process_phases(
    chunks: list[list[ImageRecord]],
    config: RunConfig,
    *,
    refresh: bool = False,
    image_ids: dict[str, str] | None = None,
    note: str = "",
) -> list[list[ImageRecord]]:
    """prepare -> process -> review -> record versions for every chunk, each chunk moving on
    as soon as its previous phase is done (see :func:`_stream`); then the result cache is
    held to its size bound. ``image_ids`` gives the version identity of images by name (a
    run's slots), else each image's own content and name are used."""
    processor = process_chunk.with_options(refresh_cache=refresh)
    ids = image_ids or {}
    wrap = _quoting()
    conf = wrap(config)
    stages: list[tuple[str, Callable[[list[ImageRecord]], PrefectFuture]]] = [
        ("prepare", lambda c: prepare_chunk.submit(wrap(c), conf)),
        ("process", lambda c: processor.submit(wrap(c), conf)),
        ("review", lambda c: review_chunk.submit(wrap(c), conf)),
        ("versions", lambda c: record_versions_chunk.submit(wrap(c), conf, wrap(ids), note)),
    ]
    recorded = _stream(chunks, stages, slots=phase_slots(config))
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
    meter: perf.RunMeter | None = None,
) -> RunSummary:
    """Names, export tasks over chunks, then delivery of archives, manifest and report
    (shared by the enhance and regenerate flows). ``meter``: the run's performance meter;
    its figures go into the manifest and the performance artifact."""
    meter = meter or perf.RunMeter()
    try:
        deliverable = [r for r in records if r.ok]
        # Every profile's names, planned before the export tasks so they never collide.
        assign_outputs(deliverable, config.recipe)
        meter.start("export")
        chunks = chunked(records, size)
        wrap = _quoting()
        exported_f = [export_chunk.submit(wrap(c), wrap(config)) for c in chunks]
        exported = _gather(exported_f, chunks, "export")
        meter.stop("export")
        final = [r for chunk in exported for r in chunk]
        figures = meter.report(final, workers=get_settings().workers)
        summary = deliver(wrap(final), skipped, wrap(config), source, dest, started, figures)
    finally:
        meter.close()
    delivery.clean_staging(config.context())  # only now: a retried delivery still needs them
    progress.emit(progress.RunDone(summary=summary.model_dump()))
    return summary


@flow(
    name="retouch-enhance",
    task_runner=ThreadPoolTaskRunner(max_workers=get_settings().workers),
    validate_parameters=True,
)
def enhance(
    source: str,
    dest: str,
    preset: str = DEFAULT_PRESET,
    # Defaults rather than None, so the Prefect UI's form shows plain fields (never mutated).
    overrides: list[str] = [],  # noqa: B006
    recipe: Recipe | None = None,
    options: RunOptions = RunOptions(),  # noqa: B008
) -> RunSummary:
    """Enhance every image in SOURCE and deliver ZIP, manifest and report to DEST.

    Args:
        source: Images to enhance: a folder, glob, single image, list file, .zip, or any
            fsspec URL (s3://bucket/prefix/).
        dest: Where the ZIP, manifest.json and report.html go: a folder or fsspec URL.
        preset: The recipe to run, by name: a shipped preset or one saved with
            `retouch tune --save` (see `retouch presets list`).
        overrides: STEP.PARAM=VALUE changes to the preset, e.g. upscale.outscale=2 or
            export.format=webp.
        recipe: A full recipe instead of the preset (advanced; it must list its steps).
        options: Masks, chunk size, workspace, device, refresh.
    """
    meter = perf.RunMeter()
    try:
        chosen = resolve_recipe(preset, overrides or [], recipe)
        return _enhance(source, dest, chosen, options or RunOptions(), meter)
    finally:
        meter.close()  # a long-running worker must not keep a sampler per failed run
        workers.shutdown()  # worker processes, if a chunk started them
        release_memory_after_run()  # a long-running worker stays flat batch after batch


def _enhance(
    source: str, dest: str, recipe: Recipe, options: RunOptions, meter: perf.RunMeter
) -> RunSummary:
    settings = get_settings()
    logger = get_run_logger()
    started = time.time()
    run_id = new_run_id()
    recipe.validate_steps()

    records, skipped = discover(source, skip_masks=any(s.op == "inpaint" for s in recipe.steps))
    weights = check_models(recipe)
    config = RunConfig(
        run_id=run_id,
        workspace=options.workspace or settings.resolved_workspace(),
        recipe=recipe,
        masks=options.masks or None,
        device=run_device(recipe, options.device or settings.device),
        weights=weights,
        refresh=options.refresh,
    )
    size = chunk_size_for(
        len(records),
        options.chunk_size or settings.chunk_size,
        settings.max_chunks,
        settings.workers,
    )
    chunks = chunked(records, size)
    logger.info(
        "run %s: %d images in %d chunks, recipe %s", run_id, len(records), len(chunks), recipe.name
    )
    progress.emit(
        progress.RunStarted(
            run_id=run_id, total=len(records), skipped=len(skipped), chunks=len(chunks)
        )
    )

    url = flow_run_url()
    if url:
        logger.info("run %s in the Prefect UI: %s", run_id, url)
    progress.emit(progress.FlowRunLinked(run_id=run_id, flow_run_id=flow_run_id(), url=url))
    versions.save_run_info(
        Workspace(config.workspace),
        run_id,
        {
            "run_id": run_id,
            "flow_run_id": flow_run_id(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": source,
            "dest": dest,
            "recipe": recipe.model_dump(mode="json"),
            "options": options.model_dump(mode="json"),
        },
    )
    meter.start("prepare-process-review")
    reviewed = process_phases(chunks, config, refresh=options.refresh)
    meter.stop("prepare-process-review")

    flat = [r for chunk in reviewed for r in chunk]
    # The recipe's quality gate, then (review.approve) a pause until someone decides.
    flat = approval.apply_gate(flat, config, size)
    flat, _decision = approval.wait_for_approval(flat, config, size)
    summary = export_phase(flat, skipped, config, source, dest, started, size, meter)
    logger.info(
        "run %s: %d succeeded, %d failed; results in %s",
        run_id,
        summary.succeeded,
        summary.failed,
        redact(dest),
    )
    return summary
