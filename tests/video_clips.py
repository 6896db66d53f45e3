"""Small real video files made with PyAV for the video tests (no fixtures, no downloads)."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Irregular frame durations in 1/90000 s: a variable frame rate clip.
VFR_STEPS = [3000, 3600, 1800, 4500, 3000, 2700, 3600, 3000, 1500, 6000, 3000, 3000, 2400, 3900]


def _frame(i: int, width: int, height: int) -> np.ndarray:
    """A frame with structure (gradient, a moving bar, a square) so scores mean something."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = (x * 255 // max(1, width - 1)).astype(np.uint8)
    img[..., 1] = (y * 255 // max(1, height - 1)).astype(np.uint8)
    img[..., 2] = 90
    bar = (i * 3) % max(1, width - 4)
    img[:, bar : bar + 4] = (240, 240, 240)
    img[height // 4 : height // 2, width // 4 : width // 2] = (20, 40, 200)
    return img


def make_clip(
    path: Path,
    *,
    width: int = 48,
    height: int = 32,
    steps: list[int] | None = None,
    frames: int | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: str | None = "aac",
    audio_rate: int = 16000,
    time_base: Fraction = Fraction(1, 90000),
    rotation: int | None = None,
    fmt: str | None = None,
    gop: int | None = None,
    draw: Callable[[int, int, int], np.ndarray] | None = None,
) -> list[Fraction]:
    """Write a clip and return its frame times in seconds (exact).

    ``steps``: the pts increments (default :data:`VFR_STEPS`); ``frames``: that many frames
    of a constant 1/25 s instead. ``audio``: an audio codec (a sine tone as long as the
    video) or None. ``draw(i, width, height)``: frame ``i`` (HxWx3 BGR uint8) instead of
    the default picture.
    """
    if frames is not None:
        step = int(time_base.denominator / time_base.numerator / 25)
        steps = [step] * frames
    steps = VFR_STEPS if steps is None else steps
    out = av.open(str(path), "w", format=fmt)
    v = out.add_stream(codec, rate=25)
    v.width, v.height, v.pix_fmt = width, height, pix_fmt
    v.time_base = time_base
    v.codec_context.time_base = time_base
    if gop is not None:  # a key frame every ``gop`` frames (x264's default: 250)
        v.codec_context.gop_size = gop
    if rotation is not None:
        v.set_display_rotation(rotation)
    a = None
    if audio:
        a = out.add_stream(audio, rate=audio_rate)
        a.layout = "mono"
    pts = 0
    times = []
    for i, step in enumerate(steps):
        pixels = (draw or _frame)(i, width, height)
        frame = av.VideoFrame.from_ndarray(pixels, format="bgr24")
        frame = frame.reformat(format=pix_fmt)
        frame.pts = pts
        frame.time_base = time_base
        times.append(Fraction(pts) * time_base)
        pts += step
        for packet in v.encode(frame):
            out.mux(packet)
    for packet in v.encode():
        out.mux(packet)
    if a is not None:
        n = int(Fraction(pts) * time_base * audio_rate)
        tone = np.sin(np.arange(n) / 7.0) * 0.3
        fmt_name = a.codec_context.format.name
        if fmt_name == "u8":
            samples = ((tone + 1) * 127).astype(np.uint8)[None]
        elif fmt_name.startswith("s16"):
            samples = (tone * 32767).astype(np.int16)[None]
        else:
            samples = tone.astype(np.float32)[None]
        af = av.AudioFrame.from_ndarray(samples, format=fmt_name, layout="mono")
        af.sample_rate = audio_rate
        af.pts = 0
        for packet in a.encode(af):
            out.mux(packet)
        for packet in a.encode():
            out.mux(packet)
    out.close()
    return times


def make_audio_only(path: Path) -> None:
    """An .mp4 holding one AAC stream and no video."""
    out = av.open(str(path), "w")
    a = out.add_stream("aac", rate=16000)
    a.layout = "mono"
    af = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.float32), format="flt", layout="mono")
    af.sample_rate = 16000
    af.pts = 0
    for packet in a.encode(af):
        out.mux(packet)
    for packet in a.encode():
        out.mux(packet)
    out.close()


def make_zero_frames(path: Path) -> None:
    """A Matroska file with a video stream that holds no frame."""
    out = av.open(str(path), "w")
    v = out.add_stream("libx264", rate=25)
    v.width, v.height, v.pix_fmt = 48, 32, "yuv420p"
    out.start_encoding()
    out.close()


