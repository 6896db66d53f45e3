"""Previews: a recipe tried on a few images, laid out as one contact sheet.

A preview runs the recipe's steps directly (no Prefect, no workspace) on a sample of the
source, once per value of a parameter grid (or once per preset), scores every cell against
its input and draws the sheet: one row per image, the original first, then one column per
value. Images are processed at full resolution and scored as a run's review scores them,
so a cell's score is the one a run with the same settings gives; a region (a full-resolution
crop) or ``max_side`` (a reduced copy) is faster, and its scores describe that crop or copy.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import cv2
import numpy as np

from retouch.lib import storage
from retouch.lib.errors import RecipeError, RetouchError, SourceError, UnknownNameError
from retouch.lib.image import Image, resize_plane, to_uint8
from retouch.lib.imageio import decode, encode
from retouch.lib.ops.base import OpContext
from retouch.lib.ops.registry import registry
from retouch.lib.recipe import Recipe, apply_overrides, parse_value
from retouch.lib.sources import SourceItem, discover, is_video_name

CELL_SIDE = 256
LABEL_HEIGHT = 34


@dataclass
class Grid:
    """One parameter swept over values: ``target.param`` as in ``--set`` overrides."""

    key: str
    values: list[Any]

    def override(self, value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value)
        return f"{self.key}={text}"


@dataclass
class Variant:
    """One column of the sheet: a label and the recipe it runs."""

    label: str
    recipe: Recipe


@dataclass
class Cell:
    image: str
    variant: str
    score: float | None = None
    score_before: float | None = None  # the input's score on the same scale
    verdict: str | None = None
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class PreviewResult:
    """Where the sheet was written and the score of every cell."""

    sheet_uri: str
    variants: list[str]
    images: list[str]
    cells: list[Cell]
    seconds: float

    def best(self) -> tuple[str, float] | None:
        """The variant with the highest mean score over the images where it worked."""
        means = []
        for v in self.variants:
            vals = [c.score for c in self.cells if c.variant == v and c.score is not None]
            if vals:
                means.append((sum(vals) / len(vals), v))
        if not means:
            return None
        mean, label = max(means)
        return label, round(mean, 1)

    def as_dict(self) -> dict[str, Any]:
        best = self.best()
        return {
            "sheet": storage.redact(self.sheet_uri),
            "variants": self.variants,
            "images": self.images,
            "best": {"variant": best[0], "mean_score": best[1]} if best else None,
            "cells": [c.__dict__ for c in self.cells],
            "seconds": round(self.seconds, 2),
        }


def parse_grid(text: str) -> Grid:
    """``step.param=a,b,c`` into a :class:`Grid` (values parsed like ``--set`` values)."""
    key, sep, raw = text.partition("=")
    if not sep or "." not in key or not raw.strip():
        raise RecipeError(
            f"grid {text!r}: expected STEP.PARAM=V1,V2,..., e.g. sharpen.amount=0.3,0.6,1.0"
        )
    values = [parse_value(v.strip()) for v in raw.split(",") if v.strip()]
    if len(values) < 2:
        raise RecipeError(f"grid {text!r}: give at least two values to compare")
    return Grid(key=key.strip(), values=values)


def parse_region(text: str) -> tuple[float, float, float, float]:
    """``x,y,w,h`` in pixels, or as fractions of the image (all four at most 1)."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 4 or parts[2] <= 0 or parts[3] <= 0 or min(parts) < 0:
        raise RecipeError(
            f"region {text!r}: expected X,Y,W,H in pixels (e.g. 100,80,400,300) "
            "or fractions (e.g. 0.25,0.25,0.5,0.5)"
        )
    return parts[0], parts[1], parts[2], parts[3]


def variants_for(recipe: Recipe, grid: Grid | None) -> list[Variant]:
    """The columns: one per grid value (each validated now), or just the recipe."""
    if grid is None:
        return [Variant(recipe.name, recipe)]
    return [
        Variant(f"{grid.key}={v}", apply_overrides(recipe, [grid.override(v)])) for v in grid.values
    ]


STYLE_BASE_PRESET = "anime"
"""The preset a re-drawing model named in ``--styles`` runs in (its model replaced)."""


