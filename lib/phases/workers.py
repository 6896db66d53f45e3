"""The per-image work of a chunk, here or in worker processes (recipes without models).

Classic operations on small images are cheap in C but cost milliseconds of Python per image
(decoding, measuring, thumbnails, records, version objects), and the flow's threads share
one interpreter lock: a 2,000-image run kept one core busy out of two. Such chunks hand
their images, a few at a time, to a pool of worker processes (one per core, setting
``processes``), each running the same phase functions the flow's threads run.

- Only recipes without models: a model is loaded once per process and held, so model
  recipes stay in the flow's process (the GPU, or torch's own threads, keep them busy).
- Only chunks of at least :data:`MIN_IMAGES` images: below that, starting and feeding the
  workers costs more than it saves.
- Progress events emitted in a worker are sent back with its results and emitted again
  here, in order, so progress bars and event files see every image.
- A worker that dies (a crash in a decoder, the out-of-memory killer) costs only its own
  image: the images it held are tried again one at a time in a fresh pool, and one that
  kills its worker again is reported failed with that reason.
- The pool lives for one flow run (:func:`shutdown` in the flow's ``finally``); its workers
  are forked from a small server process that has imported retouch's library only.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any

from retouch.lib import perf, progress
from retouch.lib.phases.context import RunConfig, RunContext, is_video
from retouch.lib.phases.export import export_one
from retouch.lib.phases.prepare import prepare_one
from retouch.lib.phases.process import process_many
from retouch.lib.phases.review import review_one
from retouch.lib.records import ImageRecord
from retouch.lib.settings import Settings, get_settings, reload_settings

MIN_IMAGES = 16
"""A chunk smaller than this runs in the flow's process."""

BATCH = 8
"""Images per call to a worker: fewer round trips, progress still every few images."""

PhaseWork = Callable[[list[ImageRecord], RunConfig, RunContext], list[ImageRecord]]
"""One phase's work over a few records (copies, changed in place), given the run's config
and the context built from it. A module-level function (or a ``functools.partial`` of one),
so it reaches worker processes by reference."""


def prepare_batch(
    records: list[ImageRecord], config: RunConfig, ctx: RunContext
) -> list[ImageRecord]:
    seconds = config.recipe.export.video.segment_seconds
    return [prepare_one(r, ctx.settings, seconds) for r in records]


def process_batch(
    records: list[ImageRecord], config: RunConfig, ctx: RunContext
) -> list[ImageRecord]:
    return process_many(records, ctx, config.weights, config.device)


def review_batch(
    records: list[ImageRecord], config: RunConfig, ctx: RunContext
) -> list[ImageRecord]:
    return [review_one(r, ctx) for r in records]


def export_batch(
    records: list[ImageRecord], config: RunConfig, ctx: RunContext
) -> list[ImageRecord]:
    return [export_one(r, ctx) for r in records]


def versions_batch(
    records: list[ImageRecord],
    config: RunConfig,
    ctx: RunContext,
    *,
    image_ids: dict[str, str] | None = None,
    note: str = "",
) -> list[ImageRecord]:
    """Record each processed image's result as a version (``image_ids``: slot ids by name)."""
    from retouch.lib import versions

    ids = image_ids or {}
    return [versions.record_run_image(r, ctx, ids.get(r.name), note) for r in records]


def record_versions(image_ids: dict[str, str] | None, note: str) -> PhaseWork:
    """:func:`versions_batch` with the run's slot ids and note bound."""
    return partial(versions_batch, image_ids=image_ids or {}, note=note)


def one_pass_batch(
    records: list[ImageRecord],
    config: RunConfig,
    ctx: RunContext,
    *,
    image_ids: dict[str, str] | None = None,
    note: str = "",
) -> list[ImageRecord]:
    """prepare, process, review and record the version of each image in turn: the image is
    read and decoded once, and its result reviewed as computed (``RunContext.handed``), where
    phase by phase each would read and decode it again and its record would travel between
    processes four times. Each phase does and reports what it does on its own."""
    from retouch.lib import versions

    seconds = config.recipe.export.video.segment_seconds
    ids = image_ids or {}
    ctx.handed = {}
    try:
        for record in records:
            try:
                prepare_one(record, ctx.settings, seconds, handed=ctx.handed)
                process_many([record], ctx, config.weights, config.device)
                review_one(record, ctx)
                versions.record_run_image(record, ctx, ids.get(record.name), note)
            finally:
                ctx.handed.clear()  # one image's pixels at a time
    finally:
        ctx.handed = None
    return records


