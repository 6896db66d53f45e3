"""How a flow run moves images through the phases: chunks of images, each a task run per
phase, streamed so a chunk moves on as soon as its previous phase is done (shared by the
enhance and regenerate flows and by approval's regenerations)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, cast

from prefect import get_run_logger
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import allow_failure, quote

from retouch.lib import perf, progress
from retouch.lib.delivery import delivery
from retouch.lib.phases import workers
from retouch.lib.phases.context import RunConfig
from retouch.lib.phases.export import assign_outputs
from retouch.lib.records import ImageRecord, RunSummary
from retouch.lib.settings import get_settings
from retouch.tasks.export import deliver, export_chunk
from retouch.tasks.prepare import prepare_chunk
from retouch.tasks.process import (
    bound_cache,
    one_pass_chunk,
    process_chunk,
    record_versions_chunk,
    submit_segments,
)
from retouch.tasks.review import review_chunk

T = TypeVar("T")

Phase = Literal["prepare", "process", "review", "versions"]
Submit = Callable[[list[ImageRecord]], PrefectFuture[Any]]

ALL_PHASES: tuple[Phase, ...] = ("prepare", "process", "review", "versions")

SMALL_BATCH_CHUNK = 4
"""Automatic chunking of a small batch: up to this many images per task, one chunk per
worker. A task run costs the flow process ~20 ms and the Prefect server ~40 ms of CPU (four
phases for each chunk), which one image per task paid for every image: 8 upscaled images in
chunks of 4 ran about 8% faster than one image per task on a 2-core machine (bench/)."""


def task_runner() -> TaskRunner[PrefectFuture[Any]]:
    """The flows' own task runner: one thread per ``workers`` setting (deployments on Dask
    replace it)."""
    # Typed as the flow decorator takes it: TaskRunner is invariant in its future type, and
    # Prefect casts its own default the same way.
    return cast(
        "TaskRunner[PrefectFuture[Any]]",
        ThreadPoolTaskRunner(max_workers=get_settings().workers),
    )


def chunk_size_for(count: int, explicit: int | None, max_chunks: int, workers: int = 1) -> int:
    """Images per task. An explicit size wins. Otherwise enough chunks to keep ``workers``
    busy, each of at most :data:`SMALL_BATCH_CHUNK` images (8 images, 2 workers: 2 chunks of
    4; 100 images: 25 chunks of 4), and at most ``max_chunks`` tasks per phase for large
    batches (2,000 images: 25 chunks of 80)."""
    if explicit:
        return explicit
    per_worker = math.ceil(count / max(1, workers))
    return max(1, math.ceil(count / max_chunks), min(per_worker, SMALL_BATCH_CHUNK))


def chunk_size(count: int, explicit: int | None) -> int:
    """:func:`chunk_size_for` ``count`` images with the run's ``explicit`` size, else the
    settings' (chunk size, most chunks, workers)."""
    settings = get_settings()
    return chunk_size_for(
        count, explicit or settings.chunk_size, settings.max_chunks, settings.workers
    )