def style_variants(styles: str) -> list[Variant]:
    """The columns of a style comparison: ``styles`` is a comma-separated list of presets
    and re-drawing models (purpose ``restyle``: shipped or imported), each one column
    labelled with its name. Raises RecipeError for an empty list or a name that is neither
    (listing both kinds of valid names)."""
    from retouch.lib.models.specs import names
    from retouch.lib.recipe import load_preset, preset_names

    wanted = [s.strip() for s in styles.split(",") if s.strip()]
    if not wanted:
        raise RecipeError("--styles: give presets or re-drawing models, comma separated")
    models = names(purpose="restyle")
    out = []
    for style in wanted:
        if style in models:
            base = load_preset(STYLE_BASE_PRESET)
            recipe = apply_overrides(base, [f"restyle.model={style}"])
            out.append(Variant(style, recipe.model_copy(update={"name": style})))
        else:
            try:
                out.append(Variant(style, load_preset(style)))
            except UnknownNameError:
                raise RecipeError(
                    f"--styles: {style!r} is neither a preset nor a re-drawing model; presets: "
                    f"{', '.join(preset_names())}; re-drawing models: {', '.join(models)}"
                ) from None
    return out


def sample(items: list[SourceItem], n: int) -> list[SourceItem]:
    """``n`` images spread evenly over the (sorted) listing, so a sample is repeatable."""
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def _prepare(
    image: Image, region: tuple[float, float, float, float] | None, max_side: int | None
) -> Image:
    """Cut the region (at full resolution), or reduce the image to ``max_side`` if given."""
    if region is not None:
        x, y, w, h = region
        if max(region) <= 1.0:
            x, w = x * image.width, w * image.width
            y, h = y * image.height, h * image.height
        x0, y0 = int(min(max(0, x), image.width - 1)), int(min(max(0, y), image.height - 1))
        x1, y1 = int(min(image.width, x0 + max(1, w))), int(min(image.height, y0 + max(1, h)))
        alpha = image.alpha[y0:y1, x0:x1].copy() if image.alpha is not None else None
        return Image(image.pixels[y0:y1, x0:x1].copy(), alpha=alpha, is_gray=image.is_gray, info={})
    if max_side is None:
        return image
    scale = max_side / max(image.width, image.height)
    if scale >= 1:
        return image
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    return image.with_pixels(resize_plane(image.pixels, w, h))


def _run(
    image: Image,
    recipe: Recipe,
    name: str,
    device: str,
    counters: dict[str, int],
    frame_time: Fraction | None = None,
) -> Image:
    """The recipe on ``image``; ``frame_time``: a video frame's time from the clip's first
    frame (a mask video gives the mask shown then)."""
    from retouch.lib.models.pool import default_pool

    ctx = OpContext(
        name=name, device=device, pool=default_pool(), counters=counters, frame_time=frame_time
    )
    with ctx.resources:
        for number, step in enumerate(recipe.steps, start=1):
            try:
                image = registry().get(step.op)(image, step.parsed(), ctx)
            except RetouchError as exc:
                raise RetouchError(f"step {number} ({step.op}): {exc}") from exc
    return image


def _cell_view(pixels: np.ndarray) -> np.ndarray:
    """An HxWx3 BGR uint8 array letterboxed into a CELL_SIDE square on dark gray."""
    bgr = to_uint8(pixels)
    h, w = bgr.shape[:2]
    scale = CELL_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
    small = cv2.resize(bgr, size, interpolation=interp)
    out = np.full((CELL_SIDE, CELL_SIDE, 3), 40, np.uint8)
    y0, x0 = (CELL_SIDE - size[1]) // 2, (CELL_SIDE - size[0]) // 2
    out[y0 : y0 + size[1], x0 : x0 + size[0]] = small
    return out


def _label(text: str, sub: str = "") -> np.ndarray:
    strip = np.full((LABEL_HEIGHT, CELL_SIDE, 3), 250, np.uint8)
    for row, (t, scale) in enumerate(((text, 0.42), (sub, 0.38))):
        if not t:
            continue
        # OpenCV draws ASCII only; then shorten until it fits the cell.
        t = t.encode("ascii", "replace").decode()
        while (
            len(t) > 4
            and cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > CELL_SIDE - 8
        ):
            t = t[:-3] + "~"
        cv2.putText(
            strip,
            t,
            (4, 13 + row * 16),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (30, 30, 30),
            1,
            cv2.LINE_AA,
        )
    return strip


