"""What a video file holds, its frames as :class:`Image`, and the encoder and container
choices of the export settings.

Timestamps are kept as the source gives them: integer ``pts`` in the video stream's
``time_base``; a time in seconds is ``Fraction(pts) * time_base`` (exact, never a float).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cache
from typing import Any

import numpy as np

from retouch.lib.errors import InvalidVideoError, RecipeError
from retouch.lib.image import Image

ENCODERS = {"h264": "libx264", "h265": "libx265", "av1": "libsvtav1"}
NVENC = {"h264": "h264_nvenc", "h265": "hevc_nvenc", "av1": "av1_nvenc"}
"""NVIDIA's hardware encoders (in PyAV's wheel; they open only with an NVIDIA driver)."""
"""FFmpeg encoder of each ``export.video.codec`` (all bundled in PyAV's wheel)."""

DEFAULT_CRF = {"h264": 18, "h265": 20, "av1": 30}
"""CRF when ``export.video.crf`` is not given: near-transparent quality for each codec."""

MUXERS = {"mp4": "mp4", "mov": "mov", "mkv": "matroska", "webm": "webm"}
"""FFmpeg muxer of each output container extension."""

LOSSLESS = "ffv1"
"""The encoder of a result delivered as frames (``export.video.container = "frames"``): the
frames are stored as processed, RGB without chroma subsampling, bit for bit (FFV1 in MP4,
which keeps the source's time base), and written as images at export."""

CONTAINER_LABELS = {"mp4": "MP4", "mov": "QuickTime (.mov)", "mkv": "Matroska (.mkv)",
                    "webm": "WebM", "avi": "AVI"}  # fmt: skip

# Video codecs WebM may hold (the rest need another container).
_WEBM_VIDEO = {"av1"}


def ff_reason(exc: BaseException) -> str:
    """An FFmpeg error in a few words (without the file path PyAV puts in it)."""
    text = str(getattr(exc, "strerror", None) or exc)
    return text.split(": '", 1)[0].strip() or type(exc).__name__


@dataclass
class StreamInfo:
    """An audio or subtitle stream beside the video."""

    index: int
    kind: str  # "audio" | "subtitle"
    codec: str
    duration: float | None = None  # seconds
    sample_rate: int | None = None
    channels: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class VideoInfo:
    """The video stream of a file, found by decoding every frame (``frames`` is counted,
    never taken from the header: ``nb_frames`` is missing in Matroska/WebM and can lie)."""

    container: str  # FFmpeg's format name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str
    pix_fmt: str
    width: int  # coded size
    height: int
    rotation: int  # degrees counterclockwise the frames are turned for display (0/90/180/270)
    time_base: Fraction
    frames: int
    first_pts: int
    last_pts: int
    fps: float  # average over the clip
    vfr: bool  # frame durations differ
    bit_depth: int
    streams: list[StreamInfo] = field(default_factory=list)
    sample: Image | None = None  # the frame at the middle of the clip, upright
    pts: list[int] = field(default_factory=list, repr=False)
    keyframes: list[int] = field(default_factory=list, repr=False)  # pts of key frames
    colour: Colour | None = None  # the first frame's tags

    @property
    def display_width(self) -> int:
        return self.height if self.rotation in (90, 270) else self.width

    @property
    def display_height(self) -> int:
        return self.width if self.rotation in (90, 270) else self.height

    @property
    def duration(self) -> float:
        """Seconds from the first frame to the end of the last (its duration estimated as
        the clip's mean frame duration; one frame: 1/fps)."""
        span = Fraction(self.last_pts - self.first_pts) * self.time_base
        per = span / (self.frames - 1) if self.frames > 1 else Fraction(1, 25)
        return float(span + per)

    def to_json(self) -> dict[str, Any]:
        """What a record's ``input`` says about the video."""
        return {
            "kind": "video",
            "container": self.container,
            "codec": self.codec,
            "pix_fmt": self.pix_fmt,
            "width": self.display_width,
            "height": self.display_height,
            "rotation": self.rotation,
            "frames": self.frames,
            "start": float(Fraction(self.first_pts) * self.time_base),
            "fps": round(self.fps, 4),
            "vfr": self.vfr,
            "duration": round(self.duration, 4),
            "time_base": str(self.time_base),
            "bit_depth": self.bit_depth,
            "alpha": False,
            "gray": False,
            "streams": [s.to_json() for s in self.streams],
            "colour": self.colour.to_json() if self.colour is not None else {},
        }


def timestamps_digest(pts: list[int], time_base: Fraction) -> str:
    """A fingerprint of a list of frame times (exact: fractions of seconds)."""
    h = hashlib.sha256()
    for p in pts:
        t = Fraction(p) * time_base
        h.update(f"{t.numerator}/{t.denominator};".encode())
    return h.hexdigest()


@contextmanager
def open_input(path: str, label: str) -> Iterator[Any]:
    """The opened container of ``path``; errors name ``label`` and say what is wrong."""
    import av

    try:
        if os.path.getsize(path) == 0:
            raise InvalidVideoError(label, "empty file (0 bytes)")
    except OSError as exc:
        raise InvalidVideoError(label, f"cannot read the file ({exc.strerror})") from None
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.EOFError:
        raise InvalidVideoError(
            label,
            "the file ends before any frame: a zero-length clip, or truncated right after "
            "its header",
        ) from None
    except av.FFmpegError as exc:
        raise InvalidVideoError(
            label, f"not a readable video ({ff_reason(exc)}): truncated, corrupt or not a video"
        ) from None
    try:
        yield container
    finally:
        container.close()


def video_stream(container: Any, label: str) -> Any:
    """The first video stream, or a clear error naming what the file holds instead."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        holds = (
            f"it holds only {' and '.join(kinds)}"
            if kinds
            else "it holds no streams: a zero-length clip, or not a video"
        )
        raise InvalidVideoError(label, f"no video stream ({holds})")
    return container.streams.video[0]


def rotation_of(value: Any) -> int:
    """A display rotation in degrees (any sign) as 0, 90, 180 or 270."""
    try:
        return (round(float(value or 0) / 90) % 4) * 90
    except (TypeError, ValueError):
        return 0


@cache
def _scaler_flags() -> tuple[int, int]:
    """Interpolation flags of FFmpeg's scaler: (YUV to RGB, RGB to YUV)."""
    from av.video.reformatter import Interpolation as I  # noqa: E741

    # swscale's default paths are biased: YUV to RGB comes out about 1 level dark per
    # channel, RGB to YUV truncates (Y and chroma half a level low); accurate rounding and
    # full horizontal chroma interpolation remove both (measured on flat colours against
    # the matrix formulas; a few ms more per 1080p frame).
    return (
        I.BILINEAR | I.ACCURATE_RND | I.FULL_CHR_H_INT,
        I.BILINEAR | I.ACCURATE_RND,
    )


def frame_image(frame: Any, rotation: int) -> Image:
    """A decoded frame as an upright Image (HxWx3 BGR uint8).

    The YUV to RGB conversion follows the frame's own colour matrix and range (PyAV 18's
    ``reformat`` hands them to FFmpeg's ``sws_scale_frame``): a full-range or BT.709 frame
    comes back as the colours it codes. Untagged frames use FFmpeg's default (BT.601,
    limited range), which :func:`yuv_frame` uses again for an untagged output. Transfer and
    primaries are not converted (no tone mapping): the pixels are the coded R'G'B'.
    """
    pixels = frame.to_ndarray(format="bgr24", interpolation=_scaler_flags()[0])
    k = rotation // 90
    if k:
        pixels = np.ascontiguousarray(np.rot90(pixels, k))
    return Image(pixels=pixels)


def even_pixels(pixels: np.ndarray) -> np.ndarray:
    """Pixels padded by one edge row/column where a side is odd (4:2:0 needs even sides)."""
    h, w = pixels.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return pixels
    return np.pad(pixels, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


# -- colour ----------------------------------------------------------------------------------

# FFmpeg's names (libavutil/pixdesc.c) of the codes of its colour enums (libavutil/pixfmt.h);
# code 2 is "unspecified" in the last three, 0 in the range.
_RANGES = {1: "tv", 2: "pc"}
_MATRICES = {
    0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
    8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 12: "chroma-derived-nc",
    13: "chroma-derived-c", 14: "ictcp", 15: "ipt-c2", 16: "ycgco-re", 17: "ycgco-ro",
}  # fmt: skip
_PRIMARIES = {
    1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film",
    9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213",
}  # fmt: skip
_TRANSFERS = {
    1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "linear",
    9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1",
    14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 17: "smpte428", 18: "arib-std-b67",
}  # fmt: skip
_HDR_TRANSFERS = {16: "PQ", 18: "HLG"}
_UNSPECIFIED = 2
_BT709 = 1


def _sws_matrix(code: int) -> Any:
    """The swscale matrix that writes YUV with matrix ``code``, None for FFmpeg's default
    (an untagged output), or False when swscale has none for it."""
    from av.video.reformatter import Colorspace

    if code == _UNSPECIFIED:
        return None
    return {
        1: Colorspace.ITU709,
        4: Colorspace.FCC,
        5: Colorspace.ITU601,  # BT.470BG and SMPTE 170M share the BT.601 matrix
        6: Colorspace.ITU601,
        7: Colorspace.SMPTE240M,
        9: Colorspace.BT2020,
    }.get(code, False)


@dataclass(frozen=True)
class Colour:
    """How a video's YUV values map to colours: FFmpeg's codes of the range (0 unspecified,
    1 tv/limited, 2 pc/full), the matrix, the primaries and the transfer (2 unspecified)."""

    range: int = 0
    matrix: int = _UNSPECIFIED
    primaries: int = _UNSPECIFIED
    transfer: int = _UNSPECIFIED

    @classmethod
    def of(cls, source: Any) -> Colour:
        """The colour tags of a decoded frame or a codec context."""

        def code(name: str, default: int) -> int:
            try:
                return int(getattr(source, name))
            except (AttributeError, TypeError, ValueError):
                return default

        return cls(
            range=code("color_range", 0),
            matrix=code("colorspace", _UNSPECIFIED),
            primaries=code("color_primaries", _UNSPECIFIED),
            transfer=code("color_trc", _UNSPECIFIED),
        )

    @property
    def hdr(self) -> str | None:
        """The HDR transfer's short name ("PQ" or "HLG"), or None (SDR)."""
        return _HDR_TRANSFERS.get(self.transfer)

    def to_json(self) -> dict[str, str]:
        """FFmpeg's names of the tags the file gives (an unknown code as ``code N``)."""
        out = {}
        for key, value, names, unset in (
            ("range", self.range, _RANGES, 0),
            ("matrix", self.matrix, _MATRICES, _UNSPECIFIED),
            ("primaries", self.primaries, _PRIMARIES, _UNSPECIFIED),
            ("transfer", self.transfer, _TRANSFERS, _UNSPECIFIED),
        ):
            if value != unset:
                out[key] = names.get(value, f"code {value}")
        return out

    def written(self) -> tuple[Colour, str | None]:
        """The colour an output encoded from this source's frames is written with, and a
        note when it cannot be the same: range, primaries and transfer are kept as tags
        (nothing converts them); the matrix is kept where FFmpeg's scaler can write it,
        else the frames are converted with BT.709 and tagged so (said)."""
        if _sws_matrix(self.matrix) is not False:
            return self, None
        if self.matrix == 0:
            note = "RGB video encoded as YUV 4:2:0 with the BT.709 matrix (tagged so)"
        else:
            name = _MATRICES.get(self.matrix, f"code {self.matrix}")
            note = (
                f"colour matrix {name} cannot be written here: the frames are encoded with "
                "the BT.709 matrix (tagged so)"
            )
        return replace(self, matrix=_BT709), note


def yuv_frame(pixels: np.ndarray, colour: Colour) -> Any:
    """HxWx3 BGR uint8 pixels (even sides) as a yuv420p ``av.VideoFrame`` converted with
    ``colour``'s matrix and range and carrying all four of its tags (an unspecified matrix or
    range converts with FFmpeg's default, as :func:`frame_image` reads such frames)."""
    import av

    matrix = _sws_matrix(colour.matrix)
    if matrix is False:
        raise ValueError(f"no scaler matrix for colour matrix code {colour.matrix}")
    frame = av.VideoFrame.from_ndarray(pixels, format="bgr24").reformat(
        format="yuv420p",
        dst_colorspace=matrix,
        dst_color_range=colour.range or None,
        interpolation=_scaler_flags()[1],
    )
    frame.color_range = colour.range
    frame.colorspace = colour.matrix
    frame.color_primaries = colour.primaries
    frame.color_trc = colour.transfer
    return frame


def rgb_frame(pixels: np.ndarray) -> Any:
    """HxWx3 BGR uint8 pixels (any size) as a bgr0 ``av.VideoFrame``: the same values, for
    the lossless encoder (:data:`LOSSLESS`)."""
    import av

    return av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="bgr24").reformat(
        format="bgr0"
    )


def tag_stream(stream: Any, colour: Colour) -> None:
    """Write ``colour``'s tags on an output video stream before it opens (the encoder puts
    them in the bitstream, the muxer in the container)."""
    ctx = stream.codec_context
    ctx.color_range = colour.range
    ctx.colorspace = colour.matrix
    ctx.color_primaries = colour.primaries
    ctx.color_trc = colour.transfer


def input_notes(info: VideoInfo) -> list[str]:
    """What changes, stated, for a source of ``info``'s depth and transfer: the output is
    8 bits per sample, and HDR is kept as it is coded, without tone mapping."""
    notes = []
    if info.bit_depth > 8:
        notes.append(
            f"{info.bit_depth}-bit video ({info.pix_fmt}) processed and encoded in 8 bits: "
            "finer tonal steps are rounded (smooth gradients may band)"
        )
    colour = info.colour
    if colour is not None and colour.hdr:
        tags = colour.to_json()
        space = f", {tags['primaries']} primaries" if "primaries" in tags else ""
        notes.append(
            f"HDR video ({colour.hdr}, {tags['transfer']} transfer{space}) processed as "
            "coded, without tone mapping, and encoded in 8 bits with its HDR tags kept: it "
            "plays as HDR with coarser steps; the steps see HDR-coded values, not an SDR "
            "picture; mastering-display and light-level metadata, if any, are not carried"
        )
    return notes


# -- frame size limits -------------------------------------------------------------------------

MAX_FRAME = {"h264": (16384, 16384), "av1": (16384, 8704)}
"""Largest frame (width, height) each encoder opens, measured with PyAV 18.1's libx264 and
SVT-AV1 (libx265 opened 40000 px sides; it has no entry)."""


def frame_size_refusal(width: int, height: int, codec: str, pixel_limit: int | None) -> str | None:
    """Why output frames of ``width`` x ``height`` cannot be encoded with ``codec`` under
    ``pixel_limit`` (None: no limit), or None when they can."""
    smaller = "add a fit step (max_side) or upscale less"
    if pixel_limit is not None and width * height > pixel_limit:
        return (
            f"{width * height} pixels, over the pixel limit of {pixel_limit} "
            f"(RETOUCH_PIXEL_LIMIT; raise it where the memory allows); {smaller}"
        )
    max_w, max_h = MAX_FRAME.get(codec, (None, None))
    if max_w is not None and max_h is not None and (width > max_w or height > max_h):
        return (
            f"larger than {codec} ({ENCODERS[codec]}) encodes, at most {max_w}x{max_h}; "
            f"{smaller}, or export.video.codec=h265"
        )
    return None


def _bit_depth(pix_fmt: str) -> int:
    for bits in (16, 14, 12, 10, 9):
        if f"p{bits}" in pix_fmt or pix_fmt.endswith(f"{bits}le") or pix_fmt.endswith(f"{bits}be"):
            return bits
    return 8


def _streams(container: Any) -> list[StreamInfo]:
    out = []
    for s in container.streams:
        if s.type not in ("audio", "subtitle"):
            continue
        duration = float(s.duration * s.time_base) if s.duration and s.time_base else None
        ctx = s.codec_context
        out.append(
            StreamInfo(
                index=s.index,
                kind=s.type,
                codec=ctx.name if ctx is not None else "unknown",
                duration=round(duration, 4) if duration is not None else None,
                sample_rate=getattr(ctx, "sample_rate", None) if s.type == "audio" else None,
                channels=getattr(ctx, "channels", None) if s.type == "audio" else None,
            )
        )
    return out


def _declared_span(container: Any, vs: Any) -> float | None:
    """Seconds the file says its video stream lasts: the stream's duration, Matroska's
    per-track DURATION tag, or the container's when the video is its only stream."""
    if vs.duration:
        return float(vs.duration * vs.time_base)
    tag = str(vs.metadata.get("DURATION") or "")
    try:
        h, m, sec = tag.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        pass
    if container.duration and len(container.streams) == 1:
        return float(container.duration) / 1_000_000
    return None


def probe_video(path: str, label: str, *, pixel_limit: int) -> VideoInfo:
    """Open ``path`` and decode every frame of its video stream.

    Raises:
        InvalidVideoError: empty or unreadable file, no video stream, frames beyond the
            pixel limit, a decoding error (the frame and time named), no frame at all,
            fewer frames or a shorter span than the file declares (truncated), a frame
            without timestamp or timestamps going backwards.
    """
    import av

    with open_input(path, label) as container:
        vs = video_stream(container, label)
        ctx = vs.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width * height > pixel_limit:
            raise InvalidVideoError(
                label,
                f"frames of {width}x{height} exceed the pixel limit of {pixel_limit} "
                "(RETOUCH_PIXEL_LIMIT)",
            )
        tb = Fraction(vs.time_base)
        declared = int(vs.frames or 0)
        stream_span = _declared_span(container, vs)
        middle: Fraction | None = None  # where the sample frame is taken (from the first)
        vs.thread_type = "AUTO"
        pts: list[int] = []
        keyframes: list[int] = []
        rotation = 0
        colour: Colour | None = None
        sample: Image | None = None
        try:
            for frame in container.decode(vs):
                if frame.pts is None:
                    raise InvalidVideoError(label, f"frame {len(pts) + 1} has no timestamp")
                if pts and frame.pts <= pts[-1]:
                    raise InvalidVideoError(
                        label,
                        f"timestamps go backwards at frame {len(pts) + 1} ({frame.pts} after "
                        f"{pts[-1]}); files storing decode order only (some AVI) are not "
                        "supported yet",
                    )
                if not pts:
                    rotation = rotation_of(frame.rotation)
                    colour = Colour.of(frame)
                    half = Fraction(stream_span or 0) / 2
                    middle = Fraction(frame.pts) * tb + half
                pts.append(frame.pts)
                if frame.key_frame:
                    keyframes.append(frame.pts)
                if sample is None and (middle is None or Fraction(frame.pts) * tb >= middle):
                    sample = frame_image(frame, rotation)
        except av.FFmpegError as exc:
            at = float(Fraction(pts[-1]) * tb) if pts else 0.0
            raise InvalidVideoError(
                label,
                f"decoding failed after {len(pts)} frames (at {at:.3f} s): {ff_reason(exc)}; "
                "the file is corrupt or truncated",
            ) from None
        if not pts:
            raise InvalidVideoError(label, "the video stream holds no frames (zero-length clip)")
        if declared and len(pts) < declared:
            raise InvalidVideoError(
                label,
                f"truncated: {len(pts)} of the {declared} frames the file declares could be "
                "decoded",
            )
        span = Fraction(pts[-1] - pts[0]) * tb
        per = span / (len(pts) - 1) if len(pts) > 1 else Fraction(0)
        if stream_span is not None and len(pts) > 1:
            missing = stream_span - float(span + per)
            if missing > 2 * float(per) + 0.01 * stream_span:
                raise InvalidVideoError(
                    label,
                    f"truncated: frames end at {float(span + per):.3f} s of the "
                    f"{stream_span:.3f} s the file declares",
                )
        durations = {b - a for a, b in zip(pts, pts[1:], strict=False)}
        return VideoInfo(
            container=container.format.name,
            codec=ctx.name,
            pix_fmt=str(ctx.pix_fmt or ""),
            width=width,
            height=height,
            rotation=rotation,
            time_base=tb,
            frames=len(pts),
            first_pts=pts[0],
            last_pts=pts[-1],
            fps=float((len(pts) - 1) / span) if span else float(vs.guessed_rate or 0),
            vfr=len(durations) > 1,
            bit_depth=_bit_depth(str(ctx.pix_fmt or "")),
            streams=_streams(container),
            sample=sample,
            pts=pts,
            keyframes=keyframes,
            colour=colour,
        )


# -- export settings -----------------------------------------------------------------------


@dataclass(frozen=True)
class Encoding:
    """How the frames are encoded: FFmpeg encoder, its options, the output container."""

    codec: str  # h264 | h265 | av1
    crf: int
    preset: str | None
    ext: str  # output container extension
    hardware: bool = False  # NVENC

    @property
    def lossless(self) -> bool:
        """Frames stored bit for bit (a result delivered as an image sequence)."""
        return self.codec == LOSSLESS

    @property
    def encoder(self) -> str:
        if self.lossless:
            return LOSSLESS
        return (NVENC if self.hardware else ENCODERS)[self.codec]

    @property
    def pix_fmt(self) -> str:
        """The encoded pixel format: 8-bit RGB when lossless (any size, nothing converted),
        else YUV 4:2:0 (even sides)."""
        return "bgr0" if self.lossless else "yuv420p"

    @property
    def muxer(self) -> str:
        return MUXERS[self.ext]

    def muxer_options(self, time_base: Fraction) -> dict[str, str]:
        """Options of the output container for a video stream in ``time_base``.

        MP4 and QuickTime write the offset of a clip that does not start at 0 (an edit
        list) in the movie's time scale, 1/1000 s by default, which moves every frame of
        such a clip by the rounding: the movie time scale is the stream's own, so it is
        exact."""
        if self.ext in ("mp4", "mov"):
            return {"movie_timescale": str(time_base.denominator)}
        return {}

    def options(self) -> dict[str, str]:
        if self.lossless:
            return {}
        if self.hardware:  # constant quality, the CRF's counterpart (0-51)
            return {
                "rc": "vbr",
                "cq": str(min(self.crf, 51)),
                "b": "0",
                "preset": self.preset or "p5",
            }
        opts = {"crf": str(self.crf)}
        if self.preset:
            opts["preset"] = self.preset
        if self.codec == "h265":
            opts["x265-params"] = "log-level=error"
        return opts

    def key(self) -> dict[str, Any]:
        """What goes into a video result's key (a change re-encodes)."""
        if self.lossless:
            return {"codec": self.codec, "ext": self.ext}
        key = {"codec": self.codec, "crf": self.crf, "preset": self.preset, "ext": self.ext}
        return {**key, "encoder": "nvenc"} if self.hardware else key


def output_container(input_ext: str, container: str, codec: str) -> tuple[str, str | None]:
    """The container a video is delivered in, and a note when ``same`` cannot keep the
    input's: WebM holds AV1 here (others go to Matroska), AVI cannot keep variable frame
    timing or exact timestamps (it goes to MP4)."""
    if container != "same":
        return container, None
    if input_ext == "webm" and codec not in _WEBM_VIDEO:
        return "mkv", (
            f"delivered as Matroska (.mkv), not WebM: WebM cannot hold {codec} "
            "(export.video.codec=av1 keeps WebM)"
        )
    if input_ext == "avi":
        return "mp4", (
            "delivered as MP4, not AVI: AVI cannot keep every frame's timestamp "
            "(export.video.container=mkv or mov for another container)"
        )
    if input_ext in MUXERS:
        return input_ext, None
    return "mp4", f"delivered as MP4 ({input_ext or 'unknown'} container)"


@cache
def nvenc_refusal(codec: str) -> str | None:
    """Why NVENC cannot encode ``codec`` here (no NVIDIA GPU or driver, an older GPU
    without that codec), or None: the encoder is opened once per process to find out."""
    import av

    try:
        ctx: Any = av.CodecContext.create(NVENC[codec], "w")
        ctx.width, ctx.height, ctx.pix_fmt = 256, 144, "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.open()
        del ctx  # closed when freed
    except (av.FFmpegError, OSError, ValueError) as exc:
        return f"{NVENC[codec]} does not open: {ff_reason(exc) if isinstance(exc, av.FFmpegError) else exc}"
    return None


def encoding_for(input_ext: str, settings: Any, device: str = "cpu") -> tuple[Encoding, str | None]:
    """The :class:`Encoding` of ``export.video`` settings for an input with ``input_ext``
    on a run's ``device``, and a note on what differs from the settings (the container,
    NVENC unavailable on a GPU run).

    With ``container = "frames"`` the frames are stored losslessly (:data:`LOSSLESS`) for
    the export to write as images; codec, CRF, preset and encoder do not apply.

    Raises:
        RecipeError: ``encoder = "nvenc"`` and NVENC does not open here.
    """
    if settings.container == "frames":
        return Encoding(codec=LOSSLESS, crf=0, preset=None, ext="mp4"), None
    ext, note = output_container(input_ext, settings.container, settings.codec)
    crf = settings.crf if settings.crf is not None else DEFAULT_CRF[settings.codec]
    wanted = getattr(settings, "encoder", "software")
    hardware = False
    if wanted == "nvenc" or (wanted == "auto" and device.startswith("cuda")):
        refusal = nvenc_refusal(settings.codec)
        if refusal is None:
            hardware = True
        elif wanted == "nvenc":
            raise RecipeError(
                f"export.video.encoder=nvenc: {refusal} (an NVIDIA GPU and driver are "
                "needed); encoder=auto uses it only where it opens"
            )
        else:
            said = f"encoded in software ({ENCODERS[settings.codec]}): {refusal}"
            note = f"{note}; {said}" if note else said
    encoding = Encoding(
        codec=settings.codec, crf=crf, preset=settings.preset, ext=ext, hardware=hardware
    )
    return encoding, note
