"""Videos as sources: probing, frame-exact streaming processing, remuxing (PyAV).

Plain Python like the rest of ``lib`` (no Prefect). The pieces:

- :mod:`.media`: what a video file holds (:func:`~.media.probe_video`), frames as
  :class:`~retouch.lib.image.Image` and back, the encoder and container choices.
- :mod:`.segments`: :func:`~.segments.process_segment` decodes the frames of one
  ``[start_pts, end_pts)`` range, runs a function on each and encodes them with their source
  timestamps; :func:`~.segments.join` remuxes encoded segments with the source's audio and
  subtitle streams into the delivered file; :func:`~.segments.video_timestamps` reads a
  file's frame times back for checking.
- :mod:`.phases`: the four phases of a run for a video record (prepare, process, review,
  export), called by :mod:`retouch.lib.phases` where it meets a video.

Memory stays bounded: frames stream from the decoder through the steps into the encoder,
one at a time; nothing is extracted to disk but the encoded segment.
"""

from __future__ import annotations

VIDEO_EXTENSIONS = frozenset({"mp4", "mov", "mkv", "webm", "avi"})
"""Source file extensions taken as videos."""
