"""Image formats by name and by content: magic-byte sniffing, output format names,
extensions and labels, what each output format holds, and why bytes are not a supported
image."""

from __future__ import annotations

import struct

from retouch.lib.errors import UnknownNameError

SOURCE_FORMATS = ("jpeg", "png", "webp", "tiff", "bmp", "gif")
OUTPUT_FORMATS = ("jpg", "png", "webp", "tiff", "bmp")

_ALIASES = {
    "jpg": "jpg",
    "jpeg": "jpg",
    "png": "png",
    "webp": "webp",
    "tif": "tiff",
    "tiff": "tiff",
    "bmp": "bmp",
}
# Output files use the 3-letter extensions everywhere: .jpg and .tif.
_EXTENSION = {"jpg": "jpg", "png": "png", "webp": "webp", "tiff": "tif", "bmp": "bmp"}
# format="same": GIF is read but not written; PNG keeps its palette colours and alpha.
_SAME_AS_SOURCE = {
    "jpeg": "jpg",
    "png": "png",
    "webp": "webp",
    "tiff": "tiff",
    "bmp": "bmp",
    "gif": "png",
}

# What each output format can hold besides 8-bit colour and gray.
_HOLDS_ALPHA = ("png", "webp", "tiff")
_HOLDS_16BIT = ("png", "tiff")
_OUTPUT_LABEL = {"jpg": "JPEG", "png": "PNG", "webp": "WebP", "tiff": "TIFF", "bmp": "BMP"}

_BMP_HEADER_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)


def sniff_format(data: bytes) -> str | None:
    """The format of ``data`` from its magic bytes: one of :data:`SOURCE_FORMATS`, or None.

    The file name is never consulted, so a PNG named ``photo.jpg`` is "png".
    """
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    # "BM" alone also starts ordinary text, so the DIB header size must be a real one.
    if (
        head[:2] == b"BM"
        and len(head) >= 18
        and struct.unpack("<I", head[14:18])[0] in (_BMP_HEADER_SIZES)
    ):
        return "bmp"
    return None


def normalize_format(fmt: str) -> str:
    """The canonical output format name for ``fmt`` ("jpeg" -> "jpg", "tif" -> "tiff").

    Raises :class:`UnknownNameError` listing the valid names.
    """
    key = fmt.strip().lower().lstrip(".")
    if key not in _ALIASES:
        raise UnknownNameError("format", fmt, OUTPUT_FORMATS)
    return _ALIASES[key]


def format_extension(fmt: str) -> str:
    """The file extension, without dot, for an output format: jpg, png, webp, tif, bmp."""
    return _EXTENSION[normalize_format(fmt)]


def format_from_name(fmt_or_same: str, sniffed: str | None) -> str:
    """Resolve a recipe's output format: ``"same"`` means the source's format.

    ``sniffed`` is what :func:`sniff_format` said about the source. With "same", JPEG gives
    "jpg", PNG "png", WebP "webp", TIFF "tiff", BMP "bmp", and GIF (which retouch does not
    write) or an unknown source "png". Any other value is normalized as by
    :func:`normalize_format`.
    """
    if fmt_or_same.strip().lower() == "same":
        return _SAME_AS_SOURCE.get(sniffed or "", "png")
    return normalize_format(fmt_or_same)


def format_label(fmt: str) -> str:
    """The usual written name of an output format: JPEG, PNG, WebP, TIFF, BMP."""
    return _OUTPUT_LABEL[normalize_format(fmt)]


def holds_alpha(fmt: str) -> bool:
    """Whether output format ``fmt`` keeps transparency (PNG, WebP, TIFF; not JPEG, BMP)."""
    return normalize_format(fmt) in _HOLDS_ALPHA


def holds_16bit(fmt: str) -> bool:
    """Whether output format ``fmt`` keeps 16 bits per sample (PNG, TIFF; not JPEG, WebP, BMP)."""
    return normalize_format(fmt) in _HOLDS_16BIT


def format_keeping(
    fmt: str, sniffed: str | None, *, alpha: bool = False, sixteen_bit: bool = False
) -> str:
    """``fmt`` if it keeps what is asked (transparency, 16 bits), else a format that does.

    The replacement follows the input: the source's own format (``sniffed``, as from
    :func:`sniff_format`) when it can hold everything asked, else PNG, which holds both.
    E.g. JPEG asked with alpha: a WebP source stays WebP, a TIFF source TIFF, anything else
    PNG; JPEG or WebP asked with 16 bits: a TIFF source stays TIFF, anything else PNG.
    """
    out = normalize_format(fmt)

    def fits(candidate: str) -> bool:
        return (not alpha or candidate in _HOLDS_ALPHA) and (
            not sixteen_bit or candidate in _HOLDS_16BIT
        )

    if fits(out):
        return out
    own = _SAME_AS_SOURCE.get(sniffed or "")
    return own if own is not None and fits(own) else "png"


def _other_format_name(head: bytes) -> str | None:
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"heim", b"heis"):
            return "HEIC/HEIF"
        return "an MP4/QuickTime container"
    for magic, label in (
        (b"%PDF", "PDF"),
        (b"8BPS", "Photoshop PSD"),
        (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
        (b"\xff\x4f\xff\x51", "JPEG 2000"),
        (b"\xff\x0a", "JPEG XL"),
        (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
        (b"\x00\x00\x01\x00", "ICO"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"\x1f\x8b", "a gzip archive"),
    ):
        if head.startswith(magic):
            return label
    return None


def _looks_like_text(data: bytes) -> bool:
    sample = bytes(data[:2048])
    if b"\x00" in sample:
        return False
    for cut in range(4):  # the sample may end inside a multi-byte character
        try:
            text = sample[: len(sample) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return False
    if not text:
        return False
    good = sum(1 for c in text if c.isprintable() or c in "\t\n\r\f\v")
    return good >= 0.95 * len(text)


def not_an_image_reason(data: bytes) -> str:
    if len(data) == 0:
        return "empty file (0 bytes)"
    if _looks_like_text(data):
        return "not an image (looks like text)"
    other = _other_format_name(bytes(data[:32]))
    supported = "supported: JPEG, PNG, WebP, TIFF, BMP, GIF"
    if other:
        return f"unsupported format (looks like {other}; {supported})"
    return f"unsupported format (unrecognised content; {supported})"
