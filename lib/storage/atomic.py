"""Local files replaced atomically: written under a temporary name, then renamed."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress

TEMP_MARKER = ".retouch-tmp-"
"""Part of every temporary file name; such files are never results and may be deleted."""
NAME_MAX = 255  # bytes in one file name on Linux and macOS file systems


def temp_name(path: str) -> str:
    """A temporary file name beside ``path`` that nobody will take for a result."""
    folder, name = os.path.split(path)
    # Never longer than the name allows (255 bytes): a long name is cut, not the user's file.
    room = NAME_MAX - len(TEMP_MARKER) - 9
    short = name.encode()[:room].decode(errors="ignore")
    return os.path.join(folder, f".{short}{TEMP_MARKER}{secrets.token_hex(4)}")


@contextmanager
def atomic_local_file(path: str, *, durable: bool = True) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on
    error it is deleted and ``path`` is left as it was.

    The rename alone makes a killed process harmless (``path`` is the old or the new file,
    never a part). ``durable`` also fsyncs the file and its folder, so the new content
    survives a power cut; files that can be recomputed (cached results, previews) skip it:
    two fsyncs cost more than encoding a small image.
    The parent folder is created if needed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temp_name(os.path.abspath(path))
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(folder)


def fsync_dir(folder: str) -> None:
    # Makes the rename itself durable; not possible on every platform, never fatal.
    with suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
