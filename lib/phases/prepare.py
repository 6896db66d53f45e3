"""The prepare phase of one input: read, fingerprint, validate (a full decode), analyse."""

from __future__ import annotations

import time

from retouch.lib import progress, sources, storage
from retouch.lib.errors import RetouchError, SourceError, reason_of
from retouch.lib.image import Image, downscaled
from retouch.lib.imageio import decode, probe
from retouch.lib.masks import masks_beside
from retouch.lib.phases.context import is_video, jsonable, source_slot
from retouch.lib.phases.keys import sha256_bytes
from retouch.lib.quality import analysis
from retouch.lib.records import Analysis, ImageRecord, InputInfo
from retouch.lib.settings import Settings, get_settings
from retouch.lib.sources import SourceItem

ANALYSIS_MAX_SIDE = 1024


def new_record(item: SourceItem, index: int) -> ImageRecord:
    return ImageRecord(index=index, source=storage.redact(item.uri), name=item.name, uri=item.uri)


def list_inputs(
    source: str, skip_masks: bool = False
) -> tuple[list[ImageRecord], list[dict[str, str]]]:
    """The source's images as records, and the files skipped with their reasons; with
    ``skip_masks``, inpaint masks kept beside their images are skipped too.

    Raises:
        SourceError: the source holds no image (naming a skipped file and why, if any).
    """
    found = sources.discover(source, follow_symlinks=get_settings().follow_symlinks)
    skipped = [{"uri": storage.redact(uri), "reason": reason} for uri, reason in found.skipped]
    if skip_masks:
        beside = masks_beside([item.name for item in found.items])
        skipped += [
            {"uri": storage.redact(item.uri), "reason": f"the inpaint mask of {beside[item.name]}"}
            for item in found.items
            if item.name in beside
        ]
        found.items = [item for item in found.items if item.name not in beside]
    if not found.items:
        detail = (
            f" ({len(skipped)} other files skipped, e.g. {skipped[0]['uri']}: {skipped[0]['reason']})"
            if skipped
            else ""
        )
        raise SourceError(f"{storage.redact(source)}: no images found{detail}")
    records = [new_record(item, i) for i, item in enumerate(found.items, start=1)]
    return records, skipped


def prepare_one(
    record: ImageRecord,
    settings: Settings,
    segment_seconds: float | None = None,
    handed: dict[str, Image] | None = None,
) -> ImageRecord:
    """Read, fingerprint, validate (full decode) and analyse one image (or video, cut into
    segments of at least ``segment_seconds``: the recipe's ``export.video`` setting).
    ``handed``: where the decoded image is left for the next phase (``RunContext.handed``)."""
    if is_video(record):
        from retouch.lib.video import phases

        return phases.prepare_video(record, settings, segment_seconds)
    started = time.perf_counter()
    try:
        data = storage.read_bytes(record.uri, max_bytes=settings.max_file_bytes)
        record.bytes = len(data)
        record.sha256 = sha256_bytes(data)
        info = probe(data, record.name, pixel_limit=settings.pixel_limit)
        image = decode(data, record.name, pixel_limit=settings.pixel_limit)
        record.input = InputInfo(
            format=info.format,
            width=image.width,
            height=image.height,
            bit_depth=image.bit_depth,
            alpha=image.alpha is not None,
            gray=image.is_gray,
            frames=info.frames,
        )
        if info.frames > 1:  # animations and multi-page files: the first frame is the image
            record.problems.append(f"only the first of {info.frames} frames (pages) was processed")
        if handed is not None:
            handed[source_slot(record)] = image
        found = analysis.analyse(downscaled(image, ANALYSIS_MAX_SIDE))
        record.analysis = Analysis.model_validate(jsonable(found))
        record.recommendations = list(analysis.recommend(found))
    except RetouchError as exc:
        record.fail("prepare", reason_of(exc))
    except Exception as exc:  # an unexpected decoder failure is still this file's problem
        record.fail("prepare", f"could not read image: {type(exc).__name__}: {exc}")
    record.timings["prepare"] = round(time.perf_counter() - started, 4)
    progress.emit(
        progress.ImagePhaseDone(
            phase="prepare", name=record.name, ok=record.ok, reason=record.reason
        )
    )
    return record
