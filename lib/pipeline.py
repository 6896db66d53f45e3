"""The per-image work of the four phases, as plain functions over small records.

Each function takes an ``ImageRecord`` and returns it updated. A problem with one image
marks that record failed with a reason and never raises, so one bad file can't cost the
others. Only errors that concern the whole run (bad recipe, missing model) raise.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from . import analysis, naming, progress, storage
from .errors import RecipeError, RetouchError
from .image import Image, resize_plane
from .imageio import (
    decode,
    describe,
    encode,
    format_extension,
    format_from_name,
    format_keeping,
    format_label,
    holds_16bit,
    holds_alpha,
    probe,
)
from .masks import BesideMasks, MaskSource
from .ops.base import OpContext
from .ops.registry import registry
from .recipe import ExportProfile, Recipe
from .records import ImageRecord, parse_tags
from .settings import Settings, get_settings
from .sources import SourceItem, extension, is_video_name
from .workspace import Workspace

ANALYSIS_MAX_SIDE = 1024
REVIEW_MAX_SIDE = 512
THUMB_MAX_SIDE = 480


@dataclass
class RunContext:
    """What every phase of one run needs; rebuilt cheaply inside each task from plain values."""

    run_id: str
    workspace: Workspace
    recipe: Recipe
    masks_dir: str | None = None
    settings: Settings = field(default_factory=get_settings)
    refresh: bool = False
    counters: dict[str, int] = field(default_factory=dict)
    _mask_sources: dict[str, MaskSource] = field(default_factory=dict)
    _beside: BesideMasks | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def mask_folder(self, folder: str) -> MaskSource:
        """The masks of ``folder``, listed once for this context (i.e. once per task)."""
        with self._lock:
            if folder not in self._mask_sources:
                self._mask_sources[folder] = MaskSource(folder, self.settings.pixel_limit)
            return self._mask_sources[folder]

    def masks(self) -> MaskSource | None:
        return self.mask_folder(self.masks_dir) if self.masks_dir else None

    def beside(self) -> BesideMasks:
        """The masks kept beside the images (each folder listed once for this context)."""
        with self._lock:
            if self._beside is None:
                self._beside = BesideMasks(self.settings.pixel_limit)
            return self._beside

    def op_context(self, name: str, device: str, uri: str = "") -> OpContext:
        from .models.pool import default_pool

        return OpContext(
            name=name,
            device=device,
            pool=default_pool(),
            masks=self.masks(),
            mask_folder=self.mask_folder,
            uri=uri,
            beside=self.beside(),
            counters=self.counters,
        )

    def image_key(self, record: ImageRecord, weights: dict[str, str], device: str) -> str:
        """The result key of one prepared image (or video) under this run's recipe."""
        if is_video(record):
            from .video import phases

            return phases.video_key(record, self, weights, device)
        return self.step_keys(record, weights, device)[-1]

    def step_keys(self, record: ImageRecord, weights: dict[str, str], device: str) -> list[str]:
        """Keys of the image after 0, 1, ..., n steps of the recipe (the last is its result)."""
        assert record.sha256 is not None
        op_ctx = self.op_context(record.name, device, record.uri)
        inputs = [
            registry().get(step.op).key_inputs(step.parsed(), op_ctx) for step in self.recipe.steps
        ]
        return step_keys(record.sha256, self.recipe, weights, inputs)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] = self.counters.get(key, 0) + n


# -- keys ------------------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def weights_ids(recipe: Recipe) -> dict[str, str]:
    """Identity of every weight file the recipe uses (resolving them; raises if missing)."""
    from .models import fetch

    return {name: fetch.weights_id(name, fetch.resolve(name)) for name in recipe.models()}


def result_key(
    image_sha: str, recipe: Recipe, weights: dict[str, str], inputs: list[Any] | None = None
) -> str:
    """Same image bytes, same steps (with op versions), same weights and same per-image inputs
    of the steps (e.g. a mask): same key, same result."""
    return _prefix_key(image_sha, recipe.canonical_steps(), weights, inputs or [])


