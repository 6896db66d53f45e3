"""Frame-exact streaming processing of a video, one segment at a time, and the remux join.

A *segment* is the frames whose timestamps lie in ``[start_pts, end_pts)`` of the source's
video stream (``None``: from the first / to the last frame). :func:`process_segment` decodes
them (seeking to the keyframe before ``start_pts``), passes each through a function and
encodes the results with the **source's time base and each frame's own pts**, so a
variable frame rate stays exact. It writes the video stream only; :func:`join` remuxes the
encoded segments, in order, with the source's audio and subtitle streams (packets copied;
an audio codec the output container refuses is re-encoded to AAC) into the delivered file.

:func:`plan_segments` cuts a clip at its own key frames into segments of at least a given
length, so each segment's decoding starts at a key frame and no frame is decoded twice;
frames are never added or dropped at a cut.
"""

from __future__ import annotations

import heapq
import io
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from retouch.lib.errors import InvalidVideoError, RetouchError
from retouch.lib.image import Image
from retouch.lib.video.media import (
    Colour,
    Encoding,
    even_pixels,
    ff_reason,
    frame_image,
    frame_size_refusal,
    open_input,
    rgb_frame,
    rotation_of,
    tag_stream,
    video_stream,
    yuv_frame,
)

FrameFn = Callable[[Image], Image]


class VideoError(RetouchError):
    """Processing or joining a video failed (the message says where)."""


@dataclass
class SegmentResult:
    """An encoded segment: where it is, its frames' source pts, what changed."""

    path: str
    start_pts: int | None
    end_pts: int | None
    time_base: Fraction
    pts: list[int]
    width: int  # encoded size
    height: int
    notes: list[str] = field(default_factory=list)
    colour: Colour = field(default_factory=Colour)  # the tags the frames were written with
    model_calls: int = 0  # made by this run: the model calls its frames took
    seconds: float = 0.0  # made by this run in a task of its own: the time it took

    @property
    def frames(self) -> int:
        return len(self.pts)

    def times(self) -> list[Fraction]:
        return [Fraction(p) * self.time_base for p in self.pts]


