"""Mask videos: an inpaint mask for every frame of a clip, read from a video.

Frame k of a clip takes the mask video's frame shown at the same moment: times count from
each stream's first frame, and the mask frame taken is the last one whose time is at or
before the clip frame's (so a mask video at another frame rate, or with other frame times,
still lines up by time, not by frame number). A clip frame after the mask video's end (its
last frame's time plus that frame's duration) is an error naming both files and the time.

Mask frames are read like mask images (:func:`retouch.lib.masks.mask_plane`): upright (the
mask video's rotation applied), their brightest channel, HxW uint8; the inpaint step then
resizes them to the frame (nearest neighbour) and thresholds them (> 127 = fill). An alpha
channel in a mask video is not read.

The mask video streams beside the clip's frames: one decoded frame and the one after it are
held, never the whole video. A reader seeks once to the time it is first asked for (the
start of a segment) and then decodes forward.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import ExitStack
from fractions import Fraction
from typing import Any

import numpy as np

from retouch.lib import storage
from retouch.lib.errors import InvalidImageError, InvalidVideoError, OperationError, reason_of
from retouch.lib.video import media

_BLOCK = 1 << 20


def video_sha256(uri: str, max_bytes: int) -> str:
    """The sha256 of the file at ``uri`` (any storage), read in 1 MiB blocks, never whole.

    Raises:
        InvalidImageError: the file is larger than ``max_bytes``.
        StorageError: it cannot be read.
    """

    def digest() -> str:
        h = hashlib.sha256()
        total = 0
        local = storage.local_path(uri)
        if local is not None:
            fh: Any = open(local, "rb")
        else:
            fs, path = storage.filesystem(uri)
            fh = fs.open(path, "rb")
        with fh:
            for block in iter(lambda: fh.read(_BLOCK), b""):
                total += len(block)
                if total > max_bytes:
                    raise storage.too_large(uri, max_bytes, "RETOUCH_MAX_VIDEO_BYTES")
                h.update(block)
        return h.hexdigest()

    return storage.retrying(digest, what="read", uri=uri)


class MaskVideo:
    """The frames of the mask video at ``uri`` by clip time (see the module docstring).

    ``clip`` names the clip it masks (in errors). Use it as a context manager, or call
    :meth:`close`; :meth:`at` gives the mask of the clip frame at a time.

    Raises (on opening):
        OperationError: the mask video is not a readable video, holds no frame, or its
            frames are beyond ``pixel_limit``; the message names the mask and the clip.
    """

    def __init__(self, uri: str, clip: str, *, pixel_limit: int, max_bytes: int):
        from retouch.lib.video.phases import local_source

        self.uri, self.clip = uri, clip
        self._stack = ExitStack()
        try:
            path, _sha, _size = self._stack.enter_context(local_source(uri, max_bytes))
            self._container = self._stack.enter_context(media.open_input(path, uri))
            self._stream = media.video_stream(self._container, uri)
            ctx = self._stream.codec_context
            width, height = int(ctx.width or 0), int(ctx.height or 0)
            if width * height > pixel_limit:
                raise InvalidVideoError(
                    uri,
                    f"frames of {width}x{height} exceed the pixel limit of {pixel_limit} "
                    "(RETOUCH_PIXEL_LIMIT)",
                )
            self._tb = Fraction(self._stream.time_base)
            rate = self._stream.average_rate or self._stream.guessed_rate
            self._rate_step = Fraction(1) / Fraction(rate) if rate else Fraction(0)
            self._frames = self._decode()
            first = next(self._frames, None)
            if first is None:
                raise InvalidVideoError(uri, "the video stream holds no frames")
        except InvalidImageError as exc:  # too large, not a video, no frames...
            self._stack.close()
            raise self._unreadable(exc) from None
        except BaseException:
            self._stack.close()
            raise
        self._first_pts = int(first.pts)
        self._current: Any = first
        self._next: Any = None
        self._ended = False
        self._step: Fraction | None = None  # the last interval between two frames seen
        self._plane: np.ndarray | None = None  # the current frame, read
        self._asked = False

    def _unreadable(self, exc: InvalidImageError) -> OperationError:
        return OperationError(
            f"{self.clip}: its inpaint mask video {self.uri} is unreadable: {reason_of(exc)}"
        )

    def _decode(self) -> Iterator[Any]:
        import av

        try:
            for frame in self._container.decode(self._stream):
                if frame.pts is None:
                    raise InvalidVideoError(self.uri, "a frame has no timestamp")
                yield frame
        except av.FFmpegError as exc:
            raise self._unreadable(
                InvalidVideoError(self.uri, f"decoding failed: {media.ff_reason(exc)}")
            ) from None
        except InvalidVideoError as exc:
            raise self._unreadable(exc) from None

    def _time(self, frame: Any) -> Fraction:
        return Fraction(int(frame.pts) - self._first_pts) * self._tb

    def _peek(self) -> Any:
        if self._next is None and not self._ended:
            self._next = next(self._frames, None)
            self._ended = self._next is None
        return self._next

    def _seek(self, t: Fraction) -> None:
        """Decode from the key frame at or before ``t`` (from the first frame when the
        container's seek lands after it)."""
        for target in (self._first_pts + int(t / self._tb), self._first_pts):
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
            self._frames = self._decode()
            self._next, self._ended, self._plane = None, False, None
            first = self._peek()
            if first is not None and self._time(first) <= t:
                break
        if first is None:
            raise self._unreadable(InvalidVideoError(self.uri, f"no frame at {float(t):.3f} s"))
        self._current, self._next = first, None

    def _end(self) -> Fraction:
        """When the current (last) frame stops being shown."""
        duration = int(getattr(self._current, "duration", 0) or 0)
        if duration > 0:
            return self._time(self._current) + duration * self._tb
        return self._time(self._current) + (self._step or self._rate_step)

    def at(self, t: Fraction) -> np.ndarray:
        """The mask (HxW uint8, 255 = fill) of the clip frame ``t`` seconds after the clip's
        first frame: the last mask frame at or before ``t``.

        Raises:
            OperationError: ``t`` is after the mask video's end, or it cannot be decoded.
        """
        t = max(Fraction(t), Fraction(0))
        if (not self._asked and t > 0) or t < self._time(self._current):
            self._seek(t)
        self._asked = True
        while True:
            following = self._peek()
            if following is None or self._time(following) > t:
                break
            self._step = self._time(following) - self._time(self._current)
            self._current, self._next, self._plane = following, None, None
        if following is None and t >= self._end():
            raise OperationError(
                f"{self.clip}: its inpaint mask video {self.uri} ends at "
                f"{float(self._end()):.3f} s, before the clip's frame at {float(t):.3f} s; "
                "give a mask video at least as long as the clip"
            )
        if self._plane is None:
            image = media.frame_image(self._current, media.rotation_of(self._current.rotation))
            self._plane = np.ascontiguousarray(image.pixels.max(axis=2))
        return self._plane

    def end_after(self, t: Fraction) -> Fraction | None:
        """The mask video's end when it ends before ``t`` (seconds from its first frame),
        else None: one seek to the key frame before ``t``, then the frames up to it."""
        try:
            self.at(t)
        except OperationError:
            if self._peek() is None and t >= self._end():
                return self._end()
            raise
        return None

    def close(self) -> None:
        self._current = self._next = self._plane = None
        self._stack.close()

    def __enter__(self) -> MaskVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
