"""A short before/after clip of a video for the report.

About two seconds of the clip, from the moment that stands for it in the review, with the
source and the result side by side (stacked for frames more than twice as wide as they are
high), each side reduced so the whole is at most :data:`MAX_WIDTH` pixels wide. It is
H.264 4:2:0 in MP4, without sound, at a CRF that keeps it small enough to be embedded in
the report's one HTML file (about 100-300 KB for two seconds at 640 pixels).

The frames keep the source's timing: each frame lasts as long as it does in the source
(the clip starts at 0, its frames at their source times less the first one's). Source and
result are each opened once, seeked to the key frame before the span and decoded in step:
each source frame is shown beside the result frame with the same time (the result keeps
the source's frame times; a container's coarser clock may have rounded them by up to a
millisecond).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from retouch.lib.errors import RetouchError
from retouch.lib.video.media import (
    Colour,
    ff_reason,
    open_input,
    rotation_of,
    tag_stream,
    video_stream,
    yuv_frame,
)

SECONDS = Fraction(2)
"""How long the preview clip is (a shorter clip gives what it has)."""

MAX_WIDTH = 640
"""Widest the whole preview (both sides) may be, in pixels."""

CRF = 28
"""libx264's constant quality for the preview: small files, still clear at this size."""

PRESET = "veryfast"
"""libx264's speed preset: the preview is made in every review and must stay quick."""

_SLACK = Fraction(1, 1000)  # a result frame time a container's clock rounded


class PreviewClipError(RetouchError):
    """The preview clip could not be made (the message says why)."""


@dataclass(frozen=True)
class PreviewClip:
    """An encoded preview clip and what it shows."""

    data: bytes  # MP4: H.264 yuv420p, no audio
    start: Fraction  # source time of its first frame (s)
    end: Fraction  # source time at which its last frame ends (s)
    frames: int
    width: int  # the whole frame: both sides
    height: int
    stacked: bool  # source above result (else source left, result right)

    def to_json(self) -> dict[str, Any]:
        """What a video's ``scores.preview_clip`` says about it."""
        return {
            "start": round(float(self.start), 4),
            "end": round(float(self.end), 4),
            "frames": self.frames,
            "width": self.width,
            "height": self.height,
            "layout": "stacked" if self.stacked else "side by side",
            "bytes": len(self.data),
        }


def span(
    first: Fraction, duration: Fraction, at: Fraction, seconds: Fraction = SECONDS
) -> tuple[Fraction, Fraction]:
    """The ``[start, end)`` of a preview of ``seconds`` from ``at`` in a clip of
    ``duration`` seconds whose first frame is at ``first``: moved back to end with the
    clip where it would run past it, and the whole clip when it is shorter."""
    last = first + duration
    start = max(first, min(at, last - seconds))
    return start, min(start + seconds, last)