def process_segment(
    src: str,
    dst: str,
    *,
    start_pts: int | None,
    end_pts: int | None,
    process: FrameFn,
    encoding: Encoding,
    label: str,
    on_frame: Callable[[int], None] | None = None,
    pixel_limit: int | None = None,
    frame_time: Callable[[Fraction], None] | None = None,
) -> SegmentResult:
    """Decode the frames of ``[start_pts, end_pts)`` of ``src``, run ``process`` on each
    (an upright HxWx3 BGR uint8 :class:`Image`) and encode them into ``dst`` (video only,
    ``encoding``'s codec and container) with their source pts. A lossless ``encoding``
    (:data:`~.media.LOSSLESS`) stores each frame's pixels as they came out of ``process``,
    at any size.

    One frame is in memory at a time (plus the encoder's own look-ahead). Every frame must
    come out of ``process`` at the same size; an odd width or height is padded by one edge
    row or column (4:2:0 needs even sides), stated in the notes. Rotation metadata is
    applied to the pixels (frames are processed upright), so the output has none. The
    frames are written with the first source frame's colour range, matrix, primaries and
    transfer (:meth:`~.media.Colour.written`: a matrix that cannot be written is stated).
    ``frame_time`` is told each frame's time (seconds: its pts x the time base) just before
    ``process`` gets the frame.

    Raises:
        InvalidVideoError: the source cannot be read or decoded.
        VideoError: a frame changed size, the first one came out larger than
            ``pixel_limit`` or the encoder takes (before anything is encoded), or encoding
            failed.
    """
    import av

    notes: list[str] = []
    pts: list[int] = []
    with open_input(src, label) as inp:
        vs = video_stream(inp, label)
        vs.thread_type = "AUTO"
        tb = Fraction(vs.time_base)
        rate = vs.average_rate or vs.guessed_rate or 25
        if start_pts is not None:
            inp.seek(start_pts, stream=vs, backward=True, any_frame=False)
        out = av.open(dst, "w", format=encoding.muxer, options=encoding.muxer_options(tb))
        stream: Any = None
        size: tuple[int, int] | None = None
        colour = Colour()
        try:
            for frame in _frames(inp, vs, label):
                if frame.pts is None:
                    raise InvalidVideoError(label, f"frame {len(pts) + 1} has no timestamp")
                if start_pts is not None and frame.pts < start_pts:
                    continue
                if end_pts is not None and frame.pts >= end_pts:
                    break
                if pts and frame.pts <= pts[-1]:
                    raise InvalidVideoError(
                        label, f"timestamps go backwards at frame {len(pts) + 1}"
                    )
                rotation = rotation_of(frame.rotation)
                upright = frame_image(frame, rotation)
                if frame_time is not None:
                    frame_time(Fraction(frame.pts) * tb)
                result = process(upright)
                pixels = result.to_uint8()
                h, w = pixels.shape[:2]
                if size is None:
                    size = (w, h)
                    padded = pixels if encoding.lossless else even_pixels(pixels)
                    too_big = frame_size_refusal(
                        padded.shape[1], padded.shape[0], encoding.codec, pixel_limit
                    )
                    if too_big:
                        raise VideoError(
                            f"{label}: output frames of {padded.shape[1]}x{padded.shape[0]} "
                            f"(from {upright.width}x{upright.height}) are {too_big}"
                        )
                    if encoding.lossless:  # RGB as processed: only what it depicts is kept
                        source = Colour.of(frame)
                        colour = Colour(primaries=source.primaries, transfer=source.transfer)
                    else:
                        colour, colour_note = Colour.of(frame).written()
                        notes += [colour_note] if colour_note else []
                    stream = _open_stream(out, encoding, padded, tb, rate, colour)
                    if padded.shape[:2] != pixels.shape[:2]:
                        notes.append(
                            f"frames padded from {w}x{h} to {padded.shape[1]}x"
                            f"{padded.shape[0]} (edge pixels repeated): "
                            f"{encoding.codec} in 4:2:0 needs even sides"
                        )
                    if rotation:
                        notes.append(
                            f"rotation ({rotation} degrees) applied to the pixels, so the "
                            "output plays upright without rotation metadata"
                        )
                elif (w, h) != size:
                    raise VideoError(
                        f"{label}: frame {len(pts) + 1} came out {w}x{h}, the first frame "
                        f"{size[0]}x{size[1]}; every frame of a video must have one size"
                    )
                if encoding.lossless:
                    out_frame = rgb_frame(pixels)
                else:
                    out_frame = yuv_frame(even_pixels(pixels), colour)
                out_frame.pts = frame.pts
                out_frame.time_base = tb
                for packet in stream.encode(out_frame):
                    out.mux(packet)
                pts.append(frame.pts)
                if on_frame is not None:
                    on_frame(len(pts))
            if stream is not None:
                for packet in stream.encode():
                    out.mux(packet)
        except av.FFmpegError as exc:
            raise VideoError(f"{label}: encoding failed: {ff_reason(exc)}") from None
        finally:
            out.close()
    if not pts or size is None:
        raise InvalidVideoError(label, "no frame in the segment")
    width, height = size if encoding.lossless else (size[0] + size[0] % 2, size[1] + size[1] % 2)
    return SegmentResult(dst, start_pts, end_pts, tb, pts, width, height, notes, colour)


def _frames(inp: Any, vs: Any, label: str) -> Iterator[Any]:
    import av

    count = 0
    try:
        for frame in inp.decode(vs):
            count += 1
            yield frame
    except av.FFmpegError as exc:
        raise InvalidVideoError(
            label, f"decoding failed after {count} frames: {ff_reason(exc)}"
        ) from None


def _open_stream(
    out: Any, encoding: Encoding, first: Any, tb: Fraction, rate: Any, colour: Colour
) -> Any:
    stream = out.add_stream(encoding.encoder, rate=rate, options=encoding.options())
    stream.height, stream.width = int(first.shape[0]), int(first.shape[1])
    stream.pix_fmt = encoding.pix_fmt
    tag_stream(stream, colour)
    stream.time_base = tb
    stream.codec_context.time_base = tb
    return stream


