"""The process phase: the recipe's steps on each input, reusing stored results by key, with
reading and writing overlapped with the compute."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from retouch.lib import cache, progress, storage
from retouch.lib.errors import RetouchError, reason_of
from retouch.lib.image import Image
from retouch.lib.imageio import decode
from retouch.lib.ops.registry import registry
from retouch.lib.phases.context import RunConfig, RunContext, is_video, result_slot, source_slot
from retouch.lib.phases.keys import sha256_bytes
from retouch.lib.recipe import Recipe
from retouch.lib.records import ImageRecord, OutputInfo
from retouch.lib.settings import get_settings


def process_one(
    record: ImageRecord, ctx: RunContext, weights: dict[str, str], device: str
) -> ImageRecord:
    """Run the recipe's steps on one image, reusing the longest stored prefix of them.

    The result after every slow step (``Operation.checkpoint``) and the final result are
    stored under their prefix keys (``step_keys``), so a re-run that changes only step ``i``
    loads the stored result of the steps before it and runs the rest; an unchanged recipe
    loads the final result and runs nothing. ``ctx.counters`` counts ``steps:<op>`` (steps
    actually run) and ``steps_reused``.
    """
    return process_many([record], ctx, weights, device)[0]


@dataclass
class _Job:
    """One image on its way through :func:`process_many`."""

    record: ImageRecord
    started: float
    keys: list[str] = field(default_factory=list)
    done: int = 0  # leading steps whose stored result is the input
    reused_meta: dict[str, Any] | None = None  # the whole result was stored already
    image: Image | None = None
    error: str | None = None
    writes: list[Future[None]] = field(default_factory=list)
    meta: dict[str, Any] | None = None


def process_many(
    records: list[ImageRecord], ctx: RunContext, weights: dict[str, str], device: str
) -> list[ImageRecord]:
    """:func:`process_one` for each record, with reading and writing overlapped with compute.

    While one image's steps run (a model, usually), the next image is read and decoded on a
    reader thread, and results are encoded and written on a writer thread, so the compute
    never waits for storage. One image is read ahead, so about three images are in memory
    at once, whatever the number of records. A record's progress event is sent once its
    result is safely stored.
    """
    if not records:
        return []
    if any(is_video(r) for r in records):
        from retouch.lib.video import phases

        for record in records:
            if is_video(record):
                phases.process_video(record, ctx, weights, device)
        process_many([r for r in records if not is_video(r)], ctx, weights, device)
        return records
    stored = _stored_steps(ctx.recipe)
    # Overlap pays off when a step is slow (a model); for quick classic steps on small
    # images, handing images between threads costs more than it saves (measured).
    if len(records) == 1 or not ctx.recipe.uses_models():
        for record in records:
            job = _open_job(record, ctx, weights, device, stored)
            _compute(job, ctx, device, stored, _Inline())
            _close_job(job, ctx)
        return records
    with (
        ThreadPoolExecutor(1, thread_name_prefix="retouch-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="retouch-write") as writer,
    ):
        ahead = reader.submit(_open_job, records[0], ctx, weights, device, stored)
        previous: _Job | None = None
        for i in range(len(records)):
            job = ahead.result()
            if i + 1 < len(records):
                ahead = reader.submit(_open_job, records[i + 1], ctx, weights, device, stored)
            _compute(job, ctx, device, stored, writer)
            if previous is not None:
                _close_job(previous, ctx)
            previous = job
        assert previous is not None
        _close_job(previous, ctx)
    return records


class _Inline(Executor):
    """An executor that runs each call at once, in the caller's thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def _open_job(
    record: ImageRecord,
    ctx: RunContext,
    weights: dict[str, str],
    device: str,
    stored: set[int],
) -> _Job:
    """Keys, the stored prefix, and the input pixels (reader thread; never raises)."""
    job = _Job(record=record, started=time.perf_counter())
    if not record.ok:
        return job
    try:
        job.keys = ctx.step_keys(record, weights, device)
        record.result_key = job.keys[-1]
        steps = len(job.keys) - 1
        job.done = _cached_prefix(job.keys, ctx, stored)
        if job.done == steps and (steps > 0 or _has(job.keys[-1], ctx)):
            job.reused_meta = ctx.workspace.result_meta(job.keys[-1])
            ctx.workspace.touch_result(job.keys[-1], job.reused_meta)
        elif job.done > 0:
            job.image = ctx.workspace.load_result(job.keys[job.done])
            ctx.workspace.touch_result(job.keys[job.done])
        else:
            job.image = _read_source(record, ctx)
    except RetouchError as exc:
        job.error = reason_of(exc)
    except Exception as exc:
        job.error = f"{type(exc).__name__}: {exc}"
    return job