def contact_sheet(
    rows: list[tuple[str, Image, list[tuple[str, Image | None, str]]]],
) -> np.ndarray:
    """Rows of (image name, original, [(column label, result or None, caption)]) drawn as
    one HxWx3 BGR uint8 sheet: the original first, then one cell per column."""
    out_rows = []
    for name, original, cells in rows:
        tiles = [np.vstack([_label(name, "original"), _cell_view(original.pixels)])]
        for label, result, caption in cells:
            view = (
                _cell_view(result.pixels)
                if result is not None
                else np.full((CELL_SIDE, CELL_SIDE, 3), (60, 60, 160), np.uint8)
            )
            tiles.append(np.vstack([_label(label, caption), view]))
        out_rows.append(np.hstack(tiles))
    width = max(r.shape[1] for r in out_rows)
    padded = [
        np.hstack([r, np.full((r.shape[0], width - r.shape[1], 3), 255, np.uint8)])
        if r.shape[1] < width
        else r
        for r in out_rows
    ]
    return np.vstack(padded)


def run_preview(
    source: str,
    variants: list[Variant],
    out: str,
    *,
    sample_size: int = 3,
    region: tuple[float, float, float, float] | None = None,
    device: str = "cpu",
    pixel_limit: int | None = None,
    max_side: int | None = None,
    at: Fraction | None = None,
) -> PreviewResult:
    """Run each variant on a sample of ``source`` and write the contact sheet to ``out``.

    Args:
        source: anything :func:`retouch.lib.sources.discover` accepts.
        variants: the columns (see :func:`variants_for`; several presets compare styles).
        out: URI of the sheet (PNG); a JSON file with the scores is written beside it.
        sample_size: how many images (spread over the listing).
        region: process only this region (pixels, or fractions) of each image.
        max_side: process a copy reduced to this many pixels on the longer side (faster;
            the scores then describe the reduced copy, not what a run gives).
        at: for a video, the moment (seconds from its first frame) whose frame is tried;
            its middle when None. The row is named ``clip.mp4 @ 80.00 s``.

    Returns:
        The sheet's URI and the score of every cell. A cell that fails (bad image, step
        error) is drawn as a red square with the reason in the result; the others go on.

    Raises:
        SourceError: the source has no images.
    """
    from retouch.lib.phases.review import score_result
    from retouch.lib.settings import get_settings

    started = time.perf_counter()
    limit = pixel_limit or get_settings().pixel_limit
    found = discover(source).items
    if not found:
        raise SourceError(f"{storage.redact(source)}: no images to preview")
    chosen = sample(found, sample_size)
    counters: dict[str, int] = {}
    rows, cells = [], []
    for item in chosen:
        name = item.name
        moment: Fraction | None = None
        try:
            if is_video_name(item.name):
                from retouch.lib.video.review import frame_at

                moment, image = frame_at(item.uri, item.name, at, get_settings().max_video_bytes)
                name = f"{item.name} @ {float(moment):.2f} s"
            else:
                image = decode(storage.read_bytes(item.uri), item.name, pixel_limit=limit)
            original = _prepare(image, region, max_side)
        except RetouchError as exc:
            cells.append(Cell(name, "original", error=str(exc)))
            continue
        row_cells: list[tuple[str, Image | None, str]] = []
        for variant in variants:
            t0 = time.perf_counter()
            cell = Cell(name, variant.label)
            try:
                result = _run(original, variant.recipe, item.name, device, counters, moment)
                review_ctx = OpContext(name=item.name, frame_time=moment)
                with review_ctx.resources:
                    q, _, _ = score_result(original, result, variant.recipe, ctx=review_ctx)
                cell.score, cell.verdict, cell.problems = q["score"], q["verdict"], q["problems"]
                cell.score_before = q["score_before"]
                caption = f"score {q['score_before']:.0f}->{q['score']:.0f} {q['verdict']}"
            except RetouchError as exc:
                result, cell.error, caption = None, str(exc), "failed"
            cell.seconds = round(time.perf_counter() - t0, 3)
            cells.append(cell)
            row_cells.append((variant.label, result, caption))
        rows.append((name, original, row_cells))
    if not rows:
        raise RetouchError(
            f"{storage.redact(source)}: none of the sampled images could be read: "
            + "; ".join(c.error or "" for c in cells)
        )
    sheet = contact_sheet(rows)
    storage.write_bytes(out, encode(Image(sheet), "png", keep_metadata=False))
    preview = PreviewResult(
        sheet_uri=out,
        variants=[v.label for v in variants],
        images=[r[0] for r in rows],
        cells=cells,
        seconds=time.perf_counter() - started,
    )
    base = out[: -len(".png")] if out.lower().endswith(".png") else out
    storage.write_bytes(base + ".json", json.dumps(preview.as_dict(), indent=2).encode())
    return preview