def frame_times(path: Path) -> list[Fraction]:
    """Every frame's presentation time, decoded (exact fractions of a second)."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        return [Fraction(f.pts) * Fraction(vs.time_base) for f in c.decode(vs)]


def audio_spans(path: Path) -> list[Fraction]:
    """Per audio stream, the time from its first packet to the end of its last."""
    out = []
    with av.open(str(path)) as c:
        for s in c.streams.audio:
            first = last = None
            for p in c.demux(s):
                if p.pts is None:
                    continue
                start = Fraction(p.pts) * Fraction(p.time_base)
                end = start + Fraction(p.duration) * Fraction(p.time_base)
                first = start if first is None else min(first, start)
                last = end if last is None else max(last, end)
            c.seek(0)
            out.append((last or 0) - (first or 0))
    return out


def first_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="bgr24")


# Kr, Kb of the YUV matrices (ITU-R BT.601, BT.709, BT.2020), by FFmpeg's colorspace code;
# 2 (unspecified) is BT.601, FFmpeg's scaler's default.
MATRIX_K = {6: (0.299, 0.114), 2: (0.299, 0.114), 1: (0.2126, 0.0722), 9: (0.2627, 0.0593)}


def yuv_of(bgr: tuple[int, int, int], matrix: int, full: bool, bits: int = 8) -> tuple[int, ...]:
    """The Y, Cb, Cr codes of an 8-bit BGR colour under a matrix and range, by the formula
    (independent of FFmpeg's scaler)."""
    kr, kb = MATRIX_K[matrix]
    b, g, r = (c / 255 for c in bgr)
    y = kr * r + (1 - kr - kb) * g + kb * b
    cb = (b - y) / (2 * (1 - kb))
    cr = (r - y) / (2 * (1 - kr))
    scale = 1 << (bits - 8)
    if full:
        return tuple(round(v * scale) for v in (255 * y, 255 * cb + 128, 255 * cr + 128))
    return tuple(round(v * scale) for v in (16 + 219 * y, 128 + 224 * cb, 128 + 224 * cr))


def make_flat_clip(
    path: Path,
    bgr: tuple[int, int, int],
    *,
    matrix: int,
    full: bool | None,
    primaries: int = 2,
    transfer: int = 2,
    bits: int = 8,
    frames: int = 3,
    width: int = 32,
    height: int = 16,
) -> tuple[int, ...]:
    """A clip of one flat colour whose YUV planes are written by :func:`yuv_of` and tagged
    with ``matrix``, the range (``full``; None: limited, untagged), ``primaries`` and
    ``transfer`` (FFmpeg's codes);
    ``bits`` 8 (yuv420p) or 10 (yuv420p10le, H.264 High 10). Lossless (x264 at QP 0), so
    the file holds exactly those codes. Returns the Y, Cb, Cr codes."""
    pix_fmt = "yuv420p" if bits == 8 else f"yuv420p{bits}le"
    codes = yuv_of(bgr, matrix, bool(full), bits)
    dtype = np.uint8 if bits == 8 else np.uint16
    planes = np.concatenate(
        [
            np.full((height, width), codes[0], dtype),
            np.full((height // 4, width), codes[1], dtype),
            np.full((height // 4, width), codes[2], dtype),
        ]
    )
    out = av.open(str(path), "w")
    v = out.add_stream("libx264", rate=25, options={"qp": "0"})
    v.width, v.height, v.pix_fmt = width, height, pix_fmt
    tags = {"color_range": {True: 2, False: 1, None: 0}[full], "colorspace": matrix,
            "color_primaries": primaries, "color_trc": transfer}  # fmt: skip
    for name, value in tags.items():
        setattr(v.codec_context, name, value)
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(planes, format=pix_fmt)
        for name, value in tags.items():
            setattr(frame, name, value)
        frame.pts = i
        for packet in v.encode(frame):
            out.mux(packet)
    for packet in v.encode():
        out.mux(packet)
    out.close()
    return codes


def colour_tags(path: Path) -> dict[str, int]:
    """The colour codes a file's video stream declares (as its decoder reads them)."""
    with av.open(str(path)) as c:
        ctx = c.streams.video[0].codec_context
        return {"range": int(ctx.color_range), "matrix": int(ctx.colorspace),
                "primaries": int(ctx.color_primaries), "transfer": int(ctx.color_trc)}  # fmt: skip


def first_planes(path: Path) -> np.ndarray:
    """The first frame's raw planes (yuv420p: Y rows, then U and V rows stacked)."""
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray()


def make_frames_clip(
    path: Path,
    frames: list[np.ndarray],
    steps: list[int],
    *,
    gop: int | None = None,
    lossless: bool = True,
    time_base: Fraction = Fraction(1, 90000),
    start: int = 0,
) -> list[Fraction]:
    """Write the HxWx3 BGR uint8 ``frames`` as an H.264 clip whose frame ``k`` starts at
    ``start`` plus the sum of ``steps[:k]`` (pts in ``time_base``): a variable frame rate
    when the steps differ. ``lossless``: x264 at QP 0 (the file holds the frames' YUV exactly);
    ``gop``: a key frame every that many frames. Returns the frame times in seconds."""
    height, width = frames[0].shape[:2]
    out = av.open(str(path), "w")
    v = out.add_stream("libx264", rate=25, options={"qp": "0"} if lossless else {})
    v.width, v.height, v.pix_fmt = width, height, "yuv420p"
    v.time_base = time_base
    v.codec_context.time_base = time_base
    if gop is not None:
        v.codec_context.gop_size = gop
    pts = start
    times = []
    for pixels, step in zip(frames, steps, strict=True):
        frame = av.VideoFrame.from_ndarray(pixels, format="bgr24").reformat(format="yuv420p")
        frame.pts = pts
        frame.time_base = time_base
        times.append(Fraction(pts) * time_base)
        pts += step
        for packet in v.encode(frame):
            out.mux(packet)
    for packet in v.encode():
        out.mux(packet)
    out.close()
    return times


def decoded_frames(path: Path) -> list[np.ndarray]:
    """Every frame of ``path`` as HxWx3 BGR uint8, in presentation order."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