def _compute(job: _Job, ctx: RunContext, device: str, stored: set[int], writer: Executor) -> None:
    """Run the job's remaining steps; stored results go to the writer thread."""
    if not job.record.ok or job.error is not None:
        return
    steps = len(job.keys) - 1
    if job.reused_meta is not None:
        job.record.reused = True
        ctx.count("steps_reused", steps)
        job.meta = job.reused_meta
        return
    if job.done > 0:
        ctx.count("steps_reused", job.done)
    keys = job.keys

    def store(number: int, result: Image) -> None:
        if number in stored:
            job.writes.append(writer.submit(ctx.workspace.save_result, keys[number], result))

    calls_before = ctx.counters.get("model_calls", 0)
    try:
        assert job.image is not None
        image = apply_steps(
            job.image,
            job.record.name,
            ctx,
            device,
            start=job.done,
            on_step=store,
            uri=job.record.uri,
        )
        if not ctx.recipe.steps:
            job.writes.append(writer.submit(ctx.workspace.save_result, keys[-1], image))
        if ctx.handed is not None:
            ctx.handed[result_slot(keys[-1])] = image
    except RetouchError as exc:
        job.error = reason_of(exc)
        return
    except Exception as exc:  # e.g. a model running out of memory on this image only
        job.error = f"{type(exc).__name__}: {exc}"
        return
    finally:
        job.image = None  # the input is not needed any more
    job.record.model_calls = ctx.counters.get("model_calls", 0) - calls_before
    job.meta = {
        "width": image.width,
        "height": image.height,
        "bit_depth": image.bit_depth,
        "alpha": image.alpha is not None,
        "is_gray": image.is_gray,
    }


def _close_job(job: _Job, ctx: RunContext) -> None:
    """Wait for the job's writes, then settle its record and report it."""
    record = job.record
    for write in job.writes:
        try:
            write.result()
        except RetouchError as exc:
            job.error = job.error or f"could not store the result: {reason_of(exc)}"
        except Exception as exc:
            job.error = job.error or f"could not store the result: {type(exc).__name__}: {exc}"
    if record.ok:
        if job.error is not None:
            record.fail("process", job.error)
        elif job.meta is not None:
            record.output = OutputInfo(
                width=job.meta["width"],
                height=job.meta["height"],
                bit_depth=job.meta["bit_depth"],
                alpha=job.meta["alpha"],
                gray=job.meta["is_gray"],
            )
        record.timings["process"] = round(time.perf_counter() - job.started, 4)
    emit_processed(record)


def emit_processed(record: ImageRecord) -> None:
    """Announce that ``record`` left the process phase (done, reused or failed)."""
    progress.emit(
        progress.ImagePhaseDone(
            phase="process",
            name=record.name,
            ok=record.ok,
            reused=record.reused,
            reason=record.reason,
        )
    )


def _has(key: str, ctx: RunContext) -> bool:
    return not ctx.refresh and ctx.workspace.has_result(key)


def _stored_steps(recipe: Recipe) -> set[int]:
    """The 1-based step numbers whose result is stored: every checkpointing step and the last."""
    ops = registry()
    last = len(recipe.steps)
    return {
        n
        for n, step in enumerate(recipe.steps, start=1)
        if n == last or ops.get(step.op).checkpoint
    }


def _cached_prefix(keys: list[str], ctx: RunContext, stored: set[int]) -> int:
    """How many leading steps have a stored result (0 when none, or with ``refresh``)."""
    for done in range(len(keys) - 1, 0, -1):
        if done in stored and _has(keys[done], ctx):
            return done
    return 0


def _read_source(record: ImageRecord, ctx: RunContext) -> Image:
    if ctx.handed is not None:
        prepared = ctx.handed.get(source_slot(record))
        if prepared is not None:  # decoded by this image's prepare phase, just now
            return prepared
    data = storage.read_bytes(record.uri, max_bytes=ctx.settings.max_file_bytes)
    if sha256_bytes(data) != record.sha256:
        raise RetouchError(
            "the file changed while the run was going on; run again to process the new version"
        )
    return decode(data, record.name, pixel_limit=ctx.settings.pixel_limit)


def apply_steps(
    image: Image,
    name: str,
    ctx: RunContext,
    device: str,
    *,
    start: int = 0,
    on_step: Callable[[int, Image], None] | None = None,
    uri: str = "",
) -> Image:
    """Apply the recipe's steps after the first ``start`` in order; errors name the step.

    ``image`` is the input of step ``start + 1`` (pixels HxWx3 BGR uint8|uint16); ``uri``
    is where it was read from (masks kept beside it are found there).
    ``on_step(number, result)`` is called after each step (1-based number), e.g. to store it.
    Each step run counts ``steps:<op>`` in ``ctx.counters`` and emits a ``step`` progress event.
    """
    op_ctx = ctx.op_context(name, device, uri)
    for number, step in enumerate(ctx.recipe.steps, start=1):
        if number <= start:
            continue
        op = registry().get(step.op)
        try:
            image = op(image, step.parsed(), op_ctx)
        except RetouchError as exc:
            raise RetouchError(f"step {number} ({step.op}): {reason_of(exc)}") from exc
        except Exception as exc:
            raise RetouchError(f"step {number} ({step.op}): {type(exc).__name__}: {exc}") from exc
        ctx.count(f"steps:{step.op}")
        progress.emit(progress.StepStarted(name=name, number=number, op=step.op))
        if on_step is not None:
            on_step(number, image)
    return image


def bound_results(config: RunConfig, keep: list[str]) -> int:
    """Evict least-recently-used results beyond the cache size setting, never those in
    ``keep`` (the run's own); returns bytes freed."""
    max_bytes = get_settings().cache_max_bytes
    if max_bytes is None:
        return 0
    return cache.enforce_limit(config.context().workspace, max_bytes, keep).freed
