"""The review phase: each result scored against its input (one scoring path for runs,
``preview`` and ``tune``), and the report's before/after thumbnails and detail crops."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from fractions import Fraction
from typing import Any

import numpy as np

from retouch.lib import progress, storage
from retouch.lib.errors import RetouchError, reason_of
from retouch.lib.image import Image, downscaled, resize_plane
from retouch.lib.imageio import decode, encode
from retouch.lib.ops.base import OpContext
from retouch.lib.ops.registry import registry
from retouch.lib.phases.context import RunContext, is_video, jsonable, result_slot, source_slot
from retouch.lib.quality.faces import detect_faces
from retouch.lib.quality.measures import detail_map, tile_seams
from retouch.lib.quality.score import quality_score
from retouch.lib.recipe import Recipe
from retouch.lib.records import ImageRecord, Scores

REVIEW_MAX_SIDE = 512
THUMB_MAX_SIDE = 480


def filled_area(recipe: Recipe, ctx: OpContext, width: int, height: int) -> np.ndarray | None:
    """What the recipe's inpaint steps fill in the image ``ctx.name`` of ``width`` x
    ``height`` (their rectangles and mask files, grown as they grow them), or None."""
    from retouch.lib.ops.inpaint import InpaintParams
    from retouch.lib.ops.inpaint import filled_area as step_area

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
    are reduced to ``REVIEW_MAX_SIDE`` and compared
    (:func:`~retouch.lib.quality.score.quality_score`), and tile seams are looked for on the
    full-size result when the recipe tiles an upscale.
    Areas the recipe inpaints (found through ``ctx``: the image's name and mask folders)
    are judged as fills, not as changes to the picture.

    Returns:
        The scores, and the reduced input and result (for thumbnails).
    """
    before_s, after_s = downscaled(before, REVIEW_MAX_SIDE), downscaled(after, REVIEW_MAX_SIDE)
    period = seam_period(recipe)
    scores = quality_score(
        before_s,
        after_s,
        faces_found=faces_found,
        faces_restored=any(step.op == "restore_faces" for step in recipe.steps),
        # Seams are one pixel wide: look for them on the full-size result, on the grid.
        seams=tile_seams(after, period=period) if period else None,
        filled=filled_area(recipe, ctx or OpContext(), before.width, before.height),
        redrawn=any(registry().get(step.op).redraws for step in recipe.steps),
    )
    return scores, before_s, after_s


def review_one(record: ImageRecord, ctx: RunContext) -> ImageRecord:
    """Score the result against its input and write before/after thumbnails for the report."""
    if is_video(record):
        from retouch.lib.video.review import review_video

        return review_video(record, ctx)
    if not record.ok or record.result_key is None:
        progress.emit(progress.ImagePhaseDone(phase="review", name=record.name, ok=record.ok))
        return record
    handed = ctx.handed if ctx.handed is not None else {}
    before = handed.pop(source_slot(record), None)
    after = handed.pop(result_slot(record.result_key), None)
    with reviewing(record, ctx):
        if before is None:
            before = decode(
                storage.read_bytes(record.uri), record.name, pixel_limit=ctx.settings.pixel_limit
            )
        if after is None:
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
        record.problems.append(f"review failed: {reason_of(exc)}")
    except Exception as exc:
        record.problems.append(f"review failed: {type(exc).__name__}: {exc}")
    record.timings["review"] = round(time.perf_counter() - started, 4)
    emit_reviewed(record, ctx)


def score_pair(
    record: ImageRecord,
    ctx: RunContext,
    before: Image,
    after: Image,
    frame_time: Fraction | None = None,
) -> tuple[Image, Image]:
    """Score ``after`` against ``before`` into ``record.scores`` and ``problems``; returns
    the two images at the size they were compared (for thumbnails). ``frame_time``: for a
    video's frame, its time from the clip's first frame (where a mask video is read)."""
    op_ctx = ctx.op_context(record.name, "cpu", record.uri)
    op_ctx.frame_time = frame_time
    try:
        scores, before_s, after_s = score_result(
            before, after, ctx.recipe, faces_found=record.analysis.face_count, ctx=op_ctx
        )
    finally:
        op_ctx.close()
    record.scores = Scores.model_validate(
        jsonable({k: v for k, v in scores.items() if k != "problems"})
    )
    # Faces are counted at the input's scale on both sides (at most 320 px, as in the
    # prepare phase), so a different count means different content, not a detector
    # that sees more in a 4x larger picture (and an upscaled result costs no more).
    record.scores.faces = {
        "before": record.analysis.face_count,
        "after": len(
            detect_faces(after_s.pixels, max_side=min(320, max(before.width, before.height)))
        ),
    }
    record.problems += [str(p) for p in scores.get("problems", [])]
    return before_s, after_s


def review_pair(
    record: ImageRecord,
    ctx: RunContext,
    before: Image,
    after: Image,
    frame_time: Fraction | None = None,
) -> None:
    """:func:`score_pair`, then the report's thumbnails (an image and its result, or a
    video's sampled frame, at ``frame_time`` from the clip's first frame)."""
    before_s, after_s = score_pair(record, ctx, before, after, frame_time)
    crop_before, crop_after = detail_crops(before, after)
    views = (
        ("before", downscaled(before_s, THUMB_MAX_SIDE), 82),
        ("after", downscaled(after_s, THUMB_MAX_SIDE), 82),
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
            score=record.scores.score,
            score_before=record.scores.score_before,
            verdict=record.scores.verdict,
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
    dmap = detail_map(after.pixels)
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
                from retouch.lib.models.specs import get_spec

                scale = params.outscale or get_spec(params.model).scale
                period = round(params.tile * scale) if float(scale).is_integer() else None
            else:
                period = None
        elif step.op == "fit":
            period = None
    return period


def thumb_path(ctx: RunContext, record: ImageRecord, label: str) -> str:
    return ctx.workspace.run_path(ctx.run_id, "thumbs", f"{record.index:06d}-{label}.jpg")