def step_keys(
    image_sha: str, recipe: Recipe, weights: dict[str, str], inputs: list[Any] | None = None
) -> list[str]:
    """The key of the image after each prefix of the recipe: ``keys[i]`` covers steps
    ``1..i`` (their canonical parameters and op versions, the weights those steps use, and
    their per-image inputs), so ``keys[-1] == result_key(...)`` and changing step ``i``
    leaves ``keys[:i]`` as they were: those intermediates are reused."""
    canonical = recipe.canonical_steps()
    inputs = list(inputs or [None] * len(canonical))
    used: set[str] = set()
    keys = [_prefix_key(image_sha, [], {}, [])]
    for i, step in enumerate(recipe.steps, start=1):
        used.update(registry().get(step.op).models(step.parsed()))
        subset = {name: w for name, w in weights.items() if name in used}
        keys.append(_prefix_key(image_sha, canonical[:i], subset, inputs[:i]))
    return keys


def _prefix_key(
    image_sha: str, steps: list[dict[str, Any]], weights: dict[str, str], inputs: list[Any]
) -> str:
    payload: dict[str, Any] = {"image": image_sha, "steps": steps, "weights": weights}
    if inputs and any(i is not None for i in inputs):
        payload["inputs"] = inputs
    return sha256_bytes(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())


# -- prepare -----------------------------------------------------------------------------------


def _small(image: Image, max_side: int) -> Image:
    scale = max_side / max(image.width, image.height)
    if scale >= 1:
        return image
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    return image.with_pixels(resize_plane(image.pixels, w, h))


def new_record(item: SourceItem, index: int) -> ImageRecord:
    return ImageRecord(index=index, source=storage.redact(item.uri), name=item.name, uri=item.uri)


def prepare_one(record: ImageRecord, settings: Settings) -> ImageRecord:
    """Read, fingerprint, validate (full decode) and analyse one image (or video)."""
    if is_video(record):
        from .video import phases

        return phases.prepare_video(record, settings)
    started = time.perf_counter()
    try:
        data = storage.read_bytes(record.uri, max_bytes=settings.max_file_bytes)
        record.bytes = len(data)
        record.sha256 = sha256_bytes(data)
        info = probe(data, record.name, pixel_limit=settings.pixel_limit)
        image = decode(data, record.name, pixel_limit=settings.pixel_limit)
        record.input = {
            "format": info.format,
            "width": image.width,
            "height": image.height,
            "bit_depth": image.bit_depth,
            "alpha": image.alpha is not None,
            "gray": image.is_gray,
            "frames": info.frames,
        }
        if info.frames > 1:  # animations and multi-page files: the first frame is the image
            record.problems.append(f"only the first of {info.frames} frames (pages) was processed")
        found = analysis.analyse(_small(image, ANALYSIS_MAX_SIDE))
        record.analysis = _jsonable(found)
        record.recommendations = list(analysis.recommend(found))
    except RetouchError as exc:
        record.fail("prepare", _reason(exc))
    except Exception as exc:  # an unexpected decoder failure is still this file's problem
        record.fail("prepare", f"could not read image: {type(exc).__name__}: {exc}")
    record.timings["prepare"] = round(time.perf_counter() - started, 4)
    progress.emit(
        progress.ImagePhaseDone(
            phase="prepare", name=record.name, ok=record.ok, reason=record.reason
        )
    )
    return record


# -- process -----------------------------------------------------------------------------------


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
        from .video import phases

        for record in records:
            if is_video(record):
                phases.process_video(record, ctx, weights, device)
        process_many([r for r in records if not is_video(r)], ctx, weights, device)
        return records
    stored = _stored_steps(ctx.recipe)
    # Overlap pays off when a step is slow (a model); for quick classic steps on small
    # images, handing images between threads costs more than it saves (measured).
    if len(records) == 1 or not ctx.recipe.models():
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
        job.error = _reason(exc)
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
    except RetouchError as exc:
        job.error = _reason(exc)
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
            job.error = job.error or f"could not store the result: {_reason(exc)}"
        except Exception as exc:
            job.error = job.error or f"could not store the result: {type(exc).__name__}: {exc}"
    if record.ok:
        if job.error is not None:
            record.fail("process", job.error)
        elif job.meta is not None:
            record.output = {
                "width": job.meta["width"],
                "height": job.meta["height"],
                "bit_depth": job.meta["bit_depth"],
                "alpha": job.meta["alpha"],
                "gray": job.meta["is_gray"],
            }
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
            raise RetouchError(f"step {number} ({step.op}): {_reason(exc)}") from exc
        except Exception as exc:
            raise RetouchError(f"step {number} ({step.op}): {type(exc).__name__}: {exc}") from exc
        ctx.count(f"steps:{step.op}")
        progress.emit(progress.StepStarted(name=name, number=number, op=step.op))
        if on_step is not None:
            on_step(number, image)
    return image


