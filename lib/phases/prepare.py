"""The prepare phase of one input: read, fingerprint, validate (a full decode), analyse."""

from __future__ import annotations

import time

from retouch.lib import progress, storage
from retouch.lib.errors import RetouchError, reason_of
from retouch.lib.image import downscaled
from retouch.lib.imageio import decode, probe
from retouch.lib.phases.context import is_video, jsonable
from retouch.lib.phases.keys import sha256_bytes
from retouch.lib.quality import analysis
from retouch.lib.records import ImageRecord
from retouch.lib.settings import Settings
from retouch.lib.sources import SourceItem

ANALYSIS_MAX_SIDE = 1024


def new_record(item: SourceItem, index: int) -> ImageRecord:
    return ImageRecord(index=index, source=storage.redact(item.uri), name=item.name, uri=item.uri)


def prepare_one(record: ImageRecord, settings: Settings) -> ImageRecord:
    """Read, fingerprint, validate (full decode) and analyse one image (or video)."""
    if is_video(record):
        from retouch.lib.video import phases

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
        found = analysis.analyse(downscaled(image, ANALYSIS_MAX_SIDE))
        record.analysis = jsonable(found)
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
