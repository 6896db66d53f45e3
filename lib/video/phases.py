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
- **review**: a few frames sampled across the clip are scored as images are; the worst
  one stands for the clip and gives the thumbnails and a short before/after preview clip
  (:mod:`~retouch.lib.video.preview_clip`).
- **export**: the stored file is delivered under its planned name (container extension);
  with ``export.video.container = "frames"`` the stored frames (lossless) are written as a
  folder of numbered images with ``frames.csv`` and the audio (:func:`export_frames`).

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
from pathlib import PurePosixPath
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
from retouch.lib.video import media, preview_clip, segments
from retouch.lib.video.temporal import StaticBlend, flickers, frame_change

VIDEO_KEY_LAYOUT = "video-2"  # 2: segments cut at key frames; colour tags kept
"""Part of every video result key: bump it when the same inputs would give another file."""

REVIEW_SAMPLES = (Fraction(1, 6), Fraction(1, 2), Fraction(5, 6))
"""Where in the clip the review samples frames (fractions of its duration)."""

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


# -- review ------------------------------------------------------------------------------------


def sample_frames(
    path: str, label: str, times: list[Fraction], *, to_end: bool = False
) -> list[tuple[Fraction, Image, Image | None]]:
    """For each time, the first frame at or after it (seeking to the keyframe before it),
    upright, with its exact time, and the frame after it (None at the clip's end). Times
    must be increasing. ``to_end``: a time after the last frame starts gives the last
    frame (the review's times lie in the clip, the last of a one-frame clip after it)."""
    out: list[tuple[Fraction, Image, Image | None]] = []
    with media.open_input(path, label) as c:
        vs = media.video_stream(c, label)
        tb = Fraction(vs.time_base)
        for target in times:
            c.seek(int(target / tb), stream=vs, backward=True, any_frame=False)
            found: tuple[Fraction, Image] | None = None
            last: tuple[Fraction, Any] | None = None
            for frame in c.decode(vs):
                if frame.pts is None:
                    continue
                t = Fraction(frame.pts) * tb
                if found is not None:
                    out.append(
                        (*found, media.frame_image(frame, media.rotation_of(frame.rotation)))
                    )
                    break
                if t >= target:
                    found = (t, media.frame_image(frame, media.rotation_of(frame.rotation)))
                last = (t, frame)
            else:
                if found is None and last is not None and to_end:
                    t, frame = last
                    found = (t, media.frame_image(frame, media.rotation_of(frame.rotation)))
                if found is not None:
                    out.append((*found, None))
    return out


def parse_time(text: str) -> Fraction:
    """A time in a clip: seconds (``80``, ``80.5``) or ``[HH:]MM:SS[.fff]`` (``1:20``,
    ``00:01:20.5``).

    Raises:
        ValueError: anything else, or a negative time.
    """
    parts = text.strip().split(":")
    try:
        if not 1 <= len(parts) <= 3 or any(not p for p in parts):
            raise ValueError
        seconds = Fraction(parts[-1])
        for n, part in enumerate(reversed(parts[:-1]), start=1):
            if not part.isdigit() or (seconds >= 60 and n == 1):
                raise ValueError
            seconds += int(part) * 60**n
    except (ValueError, ZeroDivisionError):
        raise ValueError(
            f"time {text!r}: give seconds (80.5) or [HH:]MM:SS[.fff] (00:01:20.5)"
        ) from None
    if seconds < 0:
        raise ValueError(f"time {text!r}: a time in the clip is not negative")
    return seconds


def frame_at(uri: str, label: str, at: Fraction | None, max_bytes: int) -> tuple[Fraction, Image]:
    """The frame of the video at ``uri`` shown at ``at`` seconds from its first frame (the
    middle of the clip when None), upright, and its time: one seek and the frames from the
    key frame before it, so any moment of a long clip comes back in seconds.

    Raises:
        InvalidVideoError: not a readable video, or ``at`` is beyond its end.
    """
    with local_source(uri, max_bytes) as (path, _sha, _size):
        with media.open_input(path, label) as c:
            vs = media.video_stream(c, label)
            tb = Fraction(vs.time_base)
            start = Fraction(vs.start_time or 0) * tb
            if vs.duration:
                length = Fraction(vs.duration) * tb
            else:
                length = Fraction(c.duration or 0, 1_000_000)
        if at is None:
            at = length / 2
        found = sample_frames(path, label, [start + at]) if length == 0 or at < length else []
    if not found:
        raise InvalidVideoError(
            label, f"no frame at {float(at):.3f} s: the clip is {float(length):.3f} s long"
        )
    t, image, _next = found[0]
    return t - start, image