# -- review ------------------------------------------------------------------------------------


def filled_area(recipe: Recipe, ctx: OpContext, width: int, height: int) -> np.ndarray | None:
    """What the recipe's inpaint steps fill in the image ``ctx.name`` of ``width`` x
    ``height`` (their rectangles and mask files, grown as they grow them), or None."""
    from .ops.inpaint import InpaintParams
    from .ops.inpaint import filled_area as step_area

    out: np.ndarray | None = None
    for step in recipe.steps:
        params = step.parsed()
        if step.op != "inpaint" or not isinstance(params, InpaintParams):
            continue
        area = step_area(params, ctx, width, height)
        if area is not None:
            out = area if out is None else np.maximum(out, area)
    return out


def score_result(
    before: Image,
    after: Image,
    recipe: Recipe,
    *,
    faces_found: int = 0,
    ctx: OpContext | None = None,
) -> tuple[dict[str, Any], Image, Image]:
    """Score a full-size result against its full-size input, as every surface shows it.

    The one scoring path of a run's review, ``retouch preview`` and ``tune``: both images
    are reduced to ``REVIEW_MAX_SIDE`` and compared (:func:`analysis.quality_score`), and
    tile seams are looked for on the full-size result when the recipe tiles an upscale.
    Areas the recipe inpaints (found through ``ctx``: the image's name and mask folders)
    are judged as fills, not as changes to the picture.

    Returns:
        The scores, and the reduced input and result (for thumbnails).
    """
    before_s, after_s = _small(before, REVIEW_MAX_SIDE), _small(after, REVIEW_MAX_SIDE)
    period = seam_period(recipe)
    scores = analysis.quality_score(
        before_s,
        after_s,
        faces_found=faces_found,
        faces_restored=any(step.op == "restore_faces" for step in recipe.steps),
        # Seams are one pixel wide: look for them on the full-size result, on the grid.
        seams=analysis.tile_seams(after, period=period) if period else None,
        filled=filled_area(recipe, ctx or OpContext(), before.width, before.height),
    )
    return scores, before_s, after_s


def review_one(record: ImageRecord, ctx: RunContext) -> ImageRecord:
    """Score the result against its input and write before/after thumbnails for the report."""
    if is_video(record):
        from .video import phases

        return phases.review_video(record, ctx)
    if not record.ok or record.result_key is None:
        progress.emit(progress.ImagePhaseDone(phase="review", name=record.name, ok=record.ok))
        return record
    with reviewing(record, ctx):
        before = decode(
            storage.read_bytes(record.uri), record.name, pixel_limit=ctx.settings.pixel_limit
        )
        after = ctx.workspace.load_result(record.result_key)
        review_pair(record, ctx, before, after)
    return record


@contextmanager
def reviewing(record: ImageRecord, ctx: RunContext) -> Iterator[None]:
    """The review of one input: a problem inside it is noted on the record but does not
    withhold a result that was produced; the time is recorded and the review announced."""
    started = time.perf_counter()
    try:
        yield
    except RetouchError as exc:
        record.problems.append(f"review failed: {_reason(exc)}")
    except Exception as exc:
        record.problems.append(f"review failed: {type(exc).__name__}: {exc}")
    record.timings["review"] = round(time.perf_counter() - started, 4)
    emit_reviewed(record, ctx)


def score_pair(
    record: ImageRecord, ctx: RunContext, before: Image, after: Image
) -> tuple[Image, Image]:
    """Score ``after`` against ``before`` into ``record.scores`` and ``problems``; returns
    the two images at the size they were compared (for thumbnails)."""
    scores, before_s, after_s = score_result(
        before,
        after,
        ctx.recipe,
        faces_found=int((record.analysis.get("faces") or {}).get("count") or 0),
        ctx=ctx.op_context(record.name, "cpu", record.uri),
    )
    record.scores = _jsonable({k: v for k, v in scores.items() if k != "problems"})
    # Faces are counted at the input's scale on both sides (at most 320 px, as in the
    # prepare phase), so a different count means different content, not a detector
    # that sees more in a 4x larger picture (and an upscaled result costs no more).
    record.scores["faces"] = {
        "before": int((record.analysis.get("faces") or {}).get("count") or 0),
        "after": len(
            analysis.detect_faces(
                after_s.pixels, max_side=min(320, max(before.width, before.height))
            )
        ),
    }
    record.problems += [str(p) for p in scores.get("problems", [])]
    return before_s, after_s


