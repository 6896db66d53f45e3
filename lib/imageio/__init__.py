"""Faithful decode and encode between file bytes and :class:`~retouch.lib.image.Image`.

Array conventions: ``Image.pixels`` is HxWx3 **BGR**, ``uint8`` (0..255) or ``uint16``
(0..65535), C-contiguous; ``Image.alpha`` is HxW of the same dtype, or ``None``.

The work is split by phase: :mod:`.formats` (names, extensions, sniffing by content),
:mod:`.header` (probe and describe without decoding), :mod:`.metadata` (EXIF orientation,
ICC, DPI carried from source to output), :mod:`.decoding` and :mod:`.encoding`, whose
docstrings say what each keeps per format. Import from here: this is the public API.
"""

from __future__ import annotations

from retouch.lib.imageio.decoding import decode, load_uint8_bgr
from retouch.lib.imageio.encoding import encode, parse_colour
from retouch.lib.imageio.formats import (
    OUTPUT_FORMATS,
    SOURCE_FORMATS,
    format_extension,
    format_from_name,
    format_keeping,
    format_label,
    holds_16bit,
    holds_alpha,
    normalize_format,
    sniff_format,
)
from retouch.lib.imageio.header import ImageInfo, describe, probe

__all__ = [
    "OUTPUT_FORMATS",
    "SOURCE_FORMATS",
    "ImageInfo",
    "decode",
    "describe",
    "encode",
    "format_extension",
    "format_from_name",
    "format_keeping",
    "format_label",
    "holds_16bit",
    "holds_alpha",
    "load_uint8_bgr",
    "normalize_format",
    "parse_colour",
    "probe",
    "sniff_format",
]