def moment_labels(count: int) -> list[str]:
    """Thumbnail labels of a video's sampled moments: ``moment-1-before``, ``moment-1-after``..."""
    return [f"moment-{k}-{side}" for k in range(1, count + 1) for side in ("before", "after")]


def write_moment_thumbs(ctx: Any, record: ImageRecord, k: int, before: Image, after: Image) -> None:
    """The report's before/after thumbnails of the ``k``-th sampled moment of a video (at
    the size they were compared)."""
    from retouch.lib.imageio import encode
    from retouch.lib.phases.review import THUMB_MAX_SIDE, thumb_path

    for side, image in (("before", before), ("after", after)):
        view = downscaled(image, THUMB_MAX_SIDE)
        view.info = {}
        storage.write_bytes(
            thumb_path(ctx, record, f"moment-{k}-{side}"),
            encode(view, "jpg", quality=82, keep_metadata=False),
            durable=False,
        )


PREVIEW_CLIP = "preview-clip"
"""The report's view label of a video's before/after preview clip (MP4 bytes)."""


def preview_clip_path(ctx: Any, record: ImageRecord) -> str:
    """Where the review writes a video's before/after preview clip, beside its thumbnails."""
    return ctx.workspace.run_path(ctx.run_id, "thumbs", f"{record.index:06d}-{PREVIEW_CLIP}.mp4")


def write_preview_clip(
    ctx: Any, record: ImageRecord, source: str, result: str, at: Fraction
) -> None:
    """Make and store the report's before/after preview clip of a video, about two seconds
    from ``at`` (clamped to the clip), and say what it shows in ``scores.preview_clip``.
    A clip of one frame has none; a failure is the video's problem line, never its
    failure."""
    first = Fraction(str(record.input.start or 0))
    duration = Fraction(str(record.input.duration or 0))
    start, end = preview_clip.span(first, duration, at)
    try:
        clip = preview_clip.make_preview_clip(source, result, record.name, start, end)
        if clip is not None:
            storage.write_bytes(preview_clip_path(ctx, record), clip.data, durable=False)
    except Exception as exc:  # a preview is not worth a video: said, and the review goes on
        reason = reason_of(exc) if isinstance(exc, RetouchError) else f"{type(exc).__name__}: {exc}"
        record.problems.append(f"preview clip: {reason}")
        return
    if clip is not None:
        record.scores.preview_clip = clip.to_json()


def review_video(record: ImageRecord, ctx: Any) -> ImageRecord:
    """Score frames sampled across the clip (at 1/6, 1/2 and 5/6 of it) against the same
    frames of the result; the worst-scoring one stands for the clip (its scores, verdict
    and thumbnails), and ``scores["frames"]`` lists each sample's time and score. At each
    sample the change to the next frame is measured in the source and the result: a result
    that changes well beyond its source (:func:`flickers`) is a problem named by its time.
    The report's before/after preview clip starts at the worst sample
    (:func:`write_preview_clip`)."""
    from retouch.lib.phases.review import review_pair, reviewing, score_pair

    if not record.ok or record.result_key is None:
        progress.emit(progress.ImagePhaseDone(phase="review", name=record.name, ok=record.ok))
        return record
    with reviewing(record, ctx), ExitStack() as files:
        first = Fraction(str(record.input.start or 0))
        duration = Fraction(str(record.input.duration or 0))
        targets = sorted({first + duration * k for k in REVIEW_SAMPLES})
        path, _sha, _size = files.enter_context(
            local_source(record.uri, ctx.settings.max_video_bytes)
        )
        before = sample_frames(path, record.name, targets, to_end=True)
        # Distinct frames only (a short clip may give one frame for several times).
        before = list({t: (t, img, nxt) for t, img, nxt in before}.values())
        result, _sha, _size = files.enter_context(
            local_source(ctx.workspace.result_file(record.result_key), 1 << 62)
        )
        # A frame a container's coarser clock rounded down is still found.
        after = sample_frames(result, record.name, [t - Fraction(1, 1000) for t, *_ in before])
        if not before or len(after) != len(before):
            raise RetouchError("could not find the sampled frames in the result")
        samples = []
        changes = []
        for k, ((t, b, b_next), (_t, a, a_next)) in enumerate(zip(before, after, strict=True)):
            probe = ImageRecord(**record.model_dump(exclude={"scores", "problems"}))
            compared = score_pair(probe, ctx, b, a, frame_time=t - clip_start(record))
            write_moment_thumbs(ctx, record, k + 1, *compared)
            samples.append((probe.scores.score or 0.0, t, b, a, probe.scores))
            changes.append((frame_change(b, b_next), frame_change(a, a_next)))
        worst = min(samples, key=lambda s: (s[0], s[1]))
        review_pair(record, ctx, worst[2], worst[3], frame_time=worst[1] - clip_start(record))
        record.scores.frames = [
            {
                "time": round(float(t), 4),
                "score": scores.score,
                "verdict": scores.verdict,
                "change_before": None if was is None else round(was, 2),
                "change_after": None if now is None else round(now, 2),
            }
            for (_s, t, _b, _a, scores), (was, now) in zip(samples, changes, strict=True)
        ]
        for (_s, t, *_), (was, now) in zip(samples, changes, strict=True):
            if flickers(was, now):
                record.problems.append(
                    f"flicker at {float(t):.2f} s: the result changes by {now:.1f} levels "
                    f"from one frame to the next, the source by {was:.1f}"
                )
        write_preview_clip(ctx, record, path, result, worst[1])
        times = ", ".join(f"{float(t):.2f} s" for _s, t, *_ in samples)
        record.problems.append(
            f"review: {len(samples)} sampled frames scored (at {times}), not every frame; "
            f"the scores and previews are the worst one's (at {float(worst[1]):.2f} s)"
        )
    return record


