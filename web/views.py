"""What the API shows of a batch: its counts, its progress and the JSON of ``BatchOut``
(:mod:`retouch.web.schemas`), with the URLs of whatever can be fetched now."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from retouch.lib.phases.review import THUMB_LABELS
from retouch.lib.sources import is_video_name
from retouch.web.batches import RUNNING_STATUSES, Batch, Frames, ImageState

# How far through the batch an image counts, by its status (the bar and the ETA): the
# process phase is most of the work, and an image in it moves on with each step (a video
# with each frame).
PROGRESS_AT = {
    "pending": 0.0,
    "prepared": 0.05,
    "processed": 0.8,
    "reviewed": 0.95,
    "done": 1.0,
    "failed": 1.0,
}


def counts(batch: Batch) -> dict[str, int]:
    found = {"pending": 0, "running": 0, "done": 0, "failed": 0}
    for image in batch.images.values():
        key = "running" if image.status in RUNNING_STATUSES else image.status
        found[key] = found.get(key, 0) + 1
    return found


def progress(batch: Batch, now: float | None = None) -> dict[str, Any]:
    """How far the batch (its current job) is: the fraction of the work done, images
    reviewed and exported, and an estimate of the seconds left while it runs."""
    names = (batch.open_job or {}).get("names") or list(batch.images)
    images = [batch.images[n] for n in names if n in batch.images]
    total_steps = len(batch.info.get("steps") or [])
    work = 0.0
    span = PROGRESS_AT["processed"] - PROGRESS_AT["prepared"]
    for image in images:
        work += PROGRESS_AT.get(image.status, 0.0)
        if image.status != "prepared":
            continue
        frames = image.frames
        if frames is not None and frames.total:
            work += span * frames.done / frames.total
        elif image.step and total_steps:
            work += span * min(image.step, total_steps) / total_steps
    fraction = work / len(images) if images else (1.0 if batch.idle else 0.0)
    elapsed: float | None = None
    eta: float | None = None
    started = (batch.open_job or {}).get("started")
    if batch.state == "running" and isinstance(started, str):
        try:
            began = datetime.fromisoformat(started).timestamp()
        except ValueError:
            began = None
        if began is not None:
            elapsed = max(0.0, (now if now is not None else time.time()) - began)
            # Only once a real share of the work is done: earlier guesses swing wildly.
            if fraction >= 0.05 and elapsed >= 1:
                eta = round(elapsed * (1 - fraction) / fraction, 1)
    return {
        "fraction": round(min(1.0, fraction), 4),
        "reviewed": sum(1 for i in batch.images.values() if i.status in ("reviewed", "done")),
        "exported": sum(1 for i in batch.images.values() if i.status == "done"),
        "elapsed_s": round(elapsed, 1) if elapsed is not None else None,
        "eta_s": eta,
    }


def batch_json(batch: Batch, with_images: bool = True) -> dict[str, Any]:
    base = f"/api/batches/{batch.id}"
    downloadable = batch.idle and bool(batch.archives())
    data: dict[str, Any] = {
        "id": batch.id,
        "state": batch.state,
        "created": batch.info["created"],
        "preset": batch.info["preset"],
        "overrides": batch.info.get("overrides") or {},
        "total": len(batch.images),
        "counts": counts(batch),
        "progress": progress(batch),
        "steps": list(batch.info.get("steps") or []),
        "skipped": batch.skipped,
        "error": batch.error,
        "run_id": batch.run_id,
        "zip_url": f"{base}/zip" if downloadable else None,
        "report_url": f"{base}/report" if batch.idle and batch.report_path() else None,
        "exit_code": batch.exit_code,
    }
    if with_images:
        data["images"] = [_image_json(batch, i, downloadable) for i in batch.images.values()]
    return data


def is_video(image: ImageState) -> bool:
    """True for a video record (by its input's name; a video is delivered as a video or as
    an image sequence, ``ImageState.sequence``)."""
    return is_video_name(image.name) or is_video_name(image.output_name or "")


def _frames_json(frames: Frames | None) -> dict[str, Any] | None:
    if frames is None:
        return None
    return {
        "done": frames.done,
        "total": frames.total,
        "fps": frames.fps,
        "eta_s": frames.eta_s,
        "segment": frames.segment,
        "segments": frames.segments,
        "reused": frames.reused,
    }


def _image_json(batch: Batch, image: ImageState, downloadable: bool) -> dict[str, Any]:
    base = f"/api/batches/{batch.id}"
    delivered = bool(downloadable and image.output_name and image.status == "done")
    video = is_video(image)
    # The zoomable full-size comparison is for still images; a video's comparison is its
    # review's thumbnails, and its result plays from result_url.
    full = delivered and not video
    return {
        "name": image.name,
        "index": image.index,
        "kind": "video" if video else "image",
        "status": image.status,
        "phase": image.phase,
        "error": image.error,
        "note": image.note,
        "score": image.score,
        "score_before": image.score_before,
        "verdict": image.verdict,
        "step": image.step,
        "step_op": image.step_op,
        "frames": _frames_json(image.frames),
        "reused": image.reused,
        "thumbs": {
            label: (f"{base}/thumbs/{image.index}/{label}" if label in image.thumbs else None)
            for label in THUMB_LABELS
        },
        "output_name": image.output_name,
        "result_url": f"{base}/results/{image.index}" if delivered else None,
        "full": {
            "before": (
                f"{base}/full/{image.index}/before" if full and batch.input_uri(image) else None
            ),
            "after": f"{base}/full/{image.index}/after" if full else None,
        },
        "size": (
            {"width": image.size[0], "height": image.size[1]} if image.size and delivered else None
        ),
        "sequence": (
            {
                "frames": image.sequence.frames,
                "format": image.sequence.format,
                "first_frame_url": f"{base}/results/{image.index}/first-frame",
            }
            if image.sequence and delivered
            else None
        ),
    }
