"""Receiving an upload (a batch, or the one photo of a style comparison): multipart streamed
to disk under limits, then every file checked.

The body is parsed as it arrives (never held in memory or spooled elsewhere), so a count or
size limit stops the upload at the byte that crosses it. Names from the client are made safe
before they touch the disk. After the body, every image and mask is decoded and every video
opened (its first frame decoded): a batch starts only when all of its files are usable, and
any refusal names the file and the reason.
"""

from __future__ import annotations

import errno
import re
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from retouch.lib import sources
from retouch.lib.errors import InvalidImageError
from retouch.lib.imageio import decode, sniff_format
from retouch.lib.settings import Settings
from retouch.lib.video import VIDEO_EXTENSIONS

FILE_FIELDS = ("files", "masks")
TEXT_FIELDS = ("preset", "overrides")
MAX_TEXT_FIELD = 64 * 1024
# Multipart framing beside the file bytes: boundaries and part headers.
PART_OVERHEAD = 2048
# After a limit is crossed the rest of the body is read and dropped (so the client gets the
# answer instead of a broken pipe), up to this much more.
DRAIN_LIMIT = 16 * 1024 * 1024
MAX_DEPTH = 32
_FILENAME_STAR = re.compile(rb"filename\*\s*=\s*([^;]+)", re.IGNORECASE)


class UploadError(Exception):
    """A refused upload: the HTTP status and a message naming the file and the reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_files: int
    max_file_bytes: int
    max_batch_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            settings.web_max_files, settings.web_max_file_bytes, settings.web_max_batch_bytes
        )


@dataclass(frozen=True)
class Form:
    """The parts one endpoint's multipart body may hold: file fields (images go to
    ``staging``/input, masks to ``staging``/masks) and short text fields. ``single``: one
    image only (a style comparison), so the limits are those of one file."""

    files: tuple[str, ...] = FILE_FIELDS
    texts: tuple[str, ...] = TEXT_FIELDS
    single: bool = False
    videos: bool = False  # videos are accepted as files (never as masks)

    def fields(self) -> str:
        return ", ".join(self.files + self.texts)

    def limits(self, settings: Settings) -> Limits:
        if self.single:
            size = settings.web_max_file_bytes
            return Limits(1, size, size)
        return Limits.from_settings(settings)

    def accepts(self, field_name: str, name: str) -> bool:
        """Whether ``name``'s extension is one this field takes."""
        if sources.is_image_name(name):
            return True
        return self.videos and field_name != "masks" and sources.is_video_name(name)

    def refusal(self, field_name: str, name: str) -> str:
        """Why ``name`` is refused by its extension, with the extensions that are taken."""
        ext = sources.extension(name)
        got = "." + ext if ext else "none"
        images = ", ".join(sorted(sources.IMAGE_EXTENSIONS))
        if field_name == "masks":
            return f"mask {name}: not an image file extension ({got}); masks are images: {images}"
        if not self.videos:
            return f"{name}: not an image file extension ({got}); supported: {images}"
        videos = ", ".join(sorted(VIDEO_EXTENSIONS))
        return (
            f"{name}: not an image or video file extension ({got}); supported: images {images}; "
            f"videos {videos}"
        )


BATCH_FORM = Form(videos=True)


@dataclass
class Upload:
    """What one request brought: safe names and where each file was written."""

    files: dict[str, Path] = field(default_factory=dict)
    masks: dict[str, Path] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    bytes: int = 0