def in_one_pass(image_ids: dict[str, str] | None, note: str) -> PhaseWork:
    """:func:`one_pass_batch` with the run's slot ids and note bound."""
    return partial(one_pass_batch, image_ids=image_ids or {}, note=note)


def one_pass(config: RunConfig, records: list[ImageRecord]) -> bool:
    """Whether a chunk goes through its phases in one pass per image (:func:`in_one_pass`):
    when it runs in worker processes (:func:`processes_for`) and holds no video (a video's
    segments are task runs of their own between its prepare and process phases)."""
    return bool(processes_for(config, len(records))) and not any(is_video(r) for r in records)


PHASE_OF: dict[Callable[..., Any], str] = {
    prepare_batch: "prepare",
    process_batch: "process",
    review_batch: "review",
    export_batch: "export",
    versions_batch: "versions",
    one_pass_batch: "process",
}
"""The phase a record failed in when its worker died while running that work."""

_pool: ProcessPoolExecutor | None = None
_pool_size = 0
_lock = threading.Lock()


def processes_for(config: RunConfig, count: int, settings: Settings | None = None) -> int:
    """How many worker processes a chunk of ``count`` images of ``config`` uses (0: none)."""
    if config.recipe.uses_models() or count < MIN_IMAGES:
        return 0
    wanted = (settings or get_settings()).processes or (os.cpu_count() or 1)
    return wanted if wanted >= 2 else 0


def map_images(work: PhaseWork, records: list[ImageRecord], config: RunConfig) -> list[ImageRecord]:
    """Run ``work`` over ``records`` (copies; the inputs are left as they were), in worker
    processes when :func:`processes_for` says so, else here."""
    settings = get_settings()
    size = processes_for(config, len(records), settings)
    if not size:
        copies = [r.model_copy(deep=True) for r in records]
        return work(copies, config, config.context(settings))
    batches = [records[i : i + BATCH] for i in range(0, len(records), BATCH)]
    pool = _get_pool(size)
    futures = [_submit(pool, work, batch, config, settings) for batch in batches]
    out: list[ImageRecord] = []
    for batch, future in zip(batches, futures, strict=True):
        try:
            done, events, used = future.result()
            perf.note_worker(used["cpu_s"], used["peak_rss"], size)
        except BrokenProcessPool:
            _drop_pool(pool)
            done, events = _one_at_a_time(work, batch, config, settings)
        for event in events:
            progress.emit(event)
        out.extend(done)
    return out


def process_records(records: list[ImageRecord], config: RunConfig) -> list[ImageRecord]:
    """The process phase over a chunk (:func:`map_images` of :func:`process_batch`), its
    first record carrying the model loading the chunk paid for (the performance figures'
    ``model_load``), and the loading done ahead for it by the command's preload thread, not
    reported yet. Another chunk loading at the same time in this process may be counted
    here too."""
    from retouch.lib.models.pool import default_pool

    pool = default_pool()
    loading, ahead = pool.load_seconds, pool.ahead_seconds
    # Reading and writing overlap with the steps (see lib.phases.process.process_many).
    out = map_images(process_batch, records, config)
    own = (pool.load_seconds - loading) - (pool.ahead_seconds - ahead)
    loaded = own + pool.take_ahead()
    if loaded > 0 and out:
        out[0].timings["model_load"] = round(loaded, 3)
    return out