def chunked(items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_chunks(
    records: list[T], explicit: int | None, config: RunConfig | None = None
) -> tuple[int, list[list[T]]]:
    """A run's chunk size (:func:`chunk_size`) and its chunks. With the size chosen
    automatically, the first image goes alone ahead of the rest (the first chunk split in
    two), so the first result and its review come after one image's work instead of a whole
    chunk's; an explicit size (the option or ``RETOUCH_CHUNK_SIZE``) is kept exactly.

    A recipe whose chunks go to worker processes (``config``'s recipe has no model; see
    :func:`retouch.lib.phases.workers.processes_for`) gets chunks of at least
    ``workers.MIN_IMAGES``, unsplit, so every chunk is spread over the cores: 200 photos in
    chunks of 8 kept their work in the flow's threads, under one interpreter lock."""
    size = chunk_size(len(records), explicit)
    automatic = not explicit and not get_settings().chunk_size
    if automatic and config is not None and workers.processes_for(config, len(records)):
        size = max(size, workers.MIN_IMAGES)
        return size, chunked(records, size)
    chunks = chunked(records, size)
    if not automatic or not chunks or len(chunks[0]) < 2:
        return size, chunks
    return size, [chunks[0][:1], chunks[0][1:], *chunks[1:]]


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


def _settle(future: PrefectFuture[Any], chunk: list[ImageRecord], phase: str) -> list[ImageRecord]:
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


def _versions_settled(future: PrefectFuture[Any], chunk: list[ImageRecord]) -> list[ImageRecord]:
    result = future.result(raise_on_failure=False)
    if isinstance(result, list):
        return result
    for r in chunk:  # the results exist and are delivered; only their history is missing
        if r.ok:
            r.problems.append(f"version not recorded: {result}")
    return chunk


def _stream(
    chunks: list[list[ImageRecord]], stages: list[list[tuple[Phase, Submit]]], slots: int
) -> list[list[ImageRecord]]:
    """Run every chunk through its ``stages`` (per chunk: phase, submit function) in order,
    each chunk as soon as its previous stage is done, with at most ``slots`` task runs in
    flight.

    Later stages go first: a chunk that has been processed is reviewed and recorded before
    the next chunk starts processing, so first results (and their previews) appear while
    the batch is still running, and only about ``slots`` chunks' worth of work is ever
    pending - where waiting for a whole phase to finish would leave the other workers idle
    behind its slowest chunk.
    """
    results: list[list[ImageRecord]] = list(chunks)
    ready: list[tuple[int, int]] = [(0, i) for i in range(len(chunks))]  # (stage, chunk)
    running: dict[PrefectFuture[Any], tuple[int, int]] = {}
    while ready or running:
        ready.sort(key=lambda item: (-item[0], item[1]))
        while ready and len(running) < slots:
            stage, i = ready.pop(0)
            running[stages[i][stage][1](results[i])] = (stage, i)
        future = next(as_completed(list(running)))
        stage, i = running.pop(future)
        phase = stages[i][stage][0]
        if phase == "versions":
            results[i] = _versions_settled(future, results[i])
        else:
            results[i] = _settle(future, results[i], phase)
        if stage + 1 < len(stages[i]):
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
    if config.recipe.uses_models() and not config.device.startswith("cuda") and _in_threads():
        return 1
    return workers


def run_phases(
    chunks: list[list[ImageRecord]],
    config: RunConfig,
    phases: Sequence[Phase] = ALL_PHASES,
    *,
    image_ids: dict[str, str] | None = None,
    note: str = "",
) -> list[list[ImageRecord]]:
    """``phases`` (in order) for every chunk, each chunk moving on as soon as its previous
    phase is done (see :func:`_stream`). ``image_ids`` gives the version identity of images
    by name (a run's slots), else each image's own content and name are used; ``note`` goes
    with the versions recorded."""
    wrap = _quoting()
    conf = wrap(config)
    ids = wrap(image_ids or {})
    processor = process_chunk.with_options(refresh_cache=config.refresh)
    joining = wrap(config.model_copy(update={"segment_tasks": True}))
    serial = phase_slots(config) == 1

    def process(chunk: list[ImageRecord]) -> PrefectFuture[Any]:
        # A video's segments are task runs of their own, submitted first; the chunk's task
        # then joins them (and processes its images).
        ahead = submit_segments(chunk, config, wrap, one_at_a_time=serial)
        if not ahead:
            return processor.submit(wrap(chunk), conf)
        after = [allow_failure(f) for f in ahead]
        return processor.submit(wrap(chunk), joining, wait_for=after, return_state=False)

    submit: dict[Phase, Submit] = {
        "prepare": lambda c: prepare_chunk.submit(wrap(c), conf),
        "process": process,
        "review": lambda c: review_chunk.submit(wrap(c), conf),
        "versions": lambda c: record_versions_chunk.submit(wrap(c), conf, ids, note),
    }
    stages = [(phase, submit[phase]) for phase in phases]
    # A chunk in worker processes goes through all four phases in one task run, one pass per
    # image (see tasks/process.py one_pass_chunk); a failed run fails its images in "process".
    in_one: list[tuple[Phase, Submit]] = [
        ("process", lambda c: one_pass_chunk.submit(wrap(c), conf, ids, note))
    ]
    whole = tuple(phases) == ALL_PHASES
    return _stream(
        chunks,
        [in_one if whole and workers.one_pass(config, c) else stages for c in chunks],
        slots=phase_slots(config),
    )


def process_phases(
    chunks: list[list[ImageRecord]],
    config: RunConfig,
    *,
    image_ids: dict[str, str] | None = None,
    note: str = "",
) -> list[list[ImageRecord]]:
    """prepare -> process -> review -> record versions for every chunk (:func:`run_phases`);
    then the result cache is held to its size bound, keeping this run's results."""
    recorded = run_phases(chunks, config, image_ids=image_ids, note=note)
    keep = [r.result_key for chunk in recorded for r in chunk if r.result_key]
    state = bound_cache(config, keep, return_state=True)
    if state.is_failed():
        get_run_logger().warning("could not bound the result cache: %s", state.message)
    return recorded


def export_phase(
    records: list[ImageRecord],
    skipped: list[dict[str, str]],
    config: RunConfig,
    started: float,
    size: int,
    meter: perf.RunMeter | None = None,
) -> RunSummary:
    """Names, export tasks over chunks of ``size``, then delivery of archives, manifest and
    report to ``config.dest``. ``meter``: the run's performance meter; its figures go into
    the manifest and the performance artifact."""
    meter = meter or perf.RunMeter()
    try:
        deliverable = [r for r in records if r.ok]
        # Every profile's names, planned before the export tasks so they never collide.
        assign_outputs(deliverable, config.recipe)
        meter.start("export")
        chunks = chunked(records, size)
        wrap = _quoting()
        futures = [export_chunk.submit(wrap(c), wrap(config)) for c in chunks]
        exported = [_settle(f, c, "export") for f, c in zip(futures, chunks, strict=True)]
        meter.stop("export")
        final = [r for chunk in exported for r in chunk]
        figures = meter.report(final, workers=get_settings().workers)
        summary = deliver(wrap(final), skipped, wrap(config), started, figures)
    finally:
        meter.close()
    delivery.clean_staging(config.context())  # only now: a retried delivery still needs them
    progress.emit(progress.RunDone(summary=summary.model_dump()))
    return summary
