"""The review phase of a video record (:mod:`retouch.lib.video.phases` has the others):
frames sampled across the clip scored as images are, a before/after slider per sampled
moment, a flicker check at each, and a short before/after preview clip; also finding the
frame shown at a moment of a clip (``retouch preview/tune --at``).
"""

from __future__ import annotations

from contextlib import ExitStack
from fractions import Fraction
from typing import Any

from retouch.lib import progress, storage
from retouch.lib.errors import InvalidVideoError, RetouchError, reason_of
from retouch.lib.image import Image, downscaled
from retouch.lib.records import ImageRecord
from retouch.lib.video import media, preview_clip
from retouch.lib.video.phases import clip_start, local_source
from retouch.lib.video.temporal import flickers, frame_change

REVIEW_SAMPLES = (Fraction(1, 6), Fraction(1, 2), Fraction(5, 6))
"""Where in the clip the review samples frames (fractions of its duration)."""


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
