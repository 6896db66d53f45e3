"""The four phases of a run for a video record, called by :mod:`retouch.lib.phases`.

- **prepare**: fingerprint (sha256, streamed), probe by decoding every frame (a per-file
  failure with the reason for no video stream, a truncated or corrupt file, no frames),
  plan the segments at key frames, analyse the middle frame for the report's groups and
  suggestions.
- **process**: every frame through the recipe's steps (the same operations and model
  pool as images), segment by segment (cut at key frames when prepared), each encoded
  with the source's timestamps and stored as soon as it is done (a stopped run resumes
  with the rest), then joined with the source's audio and subtitles; the output's frame
  times are read back and must equal the source's. The encoded file is stored in the
  workspace under a key of the source's content, the recipe (steps, op versions, weights,
  per-file inputs such as a mask), the encoding and the segments.
- **review** (:mod:`retouch.lib.video.review`): a few frames sampled across the clip are
  scored as images are; the worst one stands for the clip and gives the thumbnails and a
  short before/after preview clip (:mod:`~retouch.lib.video.preview_clip`).
- **export** (:mod:`retouch.lib.video.export`): the stored file is delivered under its
  planned name (container extension); with ``export.video.container = "frames"`` the stored
  frames (lossless) are written as a folder of numbered images with ``frames.csv`` and the
  audio.

A mask for ``inpaint`` is found as for an image (the run's masks by the video's stem, or
a mask file in the step's parameters): a mask image masks every frame alike, a mask video
(:mod:`retouch.lib.video.masks`) gives each frame the mask frame shown at the same time,
read alongside the frames (each segment seeks it to its own start).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from fractions import Fraction
from typing import Any

from retouch.lib import progress, storage
from retouch.lib.errors import InvalidVideoError, OperationError, RetouchError, reason_of
from retouch.lib.image import Image, downscaled
from retouch.lib.ops.registry import registry
from retouch.lib.quality import analysis
from retouch.lib.recipe import VideoSettings
from retouch.lib.records import Analysis, ImageRecord, InputInfo, OutputInfo
from retouch.lib.settings import Settings
from retouch.lib.sources import extension
from retouch.lib.video import media, segments
from retouch.lib.video.temporal import StaticBlend

VIDEO_KEY_LAYOUT = "video-2"  # 2: segments cut at key frames; colour tags kept
"""Part of every video result key: bump it when the same inputs would give another file."""

PROGRESS_EVERY = 25
"""A ``frames`` progress event every this many frames of a video (and at its last)."""

_BLOCK = 1 << 20


# -- reading sources ---------------------------------------------------------------------------


@contextmanager
def local_source(uri: str, max_bytes: int) -> Iterator[tuple[str, str, int]]:
    """The video at ``uri`` as a local file, with its sha256 and size.

    A local file is read in place (hashed in 1 MiB blocks); any other storage (S3, a ZIP
    member, HTTP) is copied to a temporary file while it is hashed, and removed afterwards.
    The decoder needs a seekable file (an MP4 index is often at its end); nothing is kept
    in memory.

    Raises:
        InvalidImageError: the file is larger than ``max_bytes``.
        StorageError: it cannot be read.
    """
    local = storage.local_path(uri)
    if local is not None:
        size = storage.size(uri)
        if size > max_bytes:
            raise storage.too_large(uri, max_bytes, "RETOUCH_MAX_VIDEO_BYTES")
        digest = hashlib.sha256()

        def hash_local() -> None:
            with open(local, "rb") as fh:
                for block in iter(lambda: fh.read(_BLOCK), b""):
                    digest.update(block)

        storage.retrying(hash_local, what="read", uri=uri)
        yield local, digest.hexdigest(), size
        return
    folder = tempfile.mkdtemp(prefix="retouch-video-")
    try:
        path = os.path.join(folder, "source." + (extension(uri.split("::", 1)[0]) or "bin"))
        result: dict[str, Any] = {}

        def copy() -> None:
            digest = hashlib.sha256()
            total = 0
            if uri.lower().startswith(("http://", "https://")):
                data = storage.read_bytes(uri, max_bytes=max_bytes)
                digest.update(data)
                with open(path, "wb") as out:
                    out.write(data)
                total = len(data)
            else:
                fs, rpath = storage.filesystem(uri)
                with fs.open(rpath, "rb") as fh, open(path, "wb") as out:
                    for block in iter(lambda: fh.read(_BLOCK), b""):
                        total += len(block)
                        if total > max_bytes:
                            raise storage.too_large(uri, max_bytes, "RETOUCH_MAX_VIDEO_BYTES")
                        digest.update(block)
                        out.write(block)
            result.update(sha=digest.hexdigest(), size=total)

        storage.retrying(copy, what="read", uri=uri)
        yield path, result["sha"], result["size"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- prepare -----------------------------------------------------------------------------------


def prepare_video(
    record: ImageRecord, settings: Settings, segment_seconds: float | None = None
) -> ImageRecord:
    """Fingerprint and probe one video (every frame decoded once), plan its segments (cut
    at key frames, at least ``segment_seconds`` each; default ``export.video``'s), analyse
    its middle frame."""
    from retouch.lib.phases.context import jsonable
    from retouch.lib.phases.prepare import ANALYSIS_MAX_SIDE

    started = time.perf_counter()
    try:
        with local_source(record.uri, settings.max_video_bytes) as (path, sha, size):
            record.bytes = size
            record.sha256 = sha
            info = media.probe_video(path, record.name, pixel_limit=settings.pixel_limit)
        seconds = segment_seconds or VideoSettings().segment_seconds
        record.input = InputInfo.model_validate(
            {
                "format": extension(record.name),
                **info.to_json(),
                "segments": segments.plan_segments(
                    info.pts, info.keyframes, info.time_base, seconds
                ),
            }
        )
        record.problems += media.input_notes(info)
        if info.sample is not None:
            found = analysis.analyse(downscaled(info.sample, ANALYSIS_MAX_SIDE))
            record.analysis = Analysis.model_validate(jsonable(found))
            record.recommendations = list(analysis.recommend(found))
    except RetouchError as exc:
        record.fail("prepare", reason_of(exc))
    except Exception as exc:  # a decoder failure we did not foresee is still this file's
        record.fail("prepare", f"could not read video: {type(exc).__name__}: {exc}")
    record.timings["prepare"] = round(time.perf_counter() - started, 4)
    progress.emit(
        progress.ImagePhaseDone(
            phase="prepare", name=record.name, ok=record.ok, reason=record.reason
        )
    )
    return record


# -- process -----------------------------------------------------------------------------------


def encoding(record: ImageRecord, ctx: Any, device: str) -> tuple[media.Encoding, str | None]:
    """How ``record``'s frames are encoded under the run's ``export.video`` settings on
    ``device``, and the note on what differs from them (see :func:`media.encoding_for`)."""
    return media.encoding_for(extension(record.name), ctx.recipe.export.video, device)


def video_key(
    record: ImageRecord,
    ctx: Any,
    weights: dict[str, str],
    device: str,
    *,
    segment: int | None = None,
) -> str:
    """The result key of a video (or of its ``segment``-th segment, from 0): the source's
    sha256, the recipe's steps with op versions and their per-file inputs (a mask), the
    weights they use, the encoding (codec, CRF, preset, container), the static-area blend
    and the segments it is cut into (each is encoded on its own)."""
    assert record.sha256 is not None
    op_ctx = ctx.op_context(record.name, device, record.uri)
    ops = registry()
    used: set[str] = set()
    inputs = []
    for step in ctx.recipe.steps:
        op = ops.get(step.op)
        used.update(op.models(step.parsed()))
        inputs.append(op.key_inputs(step.parsed(), op_ctx))
    payload = {
        "layout": VIDEO_KEY_LAYOUT,
        "video": record.sha256,
        "steps": ctx.recipe.canonical_steps(),
        "weights": {k: v for k, v in weights.items() if k in used},
        "inputs": inputs,
        "encoding": encoding(record, ctx, device)[0].key(),
        "blend_static": ctx.recipe.export.video.blend_static,
        "segments": [list(span) for span in plan(record)],
        "segment": segment,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def plan(record: ImageRecord) -> list[segments.Span]:
    """``record``'s segments as prepared (one segment, the whole clip, when it has none)."""
    spans = record.input.segments
    if spans:
        return [(a, b, n) for a, b, n in spans]
    return [(None, None, record.input.frames or 0)]


class FrameProcessor:
    """The recipe's steps as one function over a frame (steps parsed and op context built
    once per segment; models come from the process's pool, so they load once). Every frame
    shares the video's ``clip_id`` (its sha256) and the segment's op state; the result's
    static areas are blended over time when ``export.video.blend_static`` says so.
    ``first``: how many frames of the clip come before the ones it is given (errors name
    the frame by its number in the clip). :meth:`at` tells it the next frame's time (a
    mask video gives the mask shown then); :meth:`close` (or ``with``) closes what the
    steps kept open for the segment (a mask video's reader)."""

    def __init__(self, record: ImageRecord, ctx: Any, device: str, first: int = 0):
        self.op_ctx = ctx.op_context(record.name, device, record.uri)
        self.op_ctx.clip_id = record.sha256 or ""
        self.steps = [
            (number, step.op, registry().get(step.op), step.parsed())
            for number, step in enumerate(ctx.recipe.steps, start=1)
        ]
        self.ctx = ctx
        self.frame = first
        self.start = clip_start(record)
        weight = ctx.recipe.export.video.blend_static
        self.blend = StaticBlend(weight) if weight > 0 else None

    def at(self, time: Fraction) -> None:
        """The next frame is shown at ``time`` (seconds, in the source's clock)."""
        self.op_ctx.frame_time = time - self.start

    def __call__(self, image: Image) -> Image:
        self.frame += 1
        source = image
        for number, name, op, params in self.steps:
            try:
                image = op(image, params, self.op_ctx)
            except RetouchError as exc:
                raise RetouchError(
                    f"frame {self.frame}, step {number} ({name}): {reason_of(exc)}"
                ) from exc
            except Exception as exc:
                raise RetouchError(
                    f"frame {self.frame}, step {number} ({name}): {type(exc).__name__}: {exc}"
                ) from exc
            self.ctx.count(f"steps:{name}")
        return self.blend(source, image) if self.blend is not None else image

    def close(self) -> None:
        self.op_ctx.close()

    def __enter__(self) -> FrameProcessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def clip_start(record: ImageRecord) -> Fraction:
    """The time of ``record``'s first frame (seconds, exact: its pts in the time base)."""
    start = Fraction(record.input.start or 0)
    tb = getattr(record.input, "time_base", None)
    if not tb:
        return start
    base = Fraction(str(tb))
    return round(start / base) * base


def _output_fields(meta: dict[str, Any]) -> OutputInfo:
    keys: tuple[str, ...] = (
        "kind", "format", "codec", "width", "height", "frames", "duration", "streams", "colour"
    )  # fmt: skip
    if meta.get("kind") == "frames":  # the stored file's container is not what is delivered
        keys = ("kind", "width", "height", "frames", "duration", "streams")
    out = {k: meta[k] for k in keys if k in meta}
    out.update(bit_depth=8, alpha=False, gray=False)
    return OutputInfo.model_validate(out)


def process_video(
    record: ImageRecord, ctx: Any, weights: dict[str, str], device: str
) -> ImageRecord:
    """Run the recipe on every frame of one video and store the encoded result.

    The clip is processed segment by segment (:func:`plan`); each encoded segment is stored
    in the workspace under its own key as soon as it is done, so a run stopped part-way
    (killed, a power cut) resumes with the segments it had not finished, and the joined
    file is the same bytes as an uninterrupted run's. The segments are removed once the
    joined result is stored. A stored result under the same key is reused without decoding
    anything. The output's frame count and every frame time are read back from the written
    file and compared with the source's: a difference fails the video, never delivers a
    shorter or shifted one.
    """
    from retouch.lib.phases.process import emit_processed

    started = time.perf_counter()
    elsewhere = 0.0
    if not record.ok:
        return record
    try:
        key = video_key(record, ctx, weights, device)
        record.result_key = key
        steps = len(ctx.recipe.steps)
        if not ctx.refresh and ctx.workspace.has_result(key):
            meta = ctx.workspace.result_meta(key)
            ctx.workspace.touch_result(key, meta)
            record.reused = True
            ctx.count("steps_reused", steps)
            record.output = _output_fields(meta)
            record.problems += [n for n in meta.get("notes", []) if n not in record.problems]
        else:
            check_mask_videos(record, ctx, device)
            # Segments made by task runs of their own took their time there.
            elsewhere = _compute(record, ctx, weights, device, key)
    except RetouchError as exc:
        record.fail("process", reason_of(exc))
    except Exception as exc:  # e.g. a model running out of memory on this video only
        record.fail("process", f"{type(exc).__name__}: {exc}")
    record.timings["process"] = round(time.perf_counter() - started + elsewhere, 4)
    emit_processed(record)
    return record


def check_mask_videos(record: ImageRecord, ctx: Any, device: str) -> None:
    """Before any frame is computed: each ``inpaint`` step's mask video (when the clip's
    mask is a video) reaches the clip's last frame, so a mask video that is too short fails
    the clip at once rather than after the segments before its end. The last frame's time
    is taken from the prepared length (rounded to 0.1 ms), so a mask ending within 1 ms of
    it is left to the frame-by-frame check.

    Raises:
        OperationError: a mask video ends before the clip, or it cannot be read.
    """
    from retouch.lib.ops import inpaint
    from retouch.lib.video.masks import MaskVideo

    frames, length = record.input.frames or 0, record.input.duration
    if frames < 2 or not length:
        return
    end = Fraction(str(length))
    last = end * (frames - 1) / frames - Fraction(1, 1000)
    op_ctx = ctx.op_context(record.name, device, record.uri)
    for n, step in enumerate(ctx.recipe.steps, start=1):
        if step.op != "inpaint":
            continue
        uri = inpaint.mask_video_of(step.parsed(), op_ctx)
        if uri is None:
            continue
        settings = ctx.settings
        try:
            with MaskVideo(
                uri,
                record.name,
                pixel_limit=settings.pixel_limit,
                max_bytes=settings.max_video_bytes,
            ) as mask:
                short = mask.end_after(last)
        except OperationError as exc:
            raise OperationError(f"step {n} (inpaint): {exc}") from None
        if short is not None:
            raise OperationError(
                f"step {n} (inpaint): {record.name}: its inpaint mask video {uri} ends at "
                f"{float(short):.3f} s, the clip runs to {float(end):.3f} s; give a mask "
                "video at least as long as the clip"
            )


def segments_to_make(record: ImageRecord, ctx: Any, weights: dict[str, str], device: str) -> int:
    """How many segments ``record``'s process phase makes: its planned count when it is a
    video of several segments whose result is not stored yet (or the run refreshes), else 0
    (nothing to make, or one segment: no task of its own needed)."""
    if not record.ok or record.sha256 is None:
        return 0
    count = len(plan(record))
    if count < 2:
        return 0
    try:
        key = video_key(record, ctx, weights, device)
    except Exception:  # e.g. an encoder that does not open: the process phase says so
        return 0
    if not ctx.refresh and ctx.workspace.has_result(key):
        return 0
    try:
        check_mask_videos(record, ctx, device)
    except Exception:  # the process phase fails the clip with the reason, making nothing
        return 0
    return count


def make_segment(
    record: ImageRecord, ctx: Any, weights: dict[str, str], device: str, index: int
) -> str | None:
    """Make segment ``index`` of the clip and store it (or find it stored), for
    :func:`process_video` to join; its frames are announced as they are done. Returns None,
    or why it failed: the join then tries it once more and fails the video with the reason,
    so nothing is lost by a failure here."""
    spans = plan(record)
    try:
        with (
            local_source(record.uri, ctx.settings.max_video_bytes) as (path, sha, _size),
            tempfile.TemporaryDirectory(prefix="retouch-video-") as tmp,
            ExitStack() as stack,
        ):
            if sha != record.sha256:
                return "the file changed while the run was going on"
            meter = _FrameMeter(record.name, record.input.frames or 0, len(spans))
            meter.done = sum(n for *_, n in spans[:index])
            key = video_key(record, ctx, weights, device, segment=index)
            _segment(record, ctx, device, path, index, spans[index], key, tmp, meter, stack)
    except Exception as exc:  # this segment's failure; the join reports it for the video
        return reason_of(exc) if isinstance(exc, RetouchError) else f"{type(exc).__name__}: {exc}"
    return None


class _FrameMeter:
    """Frames done of a clip, the rate of this run's own work and the time left at it."""

    def __init__(self, name: str, total: int, segments: int):
        self.name, self.total, self.segments = name, total, segments
        self.done = 0
        self.computed = 0
        self.since: float | None = None

    def reused(self, index: int, frames: int) -> None:
        self.done += frames
        self._emit(index, reused=True)

    def frame(self, index: int, in_segment: int, last: bool) -> None:
        if self.since is None:
            self.since = time.perf_counter()
        self.done += 1
        self.computed += 1
        if self.done % PROGRESS_EVERY == 0 or last:
            self._emit(index, reused=False)

    def _emit(self, index: int, *, reused: bool) -> None:
        fps = eta = None
        if self.since is not None and self.computed:
            elapsed = max(time.perf_counter() - self.since, 1e-6)
            fps = round(self.computed / elapsed, 3)
            eta = round(max(0, self.total - self.done) / fps, 1)
        progress.emit(
            progress.FramesDone(
                name=self.name,
                done=self.done,
                total=self.total,
                fps=fps,
                eta_s=eta,
                segment=index + 1,
                segments=self.segments,
                reused=reused,
            )
        )


def _stored_segment(
    ctx: Any, key: str, span: segments.Span, stack: ExitStack
) -> segments.SegmentResult | None:
    """The segment stored under ``key`` (made by this run when it refreshes), as a local
    file kept for the join, or None."""
    if not ctx.workspace.has_result(key):
        return None
    meta = ctx.workspace.result_meta(key)
    if ctx.refresh and meta.get("run") != ctx.run_id:
        return None
    path, _sha, _size = stack.enter_context(local_source(ctx.workspace.result_file(key), 1 << 62))
    return segments.SegmentResult(
        path,
        span[0],
        span[1],
        Fraction(meta["time_base"]),
        [int(p) for p in meta["pts"]],
        int(meta["width"]),
        int(meta["height"]),
        list(meta.get("notes", [])),
        colour=media.Colour(**meta["colour"]),
        # Made by this run (a task of its own): its model calls and time are this run's work.
        model_calls=int(meta.get("model_calls", 0)) if meta.get("run") == ctx.run_id else 0,
        seconds=float(meta.get("seconds", 0)) if meta.get("run") == ctx.run_id else 0.0,
    )


def _segment(
    record: ImageRecord,
    ctx: Any,
    device: str,
    source: str,
    index: int,
    span: segments.Span,
    key: str,
    tmp: str,
    meter: _FrameMeter,
    stack: ExitStack,
) -> segments.SegmentResult:
    """Segment ``index`` of the clip: the stored one, else processed, encoded and stored."""
    stored = _stored_segment(ctx, key, span, stack)
    if stored is not None:
        if not ctx.segment_tasks:  # else the segment's own task announced it
            meter.reused(index, stored.frames)
            ctx.count("video_segments_reused")
        return stored
    enc, _note = encoding(record, ctx, device)
    first = meter.done
    started = time.perf_counter()
    calls_before = ctx.counters.get("model_calls", 0)
    start, end, frames = span
    with FrameProcessor(record, ctx, device, first) as processor:
        part = segments.process_segment(
            source,
            os.path.join(tmp, f"segment-{index + 1:04d}.{enc.ext}"),
            start_pts=start,
            end_pts=end,
            process=processor,
            encoding=enc,
            label=record.name,
            on_frame=lambda done: meter.frame(index, done, done == frames),
            pixel_limit=ctx.settings.pixel_limit,
            frame_time=processor.at,
        )
    if frames and part.frames != frames:
        raise InvalidVideoError(
            record.name,
            f"segment {index + 1} decoded {part.frames} frames, {frames} when it was "
            "prepared: the file is not read the same way twice",
        )
    part.model_calls = ctx.counters.get("model_calls", 0) - calls_before
    ctx.workspace.save_result_file(
        key,
        part.path,
        enc.ext,
        {
            "kind": "video-segment",
            "run": ctx.run_id,
            "time_base": str(part.time_base),
            "pts": part.pts,
            "width": part.width,
            "height": part.height,
            "notes": part.notes,
            "colour": dataclasses.asdict(part.colour),
            "model_calls": part.model_calls,
            "seconds": round(time.perf_counter() - started, 4),
        },
    )
    ctx.count("video_segments")
    return part


def _compute(
    record: ImageRecord, ctx: Any, weights: dict[str, str], device: str, key: str
) -> float:
    """Make (or find) every segment, join them, store the result; returns the seconds
    this run's own segment tasks took for the segments they made."""
    enc, container_note = encoding(record, ctx, device)
    spans = plan(record)
    seg_keys = [video_key(record, ctx, weights, device, segment=i) for i in range(len(spans))]
    total = record.input.frames or sum(n for *_, n in spans)
    meter = _FrameMeter(record.name, total, len(spans))

    with (
        local_source(record.uri, ctx.settings.max_video_bytes) as (path, sha, _size),
        tempfile.TemporaryDirectory(prefix="retouch-video-") as tmp,
        ExitStack() as stack,
    ):
        if sha != record.sha256:
            raise RetouchError(
                "the file changed while the run was going on; run again to process the new version"
            )
        parts = [
            _segment(record, ctx, device, path, i, span, seg_keys[i], tmp, meter, stack)
            for i, span in enumerate(spans)
        ]
        if len({(p.width, p.height) for p in parts}) > 1:
            sizes = ", ".join(f"{p.width}x{p.height}" for p in parts)
            raise segments.VideoError(
                f"{record.name}: the segments came out in different sizes ({sizes}); every "
                "frame of a video must have one size"
            )
        out = os.path.join(tmp, f"result.{enc.ext}")
        joined = segments.join(
            path, parts, out, enc.muxer, record.name, enc.muxer_options(parts[0].time_base)
        )
        expected = [t for p in parts for t in p.times()]
        got, out_tb = segments.video_timestamps(out, record.name)
        wrong = segments.check_timestamps(expected, got, out_tb)
        if wrong:
            raise RetouchError(f"the encoded video does not keep the source's timing: {wrong}")
        notes = [n for n in (container_note,) if n]
        notes += list(dict.fromkeys(n for p in parts for n in p.notes)) + joined.notes
        if got != expected:
            notes.append(
                f"frame times rounded to the {media.CONTAINER_LABELS[enc.ext]} clock "
                f"({out_tb} s); export.video.container=mp4 keeps them exact"
            )
        meta = {
            "kind": "video",
            "format": enc.ext,
            "codec": enc.codec,
            "width": parts[0].width,
            "height": parts[0].height,
            "frames": len(expected),
            "duration": record.input.duration,
            "segments": len(parts),
            "streams": joined.copied + joined.reencoded,
            "colour": parts[0].colour.to_json(),
            "notes": notes,
        }
        if enc.lossless:  # delivered as frames: each one's source time for frames.csv
            meta.update(
                kind="frames",
                time_base=str(parts[0].time_base),
                pts=[p for part in parts for p in part.pts],
            )
        ctx.workspace.save_result_file(key, out, enc.ext, meta)
    for seg_key in seg_keys:  # the joined file holds them now
        ctx.workspace.remove_result(seg_key)
    record.model_calls = sum(p.model_calls for p in parts)
    record.output = _output_fields(meta)
    record.problems += [n for n in notes if n not in record.problems]
    return sum(p.seconds for p in parts)