def review_pair(record: ImageRecord, ctx: RunContext, before: Image, after: Image) -> None:
    """:func:`score_pair`, then the report's thumbnails (an image and its result, or a
    video's sampled frame)."""
    before_s, after_s = score_pair(record, ctx, before, after)
    crop_before, crop_after = detail_crops(before, after)
    views = (
        ("before", _small(before_s, THUMB_MAX_SIDE), 82),
        ("after", _small(after_s, THUMB_MAX_SIDE), 82),
        ("crop-before", crop_before, 90),
        ("crop-after", crop_after, 90),
    )
    for label, view, quality in views:
        view.info = {}
        storage.write_bytes(
            thumb_path(ctx, record, label),
            encode(view, "jpg", quality=quality, keep_metadata=False),
            durable=False,  # previews, written again by a re-run
        )


def emit_reviewed(record: ImageRecord, ctx: RunContext) -> None:
    progress.emit(
        progress.ImagePhaseDone(
            phase="review",
            name=record.name,
            ok=record.ok,
            index=record.index,
            score=record.scores.get("score"),
            score_before=record.scores.get("score_before"),
            verdict=record.scores.get("verdict"),
            # Where the before/after previews were written (a front end shows them at once).
            thumbs={label: thumb_path(ctx, record, label) for label in THUMB_LABELS},
        )
    )


THUMB_LABELS = ("before", "after", "crop-before", "crop-after")
CROP_SIDE = 320