# -- planning --------------------------------------------------------------------------------

Span = tuple[int | None, int | None, int]
"""A planned segment: ``(start_pts, end_pts, frames)``, ``None`` for the clip's ends."""


def plan_segments(
    pts: list[int], keyframes: list[int], time_base: Fraction, seconds: float
) -> list[Span]:
    """The clip's segments: cut at key frames only, each at least ``seconds`` long (the last
    one may be shorter); one segment when the clip has no key frame after its first frame.

    ``pts``: every frame's time in presentation order; ``keyframes``: the times of its key
    frames. Together the segments hold every frame exactly once.
    """
    if not pts:
        return []
    keys = set(keyframes)
    least = Fraction(seconds).limit_denominator(1000)
    starts = [0]
    for i in range(1, len(pts)):
        if pts[i] in keys and (pts[i] - pts[starts[-1]]) * time_base >= least:
            starts.append(i)
    out: list[Span] = []
    for n, first in enumerate(starts):
        last = starts[n + 1] if n + 1 < len(starts) else len(pts)
        out.append(
            (
                None if n == 0 else pts[first],
                None if last == len(pts) else pts[last],
                last - first,
            )
        )
    return out


# -- join ------------------------------------------------------------------------------------


@dataclass
class JoinResult:
    """What the delivered file holds besides the video, and what changed on the way."""

    copied: list[str] = field(default_factory=list)  # "audio aac", "subtitle subrip"
    reencoded: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


_AAC_FRAME = 1024  # samples per AAC frame


def _accepts(muxer: str, stream: Any) -> bool:
    """Whether ``muxer`` takes ``stream``'s codec as it is (tried on an empty output)."""
    import av

    probe = av.open(io.BytesIO(), "w", format=muxer)
    try:
        probe.add_stream_from_template(stream)
        probe.start_encoding()
        return True
    except (av.FFmpegError, ValueError, TypeError):
        return False
    finally:
        try:
            probe.close()
        except (av.FFmpegError, ValueError):
            pass


def join(
    src: str,
    segments: list[SegmentResult],
    dst: str,
    muxer: str,
    label: str,
    options: dict[str, str] | None = None,
) -> JoinResult:
    """Remux ``segments`` (in order) and the audio and subtitle streams of ``src`` into
    ``dst`` (FFmpeg ``muxer``), interleaved by time; nothing of the video is re-encoded.

    ``options``: the muxer's (see :meth:`Encoding.muxer_options`). Audio packets are
    copied unless ``muxer`` refuses their codec: then that stream is
    decoded and encoded to AAC (stated). A subtitle stream the container refuses is left
    out (stated).
    """
    import av

    result = JoinResult()
    seg_inputs = [av.open(s.path) for s in segments]
    try:
        with open_input(src, label) as inp:
            out = av.open(dst, "w", format=muxer, options=options or {})
            try:
                vtemplate = seg_inputs[0].streams.video[0]
                vout = out.add_stream_from_template(vtemplate, opaque=True)
                vout.time_base = vtemplate.time_base
                routes: dict[int, tuple[Any, Any]] = {}  # source index -> (out, encoder?)
                for s in inp.streams:
                    if s.type not in ("audio", "subtitle"):
                        continue
                    name = s.codec_context.name if s.codec_context else "unknown"
                    if _accepts(muxer, s):
                        routes[s.index] = (out.add_stream_from_template(s), None)
                        result.copied.append(f"{s.type} {name}")
                    elif s.type == "audio":
                        rate = int(s.codec_context.sample_rate)
                        channels = max(1, int(s.codec_context.channels or 1))
                        # An unordered layout ("1 channels", from AVI or WAV) becomes the
                        # standard one of that many channels, which the encoder accepts.
                        layout = av.AudioLayout(f"{channels}c")
                        aac = out.add_stream("aac", rate=rate)
                        aac.layout = layout
                        aac.time_base = Fraction(1, rate)
                        # AAC allows at most 6 bits per sample and channel.
                        aac.codec_context.bit_rate = min(64000, 6 * rate) * channels
                        resampler = av.AudioResampler(
                            format="fltp", layout=layout, rate=rate, frame_size=_AAC_FRAME
                        )
                        routes[s.index] = (aac, resampler)
                        result.reencoded.append(f"audio {name} -> aac")
                        result.notes.append(
                            f"audio stream {s.index} ({name}) re-encoded to AAC: "
                            f"{muxer} cannot hold {name}"
                        )
                    else:
                        result.notes.append(
                            f"subtitle stream {s.index} ({name}) left out: {muxer} cannot "
                            f"hold {name} (export.video.container=mkv keeps it)"
                        )
                packets = heapq.merge(
                    _video_packets(seg_inputs, label),
                    _side_packets(inp, list(routes)),
                    key=lambda item: item[0],
                )
                for _time, _order, packet in packets:
                    if packet.stream.type == "video":
                        packet.stream = vout
                        out.mux(packet)
                        continue
                    target, resampler = routes[packet.stream.index]
                    if resampler is None:
                        packet.stream = target
                        out.mux(packet)
                    else:
                        for frame in packet.decode():
                            for chunk in resampler.resample(frame):
                                for encoded in target.encode(chunk):
                                    out.mux(encoded)
                for target, resampler in routes.values():
                    if resampler is not None:
                        for chunk in resampler.resample(None):
                            for encoded in target.encode(chunk):
                                out.mux(encoded)
                        for encoded in target.encode():
                            out.mux(encoded)
            except av.FFmpegError as exc:
                raise VideoError(f"{label}: writing the output failed: {ff_reason(exc)}") from None
            finally:
                out.close()
    finally:
        for s in seg_inputs:
            s.close()
    return result