def safe_name(raw: str) -> str:
    """A client's file name (maybe a relative path from a dropped folder) as a safe relative
    path: separators unified, '.' and empty parts dropped, '..' resolved but never above the
    top. Hidden parts, control characters, colons and absurd lengths are refused rather than
    changed."""
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise UploadError(400, f"{raw!r}: control characters in the file name")
    parts: list[str] = []
    for part in raw.replace("\\", "/").split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    if not parts:
        raise UploadError(400, f"{raw!r}: no file name")
    if len(parts) > MAX_DEPTH:
        raise UploadError(400, f"{raw}: folders nested deeper than {MAX_DEPTH} levels")
    for part in parts:
        if part.startswith("."):
            raise UploadError(400, f"{raw}: hidden names (starting with '.') are not accepted")
        if part == "__MACOSX":
            raise UploadError(400, f"{raw}: archiver metadata folder, not an image")
        if ":" in part:
            raise UploadError(400, f"{raw}: ':' is not allowed in file names")
        if len(part.encode("utf-8", "surrogateescape")) > 255:
            raise UploadError(400, f"{raw[:80]}...: a name part is longer than 255 bytes")
    return "/".join(parts)


def _decode_header(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _filename(disposition: bytes, options: dict[bytes, bytes]) -> str | None:
    """The part's file name: RFC 5987 ``filename*`` (which the parser drops) wins over
    ``filename``."""
    star = _FILENAME_STAR.search(disposition)
    if star:
        value = star.group(1).strip().strip(b'"').decode("latin-1")
        charset, _, rest = value.partition("'")
        _lang, _, encoded = rest.partition("'")
        try:
            return urllib.parse.unquote(encoded, encoding=charset or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            raise UploadError(400, f"file name {value!r}: cannot be decoded") from None
    if b"filename" in options:
        return _decode_header(options[b"filename"])
    return None


class _Receiver:
    """The callbacks of python-multipart's streaming parser, writing files as they come."""

    def __init__(self, staging: Path, limits: Limits, form: Form = BATCH_FORM):
        self.staging = staging
        self.limits = limits
        self.form = form
        self.upload = Upload()
        self.error: UploadError | None = None
        self.count = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._hname = b""
        self._hvalue = b""
        self._field: str | None = None
        self._name = ""
        self._out: IO[bytes] | None = None
        self._text: bytearray | None = None
        self._size = 0

    # -- helpers ---------------------------------------------------------------------------
    def fail(self, status: int, message: str) -> None:
        if self.error is None:
            self.error = UploadError(status, message)
        self._close()

    def _close(self) -> OSError | None:
        """Close the file being written; returns the error when its last bytes could not be
        written (a full disk shows at the flush)."""
        out, self._out = self._out, None
        if out is not None:
            try:
                out.close()
            except OSError as exc:
                return exc
        return None

    def close(self) -> None:
        self._close()

    # -- callbacks ---------------------------------------------------------------------------
    def on_part_begin(self) -> None:
        self._headers = []
        self._field = None
        self._text = None
        self._size = 0

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def on_header_end(self) -> None:
        self._headers.append((self._hname.lower(), self._hvalue))
        self._hname = self._hvalue = b""

    def on_headers_finished(self) -> None:
        if self.error is not None:
            return
        disposition = next((v for k, v in self._headers if k == b"content-disposition"), b"")
        _kind, options = parse_options_header(disposition)
        name = _decode_header(options.get(b"name", b""))
        try:
            filename = _filename(disposition, options)
        except UploadError as exc:
            self.fail(exc.status, exc.message)
            return
        form = self.form
        if filename is None:
            if name in form.files:
                self.fail(400, f"field {name!r}: a part without a file name (send files)")
            elif name not in form.texts:
                self.fail(400, f"unknown form field {name!r}; fields: {form.fields()}")
            else:
                self._field, self._text = name, bytearray()
            return
        if name not in form.files:
            where = (
                f"send the image as {form.files[0]!r}"
                if form.single
                else "send images as 'files', masks as 'masks'"
            )
            self.fail(400, f"{filename}: sent as field {name!r}; {where}")
            return
        self.count += 1
        if self.count > self.limits.max_files:
            if form.single:
                self.fail(400, f"{filename}: a second file; send one image only")
            else:
                self.fail(
                    400,
                    f"{filename}: too many files; at most {self.limits.max_files} per batch "
                    "(images and masks together; RETOUCH_WEB_MAX_FILES)",
                )
            return
        try:
            safe = safe_name(filename)
        except UploadError as exc:
            self.fail(exc.status, exc.message)
            return
        if not form.accepts(name, safe):
            self.fail(415, form.refusal(name, safe))
            return
        target_map = self.upload.masks if name == "masks" else self.upload.files
        if safe in target_map:
            self.fail(400, f"{safe}: the same file name was sent twice")
            return
        target = self.staging / ("masks" if name == "masks" else "input") / safe
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._out = open(target, "xb")  # noqa: SIM115  (closed at the part's end)
        except OSError as exc:
            if _out_of_space(exc):
                self._no_space(safe, exc)
            else:
                self.fail(400, f"{safe}: cannot be stored beside the other files ({exc.strerror})")
            return
        target_map[safe] = target
        self._field, self._name = name, safe

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None or self._field is None:
            return
        size = end - start
        self._size += size
        if self._text is not None:
            if self._size > MAX_TEXT_FIELD:
                self.fail(400, f"field {self._field!r}: longer than {MAX_TEXT_FIELD} bytes")
                return
            self._text += data[start:end]
            return
        if self._size > self.limits.max_file_bytes:
            self.fail(
                413,
                f"{self._name}: larger than the limit of {self.limits.max_file_bytes} bytes per "
                "file (RETOUCH_WEB_MAX_FILE_BYTES)",
            )
            return
        self.upload.bytes += size
        if self.upload.bytes > self.limits.max_batch_bytes:
            self.fail(
                413,
                f"{self._name}: the upload passes the limit of {self.limits.max_batch_bytes} "
                "bytes per batch (RETOUCH_WEB_MAX_BATCH_BYTES)",
            )
            return
        assert self._out is not None
        try:
            self._out.write(data[start:end])
        except OSError as exc:
            self._no_space(self._name, exc)

    def _no_space(self, name: str, exc: OSError) -> None:
        """The server's disk (or quota) is full, or writing failed: 507, naming the file."""
        why = "the server's disk is full" if _out_of_space(exc) else "the server cannot write"
        self.fail(
            507, f"{name}: cannot be stored: {why} ({exc.strerror or exc}); nothing was started"
        )

    def on_part_end(self) -> None:
        if self.error is not None:
            return
        if self._text is not None and self._field is not None:
            if self._field in self.upload.fields:
                self.fail(400, f"field {self._field!r} was sent twice")
                return
            self.upload.fields[self._field] = _decode_header(bytes(self._text))
        failed = self._close()
        if failed is not None:
            self._no_space(self._name, failed)
            return
        self._field = None

    def on_end(self) -> None:
        pass

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }


def _out_of_space(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def boundary_of(content_type: str | None, form: Form = BATCH_FORM) -> bytes:
    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        what = "the image" if form.single else "the batch"
        raise UploadError(415, f"send {what} as multipart/form-data ({form.fields()})")
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError(400, "multipart/form-data without a boundary")
    return boundary


async def receive(
    content_type: str | None,
    content_length: str | None,
    stream: AsyncIterator[bytes],
    staging: Path,
    limits: Limits,
    form: Form = BATCH_FORM,
) -> Upload:
    """Parse one multipart body into ``staging``/input and ``staging``/masks; ``form`` says
    which fields it may hold.

    Raises:
        UploadError: a limit was crossed or a part is unacceptable (what was written is left
            for the caller to delete with ``staging``).
    """
    boundary = boundary_of(content_type, form)
    allowance = limits.max_batch_bytes + PART_OVERHEAD * (limits.max_files + 4) + MAX_TEXT_FIELD
    limit = (
        f"{limits.max_file_bytes} bytes per file (RETOUCH_WEB_MAX_FILE_BYTES)"
        if form.single
        else f"{limits.max_batch_bytes} bytes per batch (RETOUCH_WEB_MAX_BATCH_BYTES)"
    )
    if content_length and content_length.isdigit() and int(content_length) > allowance:
        raise UploadError(
            413, f"the upload ({int(content_length)} bytes) is over the limit of {limit}"
        )
    receiver = _Receiver(staging, limits, form)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    read = 0
    drained = 0
    try:
        async for chunk in stream:
            read += len(chunk)
            if receiver.error is not None:
                drained += len(chunk)
                if drained > DRAIN_LIMIT:
                    break
                continue
            parser.write(chunk)
            if read > allowance and receiver.error is None:
                receiver.fail(413, f"the upload is over the limit of {limit}")
        if receiver.error is None:
            parser.finalize()
    except FormParserError as exc:
        receiver.fail(400, f"malformed multipart body: {exc}")
    finally:
        receiver.close()
    if receiver.error is not None:
        raise receiver.error
    if receiver._field is not None:
        raise UploadError(400, "the multipart body ends inside a part (upload cut short?)")
    return receiver.upload


def check_image(path: Path, name: str, pixel_limit: int) -> None:
    """Decode the file completely: a file that fails here would fail the batch later.

    Raises:
        UploadError: 415 for a file that is no supported image, 422 for a damaged one.
    """
    data = path.read_bytes()
    try:
        decode(data, name, pixel_limit=pixel_limit)
    except InvalidImageError as exc:
        status = 415 if sniff_format(data) is None else 422
        raise UploadError(status, f"{name}: {exc.reason}") from None
    except MemoryError:
        raise UploadError(422, f"{name}: too large to decode on this server") from None


def check_video(path: Path, name: str, pixel_limit: int) -> None:
    """Open the video and decode its first frame: a file that is no video, holds no video
    stream or cannot be decoded is refused now. (The run decodes every frame; a clip
    damaged further in fails there, on its own, as in ``retouch run``.)

    Raises:
        UploadError: 415 for a file that is not a video, 422 for a damaged or oversized one.
    """
    import av

    from retouch.lib.errors import InvalidVideoError
    from retouch.lib.video.media import ff_reason, open_input, video_stream

    try:
        with open_input(str(path), name) as container:
            stream = video_stream(container, name)
            width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
            if width * height > pixel_limit:
                raise UploadError(
                    422,
                    f"{name}: frames of {width}x{height} exceed the pixel limit of "
                    f"{pixel_limit} (RETOUCH_PIXEL_LIMIT)",
                )
            try:
                first = next(container.decode(stream), None)
            except av.FFmpegError as exc:
                raise UploadError(
                    422, f"{name}: its first frame cannot be decoded ({ff_reason(exc)})"
                ) from None
            if first is None:
                raise UploadError(422, f"{name}: the video stream holds no frames")
    except InvalidVideoError as exc:  # not openable as a video, or no video stream in it
        raise UploadError(415, f"{name}: {exc.reason}") from None
    except MemoryError:
        raise UploadError(422, f"{name}: too large to decode on this server") from None


def check_upload(upload: Upload, staging: Path, pixel_limit: int) -> list[str]:
    """Check every received file; returns the image and video names in the order a run
    sees them.

    Raises:
        UploadError: no files, a file that is not a usable image, video or mask, or a file
            the run's own discovery would pass over.
    """
    if not upload.files:
        raise UploadError(400, "no images or videos: send one or more files in the 'files' field")
    for name, path in upload.files.items():
        if sources.is_video_name(name):
            check_video(path, name, pixel_limit)
        else:
            check_image(path, name, pixel_limit)
    for name, path in upload.masks.items():
        check_image(path, f"mask {name}", pixel_limit)
    found = sources.discover(str(staging / "input"))
    seen = {item.name for item in found.items}
    for name in upload.files:
        if name not in seen:
            why = next((r for uri, r in found.skipped if uri.endswith(name)), "not found")
            raise UploadError(400, f"{name}: would be skipped by the run ({why})")
    return [item.name for item in found.items]