def shutdown() -> None:
    """Stop this process's worker pool, if any (the next chunk that needs one starts one)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


# -- the parent side -------------------------------------------------------------------------


def _get_pool(size: int) -> ProcessPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != size:
            old, _pool = _pool, None
            if old is not None:
                old.shutdown(wait=False, cancel_futures=True)
            _pool, _pool_size = _new_pool(size), size
        return _pool


def _new_pool(size: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("forkserver")
    # Workers fork from a server that imported only this module (and so the library), never
    # from the flow's process with its threads and Prefect state.
    context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(
        max_workers=size,
        mp_context=context,
        initializer=_init_worker,
        initargs=(dict(os.environ),),
    )


def _drop_pool(broken: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is broken:
            _pool = None
    broken.shutdown(wait=False, cancel_futures=True)


def _submit(
    pool: ProcessPoolExecutor,
    work: PhaseWork,
    batch: list[ImageRecord],
    config: RunConfig,
    settings: Settings,
) -> Future[tuple[list[ImageRecord], list[progress.Event], dict[str, Any]]]:
    try:
        return pool.submit(_work, work, batch, config, settings)
    except BrokenProcessPool:  # broken by another chunk's batch: a fresh pool for this one
        _drop_pool(pool)
        return _get_pool(_pool_size or 2).submit(_work, work, batch, config, settings)


def _one_at_a_time(
    work: PhaseWork, batch: list[ImageRecord], config: RunConfig, settings: Settings
) -> tuple[list[ImageRecord], list[progress.Event]]:
    """A worker died while ``batch`` was in the pool (its own image or another chunk's):
    each image again on its own, in a private one-worker pool, so a death now can only be
    that image's doing."""
    phase = PHASE_OF.get(getattr(work, "func", work), "process")
    done: list[ImageRecord] = []
    events: list[progress.Event] = []
    pool: ProcessPoolExecutor | None = None
    try:
        for record in batch:
            if pool is None:
                pool = _new_pool(1)
            try:
                got, got_events, _ = pool.submit(_work, work, [record], config, settings).result()
            except BrokenProcessPool as exc:
                pool.shutdown(wait=False, cancel_futures=True)
                pool = None
                got = [_died(record, phase, exc)]
                got_events = []
                if phase != "versions":  # recording versions announces nothing
                    got_events.append(
                        progress.ImagePhaseDone(
                            phase=phase,  # type: ignore[arg-type]
                            name=record.name,
                            ok=False,
                            reason=got[0].reason,
                        )
                    )
            done.extend(got)
            events.extend(got_events)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return done, events


def _died(record: ImageRecord, phase: str, exc: BaseException) -> ImageRecord:
    return record.model_copy(deep=True).fail(
        phase,
        f"the worker process handling this image died ({exc or 'killed'}); "
        "the other images were not affected",
    )


# -- the worker side -------------------------------------------------------------------------

_contexts: dict[str, RunContext] = {}


def _init_worker(environ: dict[str, str]) -> None:
    """The flow process's environment as it is now (the fork server started with the one of
    the first run), so settings, credentials and storage options are the same here."""
    os.environ.clear()
    os.environ.update(environ)
    reload_settings()
    # One OpenCV thread per worker: the workers already fill the cores, and OpenCV's own
    # threads on top of them only wait for each other (its resize and filters on 12 MP).
    import cv2

    cv2.setNumThreads(1)
    # Large arrays from the heap, reused image after image (perf.keep_freed_memory); given
    # back to the system after each batch (_work), so an idle worker does not hold them.
    perf.keep_freed_memory()


def _context(config: RunConfig, settings: Settings) -> RunContext:
    key = config.model_dump_json() + settings.model_dump_json()
    ctx = _contexts.get(key)
    if ctx is None:
        _contexts.clear()  # one run at a time per worker
        ctx = _contexts[key] = config.context(settings)
    return ctx


def _work(
    work: PhaseWork, batch: list[ImageRecord], config: RunConfig, settings: Settings
) -> tuple[list[ImageRecord], list[progress.Event], dict[str, Any]]:
    """In a worker: the batch's records, the progress events they emitted, and the CPU time
    and peak memory of this worker (for the run's performance figures)."""
    events: list[progress.Event] = []
    cpu0 = time.process_time()
    unsubscribe = progress.subscribe(events.append)
    try:
        done = work(batch, config, _context(config, settings))
    finally:
        unsubscribe()
    used = {"cpu_s": time.process_time() - cpu0, "peak_rss": perf.peak_rss_bytes()}
    perf.trim_memory()
    return done, events, used