def _time(packet: Any) -> Fraction:
    ts = packet.dts if packet.dts is not None else packet.pts
    return Fraction(ts or 0) * Fraction(packet.time_base)


def _video_packets(inputs: list[Any], label: str) -> Iterator[tuple[Fraction, int, Any]]:
    """The video packets of the encoded segments in order, decoding times kept increasing.

    Each segment's encoder starts its decoding times before the segment's first frame (by
    the reordering delay of B-frames), which can fall at or before the previous segment's
    last decoding time, or leave them unset (Matroska). Such times are set just after it: a
    decoding time only orders
    packets, presentation times (the frames' own) are never changed, and a decoding time
    may not pass its packet's presentation time (an error, not seen with these encoders).
    """
    order = 0
    last: Fraction | None = None
    for container in inputs:
        stream = container.streams.video[0]
        tick = Fraction(stream.time_base)
        for packet in container.demux(stream):
            if packet.dts is None and packet.pts is None:
                continue  # the demuxer's end-of-stream marker
            if last is not None and (packet.dts is None or packet.dts * tick <= last):
                moved = int(last / tick) + 1
                if packet.pts is not None and moved > packet.pts:
                    raise VideoError(
                        f"{label}: segments cannot be joined: a frame at "
                        f"{float(packet.pts * tick):.6f} s would decode after it is shown"
                    )
                packet.dts = moved
            if packet.dts is not None:
                last = packet.dts * tick
            order += 1
            yield _time(packet), order, packet


def _side_packets(inp: Any, indexes: list[int]) -> Iterator[tuple[Fraction, int, Any]]:
    if not indexes:
        return
    streams = [s for s in inp.streams if s.index in indexes]
    order = 1 << 40
    for packet in inp.demux(*streams):
        if packet.dts is None and packet.pts is None:
            continue
        order += 1
        yield _time(packet), order, packet


# -- audio beside frames ----------------------------------------------------------------------

AUDIO_FILES = {
    "aac": ("m4a", "ipod"), "alac": ("m4a", "ipod"), "mp3": ("mp3", "mp3"),
    "opus": ("opus", "opus"), "vorbis": ("ogg", "ogg"), "flac": ("flac", "flac"),
    "ac3": ("ac3", "ac3"), "eac3": ("eac3", "eac3"),
}  # fmt: skip
"""File extension and FFmpeg muxer an audio stream of each codec is copied into beside an
image sequence (any other codec: Matroska audio, ``.mka``)."""


