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
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from . import analysis, progress, storage
from .errors import RetouchError
from .image import Image, resize_plane
from .imageio import decode, encode, format_extension, format_from_name, probe
from .masks import MaskSource
from .ops.base import OpContext
from .ops.registry import registry
from .recipe import Recipe
from .records import ImageRecord
from .settings import Settings, get_settings
from .sources import SourceItem
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
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def mask_folder(self, folder: str) -> MaskSource:
        """The masks of ``folder``, listed once for this context (i.e. once per task)."""
        with self._lock:
            if folder not in self._mask_sources:
                self._mask_sources[folder] = MaskSource(folder, self.settings.pixel_limit)
            return self._mask_sources[folder]

    def masks(self) -> MaskSource | None:
        return self.mask_folder(self.masks_dir) if self.masks_dir else None

    def op_context(self, name: str, device: str) -> OpContext:
        from .models.pool import default_pool

        return OpContext(
            name=name,
            device=device,
            pool=default_pool(),
            masks=self.masks(),
            mask_folder=self.mask_folder,
            counters=self.counters,
        )

    def image_key(self, record: ImageRecord, weights: dict[str, str], device: str) -> str:
        """The result key of one prepared image under this run's recipe."""
        assert record.sha256 is not None
        op_ctx = self.op_context(record.name, device)
        inputs = [
            registry().get(step.op).key_inputs(step.parsed(), op_ctx) for step in self.recipe.steps
        ]
        return result_key(record.sha256, self.recipe, weights, inputs)


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
    payload: dict[str, Any] = {
        "image": image_sha,
        "steps": recipe.canonical_steps(),
        "weights": weights,
    }
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
    """Read, fingerprint, validate (full decode) and analyse one image."""
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
        found = analysis.analyse(_small(image, ANALYSIS_MAX_SIDE))
        record.analysis = _jsonable(found)
        record.recommendations = list(analysis.recommend(found))
    except RetouchError as exc:
        record.fail("prepare", _reason(exc))
    except Exception as exc:  # an unexpected decoder failure is still this file's problem
        record.fail("prepare", f"could not read image: {type(exc).__name__}: {exc}")
    record.timings["prepare"] = round(time.perf_counter() - started, 4)
    progress.emit("image", phase="prepare", name=record.name, ok=record.ok)
    return record


# -- process -----------------------------------------------------------------------------------


def process_one(
    record: ImageRecord, ctx: RunContext, weights: dict[str, str], device: str
) -> ImageRecord:
    """Run the recipe's steps on one image, or reuse the stored result with the same key."""
    if not record.ok:
        progress.emit("image", phase="process", name=record.name, ok=False)
        return record
    started = time.perf_counter()
    try:
        key = ctx.image_key(record, weights, device)
        record.result_key = key
        if not ctx.refresh and ctx.workspace.has_result(key):
            record.reused = True
            meta = ctx.workspace.result_meta(key)
        else:
            data = storage.read_bytes(record.uri, max_bytes=ctx.settings.max_file_bytes)
            if sha256_bytes(data) != record.sha256:
                raise RetouchError(
                    "the file changed while the run was going on; run again to process the new version"
                )
            image = decode(data, record.name, pixel_limit=ctx.settings.pixel_limit)
            calls_before = ctx.counters.get("model_calls", 0)
            image = apply_steps(image, record.name, ctx, device)
            record.model_calls = ctx.counters.get("model_calls", 0) - calls_before
            ctx.workspace.save_result(key, image)
            meta = {
                "width": image.width,
                "height": image.height,
                "bit_depth": image.bit_depth,
                "alpha": image.alpha is not None,
                "is_gray": image.is_gray,
            }
        record.output = {
            "width": meta["width"],
            "height": meta["height"],
            "bit_depth": meta["bit_depth"],
            "alpha": meta["alpha"],
            "gray": meta["is_gray"],
        }
    except RetouchError as exc:
        record.fail("process", _reason(exc))
    except Exception as exc:  # e.g. a model running out of memory on this image only
        record.fail("process", f"{type(exc).__name__}: {exc}")
    record.timings["process"] = round(time.perf_counter() - started, 4)
    progress.emit("image", phase="process", name=record.name, ok=record.ok, reused=record.reused)
    return record


def apply_steps(image: Image, name: str, ctx: RunContext, device: str) -> Image:
    """Apply every step of the recipe in order; errors name the step."""
    op_ctx = ctx.op_context(name, device)
    for number, step in enumerate(ctx.recipe.steps, start=1):
        op = registry().get(step.op)
        try:
            image = op(image, step.parsed(), op_ctx)
        except RetouchError as exc:
            raise RetouchError(f"step {number} ({step.op}): {_reason(exc)}") from exc
        except Exception as exc:
            raise RetouchError(f"step {number} ({step.op}): {type(exc).__name__}: {exc}") from exc
    return image