# -- export ------------------------------------------------------------------------------------

_NOT_FOR_VIDEO = ("resize", "watermark")


def export_video(record: ImageRecord, ctx: Any) -> ImageRecord:
    """Deliver the stored video under each planned name (one per export profile: the same
    file; the profiles' image settings are not applied to videos, stated when set). What
    each output holds is read back from the delivered file."""
    from retouch.lib.phases.export import (
        NOTE_PREFIXES,
        exporting,
        note_prefix,
        planned_outputs,
        staging_path,
    )

    if ctx.recipe.export.video.container == "frames":
        return export_frames(record, ctx)
    with exporting(record):
        _stored_kind(record, ctx, "video")
        record.problems = [p for p in record.problems if not p.startswith(NOTE_PREFIXES)]
        planned = planned_outputs(record, ctx.recipe)
        several = len(ctx.recipe.export.effective_profiles()) > 1
        outputs: list[dict[str, Any]] = []
        said: list[str] = []
        with local_source(ctx.workspace.result_file(record.result_key), 1 << 62) as (
            local,
            sha,
            size,
        ):
            held = _held(local, record.name)
            for profile, member in planned:
                notes = [
                    f"{what} is not applied to videos in this version"
                    for what in _NOT_FOR_VIDEO
                    if getattr(profile, what) is not None
                ]
                if profile.colour == "srgb":
                    notes.append("colour conversion to sRGB is not applied to videos")
                storage.put_file(local, staging_path(ctx, member))
                outputs.append(
                    {
                        "profile": profile.name,
                        "name": member,
                        **held,
                        "bytes": size,
                        "sha256": sha,
                        "notes": notes,
                    }
                )
                said += [note_prefix(profile, several) + n for n in notes]
        record.outputs = outputs
        record.problems += [n for n in dict.fromkeys(said) if n not in record.problems]
        record.output_sha256 = str(outputs[0]["sha256"])
        record.output.update({k: outputs[0][k] for k in (*held, "bytes")})
        record.status = "ok"
    return record


def _stored_kind(record: ImageRecord, ctx: Any, kind: str) -> dict[str, Any]:
    """The stored result's meta, checked to be there and of ``kind`` ("video" or "frames")."""
    assert record.result_key is not None
    if not ctx.workspace.has_result(record.result_key):
        raise RetouchError(
            f"result {record.result_key[:12]} is missing from the workspace "
            f"{ctx.workspace.root}; run again with --refresh to recompute it"
        )
    meta: dict[str, Any] = ctx.workspace.result_meta(record.result_key)
    if meta.get("kind", "video") != kind:
        raise RetouchError(
            f"the stored result is {meta.get('kind', 'video')}, not {kind} as "
            "export.video.container asks; run again with --refresh to recompute it"
        )
    return meta


def seconds_text(t: Fraction) -> str:
    """A time in seconds as a decimal: exact where it has a finite decimal expansion of at
    most 9 places (ns), else rounded to 9 places."""
    scaled = t * 10**9
    nanos = round(scaled)
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), 10**9)
    return f"{sign}{whole}.{frac:09d}".rstrip("0").rstrip(".") if frac else f"{sign}{whole}"