def layout(width: int, height: int, max_width: int = MAX_WIDTH) -> tuple[int, int, bool]:
    """The size of each side of a preview of frames of ``width`` x ``height`` (as shown,
    upright) and whether the sides are stacked: side by side unless the frames are more
    than twice as wide as high; never enlarged; even sides, for 4:2:0."""
    stacked = width > 2 * height
    tile_w = min(width, max_width if stacked else max_width // 2)
    tile_w = max(2, tile_w - tile_w % 2)
    tile_h = max(2, 2 * round(tile_w * height / width / 2))
    return tile_w, tile_h, stacked


def make_preview_clip(
    source: str,
    result: str,
    label: str,
    start: Fraction,
    end: Fraction,
    *,
    max_width: int = MAX_WIDTH,
) -> PreviewClip | None:
    """The frames of ``source`` shown in ``[start, end)`` (seconds of its own clock) beside
    the result's frames at the same times, encoded as one small MP4.

    Returns:
        The clip, or None when the span holds fewer than two frames (a one-frame clip has
        no preview clip).

    Raises:
        PreviewClipError: a file cannot be decoded, the result has no frame at one of the
            source's times, or encoding fails.
        InvalidVideoError: a file cannot be opened or holds no video stream.
    """
    import av

    with (
        open_input(source, label) as src,
        open_input(result, label) as res,
        tempfile.TemporaryDirectory(prefix="retouch-preview-") as tmp,
    ):
        svs, rvs = video_stream(src, label), video_stream(res, label)
        svs.thread_type = rvs.thread_type = "AUTO"
        stb, rtb = Fraction(svs.time_base), Fraction(rvs.time_base)
        src.seek(int(start / stb), stream=svs, backward=True, any_frame=False)
        res.seek(int((start - _SLACK) / rtb), stream=rvs, backward=True, any_frame=False)
        results = _timed(res, rvs, rtb, "result")
        path = os.path.join(tmp, "preview.mp4")
        out = av.open(
            path, "w", format="mp4",
            options={"movflags": "+faststart", "movie_timescale": str(stb.denominator)},
        )  # fmt: skip
        stream: Any = None
        colour = Colour()
        tile_w, tile_h, stacked = 2, 2, False
        first_pts = 0
        frames = 0
        shown: tuple[Fraction, Any] | None = None
        ahead = next(results, None)
        last = end  # when the span ends with the clip
        try:
            for t, frame in _timed(src, svs, stb, "source"):
                if t < start:
                    continue
                if t >= end:
                    last = t  # where the last shown frame ends, exactly
                    break
                while ahead is not None and ahead[0] <= t + _SLACK:
                    shown, ahead = ahead, next(results, None)
                if shown is None or abs(shown[0] - t) > _SLACK:
                    near = f" (nearest {float(shown[0]):.3f} s)" if shown is not None else ""
                    raise PreviewClipError(
                        f"the result has no frame at {float(t):.3f} s{near}: the two do "
                        "not hold the same frames"
                    )
                if stream is None:
                    turned = rotation_of(frame.rotation) in (90, 270)
                    w, h = (frame.height, frame.width) if turned else (frame.width, frame.height)
                    tile_w, tile_h, stacked = layout(w, h, max_width)
                    colour, _note = Colour.of(frame).written()
                    first_pts = frame.pts
                    size = (tile_w, 2 * tile_h) if stacked else (2 * tile_w, tile_h)
                    stream = _open_stream(out, size, stb, svs, colour)
                before, after = _tile(frame, tile_w, tile_h), _tile(shown[1], tile_w, tile_h)
                pixels = np.concatenate((before, after), axis=0 if stacked else 1)
                picture = yuv_frame(pixels, colour)
                picture.pts = frame.pts - first_pts
                picture.time_base = stb
                for packet in stream.encode(picture):
                    out.mux(packet)
                frames += 1
            if stream is not None:
                for packet in stream.encode():
                    out.mux(packet)
        except av.FFmpegError as exc:
            raise PreviewClipError(f"encoding failed: {ff_reason(exc)}") from None
        finally:
            out.close()
        if frames < 2:
            return None
        with open(path, "rb") as fh:
            data = fh.read()
    return PreviewClip(
        data=data,
        start=Fraction(first_pts) * stb,
        end=last,
        frames=frames,
        width=tile_w if stacked else 2 * tile_w,
        height=2 * tile_h if stacked else tile_h,
        stacked=stacked,
    )


def _timed(container: Any, vs: Any, tb: Fraction, which: str) -> Iterator[tuple[Fraction, Any]]:
    """The decoded frames of ``vs`` with their times in seconds (frames without one are
    skipped); a decoding error names ``which`` file it is."""
    import av

    try:
        for frame in container.decode(vs):
            if frame.pts is not None:
                yield Fraction(frame.pts) * tb, frame
    except av.FFmpegError as exc:
        raise PreviewClipError(f"decoding the {which} failed: {ff_reason(exc)}") from None


def _tile(frame: Any, width: int, height: int) -> np.ndarray:
    """A decoded frame upright, fitted into ``width`` x ``height`` (HxWx3 BGR uint8; a
    frame of another shape is centred on black), converted with its own colour tags."""
    from av.video.reformatter import Interpolation as I  # noqa: E741

    rotation = rotation_of(frame.rotation)
    w, h = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
    scale = min(width / w, height / h)
    fit_w, fit_h = max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale)))
    coded_w, coded_h = (fit_h, fit_w) if rotation in (90, 270) else (fit_w, fit_h)
    pixels = frame.to_ndarray(
        format="bgr24",
        width=coded_w,
        height=coded_h,
        interpolation=I.AREA,  # the review's exact conversions are not needed for a preview
    )
    if rotation:
        pixels = np.rot90(pixels, rotation // 90)
    if (fit_w, fit_h) == (width, height):
        return np.ascontiguousarray(pixels)
    tile = np.zeros((height, width, 3), np.uint8)
    top, left = (height - fit_h) // 2, (width - fit_w) // 2
    tile[top : top + fit_h, left : left + fit_w] = pixels
    return tile


def _open_stream(out: Any, size: tuple[int, int], tb: Fraction, source: Any, colour: Colour) -> Any:
    rate = source.average_rate or source.guessed_rate or 25
    stream = out.add_stream("libx264", rate=rate, options={"crf": str(CRF), "preset": PRESET})
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    tag_stream(stream, colour)
    stream.time_base = tb
    stream.codec_context.time_base = tb
    return stream