def detail_crops(before: Image, after: Image) -> tuple[Image, Image]:
    """The same region of input and result at the result's full resolution (100% zoom).

    The region (at most 320x320 result pixels) is centred on the most detailed part of the
    result; the input's region is enlarged to the same size with cubic interpolation, which
    is what the image would look like without the recipe.
    """
    side_w, side_h = min(CROP_SIDE, after.width), min(CROP_SIDE, after.height)
    dmap = analysis.detail_map(after.pixels)
    my, mx = np.unravel_index(int(np.argmax(dmap)), dmap.shape)
    cx = int((mx + 0.5) * after.width / dmap.shape[1])
    cy = int((my + 0.5) * after.height / dmap.shape[0])
    x0 = min(max(0, cx - side_w // 2), after.width - side_w)
    y0 = min(max(0, cy - side_h // 2), after.height - side_h)
    # Alpha is left out: the crops become JPEG previews.
    crop_after = replace(
        after, pixels=after.pixels[y0 : y0 + side_h, x0 : x0 + side_w].copy(), alpha=None
    )
    fx, fy = before.width / after.width, before.height / after.height
    bx0, by0 = int(x0 * fx), int(y0 * fy)
    bx1 = max(bx0 + 1, min(before.width, round((x0 + side_w) * fx)))
    by1 = max(by0 + 1, min(before.height, round((y0 + side_h) * fy)))
    region = before.pixels[by0:by1, bx0:bx1]
    crop_before = replace(
        before, pixels=resize_plane(np.ascontiguousarray(region), side_w, side_h), alpha=None
    )
    return crop_before, crop_after


def seam_period(recipe: Recipe) -> int | None:
    """The tile grid of the result in output pixels, when the last size-changing step is a
    tiled upscale (where seams could appear); None otherwise."""
    period: int | None = None
    for step in recipe.steps:
        if step.op == "upscale":
            params = step.parsed()
            if params.tile > 0:
                from .models.specs import get_spec

                scale = params.outscale or get_spec(params.model).scale
                period = round(params.tile * scale) if float(scale).is_integer() else None
            else:
                period = None
        elif step.op == "fit":
            period = None
    return period


def thumb_path(ctx: RunContext, record: ImageRecord, label: str) -> str:
    return ctx.workspace.run_path(ctx.run_id, "thumbs", f"{record.index:06d}-{label}.jpg")


# -- export ------------------------------------------------------------------------------------


def output_format(record: ImageRecord, recipe: Recipe, profile: ExportProfile | None = None) -> str:
    """The format ``profile`` (by default the export's first profile) writes ``record`` in.

    That is ``profile.format`` ("same": the input's format), except where the profile keeps
    what that format can't hold: with ``alpha = "keep"`` an input with alpha, and with
    ``depth = "keep"`` a 16-bit input, go to a format that holds it (the input's own format
    when it can, else PNG; see :func:`retouch.lib.imageio.format_keeping`). Decided from the
    record's ``input`` (known before the export, so names are planned with it).
    """
    profile = profile or recipe.export.effective_profiles()[0]
    sniffed = record.input.get("format")
    return format_keeping(
        format_from_name(profile.format, sniffed),
        sniffed,
        alpha=profile.alpha == "keep" and bool(record.input.get("alpha")),
        sixteen_bit=profile.depth == "keep" and record.input.get("bit_depth") == 16,
    )


def output_extension(record: ImageRecord, recipe: Recipe, profile: ExportProfile) -> str:
    """The file extension ``record``'s output under ``profile`` gets (a video's: its output
    container, see :func:`retouch.lib.video.media.output_container`)."""
    if is_video(record):
        from .video.media import output_container

        video = recipe.export.video
        return output_container(extension(record.name), video.container, video.codec)[0]
    return format_extension(output_format(record, recipe, profile))


_COLOUR_NAMES = {"#ffffff": "white", "#000000": "black"}
# Notes the export adds to ``record.problems`` start so; a re-export replaces them.
_NOTE_PREFIXES = ("export: ", "export profile '")


def _note_prefix(profile: ExportProfile, several: bool) -> str:
    return f"export profile {profile.name!r}: " if several else "export: "


def _setting(profile: ExportProfile, several: bool, key: str) -> str:
    """How a user sets ``key`` of ``profile`` (``--set`` syntax)."""
    return f"export.profiles.{profile.name}.{key}" if several else f"export.{key}"


def export_notes(
    record: ImageRecord, image: Image, fmt: str, profile: ExportProfile, *, several: bool = False
) -> list[str]:
    """What a user must be told about writing ``image`` (the result, shaped by ``profile``)
    of ``record`` as ``fmt``: each lossy change, and a format other than the one asked.

    - transparency flattened (onto which colour) where ``fmt`` has no alpha; an alpha
      channel that is fully opaque is said to be dropped with no pixel changed;
    - 16 bits reduced to 8 where ``fmt`` holds 8;
    - the format changed from ``profile.format`` to keep transparency or 16 bits
      (``alpha``/``depth = "keep"``).

    Each note says what happened, why, and the setting that avoids it.
    """
    sniffed = record.input.get("format")
    asked = format_from_name(profile.format, sniffed)
    label = format_label(fmt)
    notes: list[str] = []
    if fmt != asked:
        kept = []
        if image.alpha is not None and not holds_alpha(asked):
            kept.append("transparency")
        if image.bit_depth == 16 and not holds_16bit(asked):
            kept.append("16 bits")
        if kept:
            keys = [
                f"{_setting(profile, several, key)}=keep"
                for key, what in (("alpha", "transparency"), ("depth", "16 bits"))
                if what in kept
            ]
            notes.append(
                f"delivered as {label}, not {format_label(asked)}, to keep its "
                f"{' and '.join(kept)} ({', '.join(keys)})"
            )
    if image.alpha is not None and not holds_alpha(fmt):
        full = 65535 if image.alpha.dtype == np.uint16 else 255
        if bool((image.alpha < full).any()):
            hex_colour = "#" + profile.background.lstrip("#").lower()
            name = _COLOUR_NAMES.get(hex_colour)
            onto = f"{name} ({hex_colour})" if name else hex_colour
            better = format_keeping(fmt, sniffed, alpha=True)
            if profile.alpha == "flatten":
                fix = (
                    f"{_setting(profile, several, 'alpha')}=keep delivers it as "
                    f"{format_label(better)} with its transparency"
                )
            else:
                fix = f"{_setting(profile, several, 'format')}={better} keeps it"
            notes.append(f"transparency flattened onto {onto}: {label} has no alpha channel; {fix}")
        else:
            notes.append(
                f"alpha channel dropped (fully opaque, no pixel changed): {label} has no "
                "alpha channel"
            )
    if image.bit_depth == 16 and not holds_16bit(fmt):
        better = format_keeping(fmt, sniffed, sixteen_bit=True)
        if profile.depth == "reduce":
            fix = (
                f"{_setting(profile, several, 'depth')}=keep delivers it as "
                f"{format_label(better)} with 16 bits"
            )
        else:
            fix = f"{_setting(profile, several, 'format')}={better} keeps them"
        notes.append(f"16-bit reduced to 8-bit: {label} holds 8 bits per channel; {fix}")
    return notes


def name_entries(
    records: list[ImageRecord],
    recipe: Recipe,
    profile: ExportProfile | None = None,
    *,
    date: str | None = None,
) -> list[dict[str, Any]]:
    """What the naming template of ``profile`` (default: the first) may use, per record."""
    profile = profile or recipe.export.effective_profiles()[0]
    day = date or datetime.now(UTC).date().isoformat()
    return [
        {
            "stem": PurePosixPath(r.name).stem,
            "folder": _folder(r.name),
            "ext": output_extension(r, recipe, profile),
            "index": r.index,
            "preset": recipe.name,
            "profile": profile.name,
            "date": day,
            "score": r.scores.get("score"),
            "verdict": r.scores.get("verdict"),
            "group": r.category("group"),
            "tag": r.category("tag"),
        }
        for r in records
    ]


def assign_outputs(records: list[ImageRecord], recipe: Recipe, *, date: str | None = None) -> None:
    """Name every output of ``records`` (the deliverable ones), profile by profile.

    Sets ``record.tags`` (from ``export.tags``), ``record.outputs`` (one planned
    ``{"profile", "name"}`` per profile) and ``record.output_name`` (the first). Names are
    unique within a profile; with several profiles each one's outputs sit in a folder named
    after it (``web/a.jpg``, ``archive/a.tif``), with one profile at the top as before.

    Raises:
        RecipeError: a bad name template, an unreadable tag file or watermark file.
    """
    from . import watermark

    export = recipe.export
    profiles = export.effective_profiles()
    for profile in profiles:
        if profile.watermark is not None:
            watermark.check_watermark(profile.watermark)
    tags = read_tags(export.tags) if export.tags else {}
    for r in records:
        tag = tags.get(r.name, tags.get(PurePosixPath(r.name).name))
        r.tags = [tag] if tag else []
        r.outputs = []
    several = len(profiles) > 1
    for profile in profiles:
        names = naming.render_names(
            name_entries(records, recipe, profile, date=date),
            profile.name_template,
            index_width=profile.index_width,
        )
        for r, name in zip(records, names, strict=True):
            member = f"{profile.name}/{name}" if several else name
            r.outputs.append({"profile": profile.name, "name": member})
    for r in records:
        r.output_name = r.outputs[0]["name"] if r.outputs else None
        r.output_sha256 = None


def read_tags(uri: str) -> dict[str, str]:
    """The user tag file at ``uri`` (see :func:`retouch.lib.records.parse_tags`).

    Raises:
        RecipeError: the file cannot be read or parsed.
    """
    try:
        text = storage.read_bytes(uri, max_bytes=16 * 1024 * 1024).decode("utf-8-sig")
        return parse_tags(text, storage.redact(uri))
    except (RetouchError, UnicodeDecodeError, ValueError) as exc:
        raise RecipeError(f"export.tags: {exc}") from None


def _planned(record: ImageRecord, recipe: Recipe) -> list[tuple[ExportProfile, str]]:
    profiles = recipe.export.effective_profiles()
    planned = record.outputs
    if (
        len(planned) == len(profiles)
        and planned[0].get("name") == record.output_name
        and [o.get("profile") for o in planned] == [p.name for p in profiles]
    ):
        return [(p, str(o["name"])) for p, o in zip(profiles, planned, strict=True)]
    # Named by a caller that only set output_name: the first profile alone.
    return [(profiles[0], str(record.output_name))]


def export_one(record: ImageRecord, ctx: RunContext) -> ImageRecord:
    """Encode one result once per export profile into the run's staging area.

    Each profile resizes, converts the colour, marks and encodes the stored result (pixels
    HxWx3 BGR uint8/uint16) its own way; ``record.outputs`` then lists every file written
    with its sha256 and what the file really holds (format, width, height, bit_depth,
    alpha, gray: read back from the encoded bytes, never copied from the input), and
    ``output_sha256`` is the first one's; ``record.output`` takes those fields of the first
    file. Each lossy change (transparency flattened, 16 bits reduced) and each format
    changed to keep them is stated in the output's ``notes`` and in ``record.problems``
    (see :func:`export_notes`). A failure in any profile fails the image, so the delivery
    never holds part of an image's outputs.
    """
    from . import watermark

    if not record.ok or record.result_key is None or record.output_name is None:
        progress.emit(
            progress.ImagePhaseDone(
                phase="export", name=record.name, ok=False, reason=record.reason
            )
        )
        return record
    if is_video(record):
        from .video import phases

        return phases.export_video(record, ctx)
    with exporting(record):
        if not ctx.workspace.has_result(record.result_key):
            raise RetouchError(
                f"result {record.result_key[:12]} is missing from the workspace {ctx.workspace.root}; "
                "run again with --refresh to recompute it"
            )
        image = ctx.workspace.load_result(record.result_key)
        # An earlier export's notes (a re-delivery) give way to this one's.
        record.problems = [p for p in record.problems if not p.startswith(_NOTE_PREFIXES)]
        planned = _planned(record, ctx.recipe)
        several = len(ctx.recipe.export.effective_profiles()) > 1
        outputs: list[dict[str, Any]] = []
        said: list[str] = []
        for profile, member in planned:
            fmt = output_format(record, ctx.recipe, profile)
            try:
                shaped = watermark.apply_profile(image, profile)
                notes = export_notes(record, shaped, fmt, profile, several=several)
                data = encode(
                    shaped,
                    fmt,
                    quality=profile.quality,
                    keep_metadata=profile.keep_metadata,
                    background=profile.background,
                )
                held = describe(data)  # what the file really is, read from its own bytes
            except RetouchError as exc:
                raise RetouchError(f"export profile {profile.name!r}: {_reason(exc)}") from exc
            if held["format"] != fmt:  # the name's extension would lie
                raise RetouchError(
                    f"export profile {profile.name!r}: encoded {held['format']}, not {fmt}"
                )
            # Staged for the archive, which is the durable copy.
            storage.write_bytes(staging_path(ctx, member), data, durable=False)
            outputs.append(
                {
                    "profile": profile.name,
                    "name": member,
                    **held,
                    "bytes": len(data),
                    "sha256": sha256_bytes(data),
                    "notes": notes,
                }
            )
            said += [_note_prefix(profile, several) + n for n in notes]
        record.outputs = outputs
        record.problems += [n for n in dict.fromkeys(said) if n not in record.problems]
        record.output_sha256 = str(outputs[0]["sha256"])
        # ``output`` describes the delivered file (the first one with several profiles).
        record.output.update(
            {
                key: outputs[0][key]
                for key in ("format", "width", "height", "bit_depth", "alpha", "gray", "bytes")
            }
        )
        record.status = "ok"
    return record


@contextmanager
def exporting(record: ImageRecord) -> Iterator[None]:
    """The export of one input: an error fails it (and then names no delivered file, as it
    is not in the ZIP); the time is recorded and the export announced."""
    started = time.perf_counter()
    try:
        yield
    except RetouchError as exc:
        record.fail("export", _reason(exc))
    except Exception as exc:
        record.fail("export", f"{type(exc).__name__}: {exc}")
    if not record.ok:  # not in the ZIP, so the manifest must not name a file for it
        record.output_name = record.output_sha256 = None
        record.outputs = []
    record.timings["export"] = round(time.perf_counter() - started, 4)
    progress.emit(
        progress.ImagePhaseDone(
            phase="export", name=record.name, ok=record.ok, output_name=record.output_name
        )
    )


def _folder(name: str) -> str:
    """The source sub-folder of an image ("" at the top level), for the {folder} placeholder."""
    parent = str(PurePosixPath(name).parent)
    return "" if parent == "." else parent


def staging_path(ctx: RunContext, output_name: str) -> str:
    return ctx.workspace.run_path(ctx.run_id, "export", *output_name.split("/"))


# -- helpers -----------------------------------------------------------------------------------


def is_video(record: ImageRecord) -> bool:
    """Whether ``record`` is a video (by its name's extension; see ``lib/video``)."""
    return is_video_name(record.name)


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else str(exc)


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays and tuples into plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float):
        return round(value, 4)
    return value