def frames_csv(pts: list[int], time_base: Fraction, names: list[str]) -> str:
    """``frames.csv`` of an image sequence: per frame its number, file, source pts, the
    stream's time base (so ``pts * time_base`` is its exact time), its time and duration in
    seconds. A frame lasts until the next one; the last one the clip's mean frame duration
    (1/25 s alone), as the clip's duration counts it."""
    times = [Fraction(p) * time_base for p in pts]
    span = times[-1] - times[0]
    last = span / (len(times) - 1) if len(times) > 1 else Fraction(1, 25)
    lines = ["index,file,pts,time_base,time,duration"]
    for i, (t, name) in enumerate(zip(times, names, strict=True)):
        duration = times[i + 1] - t if i + 1 < len(times) else last
        lines.append(
            f"{i + 1},{name},{pts[i]},{time_base},{seconds_text(t)},{seconds_text(duration)}"
        )
    return "\n".join(lines) + "\n"


def export_frames(record: ImageRecord, ctx: Any) -> ImageRecord:
    """Deliver the stored lossless result as an image sequence under each planned name (a
    folder per export profile): ``<stem>_000001.png``... (numbered from 1, zero-padded to
    the count's width, at least 6 digits; ``export.video.frames_format``), ``frames.csv``
    (each frame's source time, :func:`frames_csv`) and each audio stream copied
    (:func:`segments.copy_audio`).

    The frames are decoded from the stored file bit for bit as processed, checked against
    the stored frame times (count and each time), encoded once (JPEG once per profile
    ``quality``) and staged per profile; the folder's listing
    (:func:`~retouch.lib.phases.export.frames_listing`) is written last, so the delivery
    never packs part of a sequence.
    """
    from retouch.lib.imageio import encode, format_extension
    from retouch.lib.phases.export import (
        NOTE_PREFIXES,
        exporting,
        frames_listing,
        note_prefix,
        planned_outputs,
        staging_path,
    )
    from retouch.lib.phases.keys import sha256_bytes

    with exporting(record):
        meta = _stored_kind(record, ctx, "frames")
        assert record.result_key is not None
        record.problems = [p for p in record.problems if not p.startswith(NOTE_PREFIXES)]
        planned = planned_outputs(record, ctx.recipe)
        several = len(ctx.recipe.export.effective_profiles()) > 1
        fmt = ctx.recipe.export.video.frames_format
        ext = format_extension(fmt)
        # JPEG frames at each profile's quality (one encoding per distinct quality);
        # lossless formats once for all profiles.
        quality_of = {
            member: (profile.quality if fmt == "jpg" else 0) for profile, member in planned
        }
        time_base = Fraction(meta["time_base"])
        pts = [int(p) for p in meta["pts"]]
        digits = max(6, len(str(len(pts))))
        stems = {member: PurePosixPath(member).name for _p, member in planned}
        for _profile, member in planned:  # an earlier, unfinished export's files go first
            if storage.exists(frames_listing(ctx, member)):
                storage.remove(frames_listing(ctx, member))
            staged = storage.local_path(staging_path(ctx, member))
            if staged is not None and os.path.isdir(staged):
                shutil.rmtree(staged)
        # Per quality: (file in the folder, bytes, sha256) of each frame, in order.
        files: dict[int, list[tuple[str, int, str]]] = {q: [] for q in quality_of.values()}
        names: list[str] = []
        size: tuple[int, int] | None = None
        with (
            local_source(ctx.workspace.result_file(record.result_key), 1 << 62) as (local, *_),
            tempfile.TemporaryDirectory(prefix="retouch-frames-") as tmp,
        ):
            with media.open_input(local, record.name) as c:
                vs = media.video_stream(c, record.name)
                stored_tb = Fraction(vs.time_base)
                for frame in c.decode(vs):
                    n = len(names)
                    if (
                        n >= len(pts)
                        or frame.pts is None
                        or (Fraction(frame.pts) * stored_tb != Fraction(pts[n]) * time_base)
                    ):
                        raise RetouchError(
                            f"the stored frames do not match their times at frame {n + 1}; "
                            "run again with --refresh to recompute them"
                        )
                    image = media.frame_image(frame, 0)
                    size = size or (image.width, image.height)
                    number = f"{n + 1:0{digits}d}.{ext}"
                    for q, listed_q in files.items():
                        data = encode(image, fmt, quality=q or 92, keep_metadata=False)
                        for member, stem in stems.items():
                            if quality_of[member] == q:
                                storage.write_bytes(
                                    staging_path(ctx, f"{member}/{stem}_{number}"),
                                    data,
                                    durable=False,
                                )
                        listed_q.append((number, len(data), sha256_bytes(data)))
                    names.append(number)
            if len(names) != len(pts) or size is None:
                raise RetouchError(
                    f"the stored result holds {len(names)} of the {len(pts)} frames; run "
                    "again with --refresh to recompute them"
                )
            audio = segments.copy_audio(local, tmp, record.name)
            outputs: list[dict[str, Any]] = []
            said: list[str] = []
            for profile, member in planned:
                stem = stems[member]
                listed = [(f"{stem}_{name}", b, sha) for name, b, sha in files[quality_of[member]]]
                csv = frames_csv(pts, time_base, [name for name, *_ in listed]).encode()
                storage.write_bytes(staging_path(ctx, f"{member}/frames.csv"), csv, durable=False)
                listed.append(("frames.csv", len(csv), sha256_bytes(csv)))
                for name, path in audio:
                    storage.put_file(path, staging_path(ctx, f"{member}/{name}"))
                    with open(path, "rb") as fh:
                        blob = fh.read()
                    listed.append((name, len(blob), sha256_bytes(blob)))
                notes = _frames_notes(record, profile)
                digest = sha256_bytes(
                    "".join(f"{sha}  {name}\n" for name, _b, sha in listed).encode()
                )
                ctx.workspace.write_json(
                    frames_listing(ctx, member), {"folder": member, "files": listed}
                )
                outputs.append(
                    {
                        "profile": profile.name,
                        "name": member,
                        "kind": "frames",
                        "folder": member,
                        "format": fmt,
                        **({"quality": profile.quality} if fmt == "jpg" else {}),
                        "width": size[0],
                        "height": size[1],
                        "frames": len(pts),
                        "files": len(listed),
                        "bit_depth": 8,
                        "alpha": False,
                        "gray": False,
                        "audio": [name for name, _path in audio],
                        "bytes": sum(b for _n, b, _s in listed),
                        "sha256": digest,
                        "notes": notes,
                    }
                )
                said += [note_prefix(profile, several) + n for n in notes]
        record.outputs = outputs
        record.problems += [n for n in dict.fromkeys(said) if n not in record.problems]
        record.output_sha256 = str(outputs[0]["sha256"])
        for key in ("codec", "colour", "streams"):
            record.output.discard(key)
        first = outputs[0]
        record.output.update(
            {
                k: first[k]
                for k in (
                    "kind",
                    "format",
                    "width",
                    "height",
                    "frames",
                    "bit_depth",
                    "alpha",
                    "gray",
                    "bytes",
                    "folder",
                    "files",
                    "audio",
                )
            }  # fmt: skip
        )
        record.status = "ok"
    return record