# -- review ------------------------------------------------------------------------------------


def review_one(record: ImageRecord, ctx: RunContext) -> ImageRecord:
    """Score the result against its input and write before/after thumbnails for the report."""
    if not record.ok or record.result_key is None:
        progress.emit("image", phase="review", name=record.name, ok=record.ok)
        return record
    started = time.perf_counter()
    try:
        before = decode(
            storage.read_bytes(record.uri), record.name, pixel_limit=ctx.settings.pixel_limit
        )
        after = ctx.workspace.load_result(record.result_key)
        before_s, after_s = _small(before, REVIEW_MAX_SIDE), _small(after, REVIEW_MAX_SIDE)
        scores = analysis.quality_score(before_s, after_s)
        record.scores = _jsonable({k: v for k, v in scores.items() if k != "problems"})
        record.problems = [str(p) for p in scores.get("problems", [])]
        for label, img in (("before", before_s), ("after", after_s)):
            thumb = _small(img, THUMB_MAX_SIDE)
            thumb.info = {}
            storage.write_bytes(
                thumb_path(ctx, record, label),
                encode(thumb, "jpg", quality=82, keep_metadata=False),
            )
    except RetouchError as exc:
        # A review problem is reported but does not withhold a result that was produced.
        record.problems.append(f"review failed: {_reason(exc)}")
    except Exception as exc:
        record.problems.append(f"review failed: {type(exc).__name__}: {exc}")
    record.timings["review"] = round(time.perf_counter() - started, 4)
    progress.emit("image", phase="review", name=record.name, ok=record.ok)
    return record


def thumb_path(ctx: RunContext, record: ImageRecord, label: str) -> str:
    return ctx.workspace.run_path(ctx.run_id, "thumbs", f"{record.index:06d}-{label}.jpg")


# -- export ------------------------------------------------------------------------------------


def output_format(record: ImageRecord, recipe: Recipe) -> str:
    return format_from_name(recipe.export.format, record.input.get("format"))


def name_entries(records: list[ImageRecord], recipe: Recipe) -> list[dict[str, Any]]:
    """What the naming template may use, one dict per record to export."""
    return [
        {
            "stem": PurePosixPath(r.name).stem,
            "folder": _folder(r.name),
            "ext": format_extension(output_format(r, recipe)),
            "index": r.index,
            "preset": recipe.name,
        }
        for r in records
    ]


def export_one(record: ImageRecord, ctx: RunContext) -> ImageRecord:
    """Encode one result in the export format into the run's staging area."""
    if not record.ok or record.result_key is None or record.output_name is None:
        progress.emit("image", phase="export", name=record.name, ok=False)
        return record
    started = time.perf_counter()
    try:
        if not ctx.workspace.has_result(record.result_key):
            raise RetouchError(
                f"result {record.result_key[:12]} is missing from the workspace {ctx.workspace.root}; "
                "run again with --refresh to recompute it"
            )
        image = ctx.workspace.load_result(record.result_key)
        export = ctx.recipe.export
        data = encode(
            image,
            output_format(record, ctx.recipe),
            quality=export.quality,
            keep_metadata=export.keep_metadata,
        )
        storage.write_bytes(staging_path(ctx, record.output_name), data)
        record.output_sha256 = sha256_bytes(data)
        record.output["bytes"] = len(data)
        record.output["format"] = output_format(record, ctx.recipe)
        record.status = "ok"
    except RetouchError as exc:
        record.fail("export", _reason(exc))
    except Exception as exc:
        record.fail("export", f"{type(exc).__name__}: {exc}")
    if not record.ok:  # not in the ZIP, so the manifest must not name a file for it
        record.output_name = record.output_sha256 = None
    record.timings["export"] = round(time.perf_counter() - started, 4)
    progress.emit("image", phase="export", name=record.name, ok=record.ok)
    return record


def _folder(name: str) -> str:
    """The source sub-folder of an image ("" at the top level), for the {folder} placeholder."""
    parent = str(PurePosixPath(name).parent)
    return "" if parent == "." else parent


def staging_path(ctx: RunContext, output_name: str) -> str:
    return ctx.workspace.run_path(ctx.run_id, "export", *output_name.split("/"))


# -- helpers -----------------------------------------------------------------------------------


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