def copy_audio(path: str, folder: str, label: str) -> list[tuple[str, str]]:
    """Copy each audio stream of ``path`` packet for packet (same samples, same times) into a
    file of its own in the local ``folder``: ``audio.<ext>``, then ``audio-2.<ext>``...
    (:data:`AUDIO_FILES`), in one pass over the file. Returns ``(file name, local path)``
    per stream, in stream order.

    Raises:
        VideoError: a stream could not be copied.
    """
    import av

    written: list[tuple[str, str]] = []
    with open_input(path, label) as inp, ExitStack() as outputs:
        streams = list(inp.streams.audio)
        routes: dict[int, tuple[Any, Any]] = {}  # source index -> (output, its stream)
        try:
            for n, stream in enumerate(streams, start=1):
                codec = stream.codec_context.name if stream.codec_context else "unknown"
                ext, muxer = AUDIO_FILES.get(codec, ("mka", "matroska"))
                name = f"audio.{ext}" if n == 1 else f"audio-{n}.{ext}"
                dst = os.path.join(folder, name)
                out = av.open(dst, "w", format=muxer)
                outputs.callback(out.close)
                routes[stream.index] = (out, out.add_stream_from_template(stream))
                written.append((name, dst))
            # One pass (no seek: a seek to the start can skip an encoder's priming packet
            # before time 0).
            for packet in inp.demux(*streams) if streams else ():
                if packet.dts is None and packet.pts is None:
                    continue
                out, target = routes[packet.stream.index]
                packet.stream = target
                out.mux(packet)
        except (av.FFmpegError, ValueError) as exc:
            reason = ff_reason(exc) if isinstance(exc, av.FFmpegError) else str(exc)
            raise VideoError(f"{label}: copying the audio failed: {reason}") from None
    return written


# -- reading back ------------------------------------------------------------------------------


def video_timestamps(path: str, label: str) -> tuple[list[Fraction], Fraction]:
    """The presentation times of every frame of ``path``'s video stream, in order (from
    its packets, without decoding), and the stream's time base."""
    with open_input(path, label) as c:
        vs = video_stream(c, label)
        tb = Fraction(vs.time_base)
        return sorted(Fraction(p.pts) * tb for p in c.demux(vs) if p.pts is not None), tb


def stream_durations(path: str, label: str) -> dict[str, list[float]]:
    """Seconds each audio and subtitle stream spans (first packet to the end of the last),
    by kind in stream order, from the packets (one pass, no decoding)."""
    spans: dict[int, tuple[Fraction, Fraction]] = {}
    with open_input(path, label) as c:
        side = [s for s in c.streams if s.type in ("audio", "subtitle")]
        kinds = {s.index: s.type for s in side}
        for p in c.demux(*side) if side else ():
            if p.pts is None:
                continue
            start = Fraction(p.pts) * Fraction(p.time_base)
            end = start + Fraction(p.duration or 0) * Fraction(p.time_base)
            first, last = spans.get(p.stream.index, (start, end))
            spans[p.stream.index] = (min(first, start), max(last, end))
    out: dict[str, list[float]] = {}
    for index, kind in kinds.items():
        first, last = spans.get(index, (Fraction(0), Fraction(0)))
        out.setdefault(kind, []).append(float(last - first))
    return out


def check_timestamps(
    expected: list[Fraction], got: list[Fraction], out_time_base: Fraction | None = None
) -> str | None:
    """Why ``got`` (the output's frame times) is not ``expected`` (the source's), or None.

    Times that differ by less than one tick of the output's time base (a container with a
    coarser clock, such as Matroska's milliseconds) are the same frame, rounded.
    """
    if len(got) != len(expected):
        return f"the output has {len(got)} frames, the source {len(expected)}"
    tick = out_time_base or Fraction(0)
    for i, (a, b) in enumerate(zip(expected, got, strict=True)):
        if a != b and abs(a - b) >= tick:
            return f"frame {i + 1} is at {float(b):.6f} s in the output, {float(a):.6f} s in the source"
    return None