def _frames_notes(record: ImageRecord, profile: Any) -> list[str]:
    """What a user must be told about an image sequence made of ``record`` under
    ``profile``: the profile settings not applied, streams left out, HDR values as coded."""
    notes = [
        f"{what} is not applied to videos in this version"
        for what in _NOT_FOR_VIDEO
        if getattr(profile, what) is not None
    ]
    if profile.colour == "srgb":
        notes.append("colour conversion to sRGB is not applied to videos")
    held = record.input.to_json()
    subtitles = [s for s in held.get("streams") or [] if s.get("kind") == "subtitle"]
    if subtitles:
        notes.append(
            f"{len(subtitles)} subtitle stream(s) left out: an image sequence holds the frames, "
            "frames.csv and the audio (export.video.container=mkv keeps subtitles)"
        )
    transfer = (held.get("colour") or {}).get("transfer")
    if transfer in ("smpte2084", "arib-std-b67"):
        notes.append(
            f"HDR frames ({transfer}) written as coded, without tone mapping: the image "
            "files carry no HDR tags, so they look flat in an SDR viewer"
        )
    return notes


def _held(path: str, label: str) -> dict[str, Any]:
    """What a video file holds, read from it: container, codec, size, frames, streams."""
    times, _tb = segments.video_timestamps(path, label)
    with media.open_input(path, label) as c:
        vs = media.video_stream(c, label)
        names = c.format.name.split(",")
        if "mp4" in names:  # one demuxer for both: the file's brand tells them apart
            brand = str(c.metadata.get("major_brand", "")).strip()
            fmt = "mov" if brand == "qt" else "mp4"
        elif "matroska" in names:  # one demuxer for both; WebM is named by its extension
            fmt = "webm" if extension(path) == "webm" else "mkv"
        else:
            fmt = names[0]
        return {
            "kind": "video",
            "format": fmt,
            "codec": vs.codec_context.name,
            "width": int(vs.codec_context.width),
            "height": int(vs.codec_context.height),
            "frames": len(times),
            "bit_depth": 8,
            "alpha": False,
            "gray": False,
            "streams": [f"{s.type} {s.codec_context.name}" for s in c.streams if s.type != "video"],
            "colour": media.Colour.of(vs.codec_context).to_json(),
        }
