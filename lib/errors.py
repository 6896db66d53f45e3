"""retouch's own exception types.

Every message names the file or thing concerned and says what to do about it. lib never
prints or exits; the CLI turns these into exit codes.
"""

from __future__ import annotations

from collections.abc import Iterable


class RetouchError(Exception):
    """Base class of every error retouch raises on purpose."""


class InvalidImageError(RetouchError):
    """An input could not be used as an image. ``uri`` names it, ``reason`` says why."""

    def __init__(self, uri: str, reason: str):
        self.uri = uri
        self.reason = reason
        super().__init__(f"{uri}: {reason}")


class InvalidVideoError(InvalidImageError):
    """An input could not be used as a video (no video stream, truncated, no frames...)."""


class UnknownNameError(RetouchError):
    """A name (operation, preset, model, format...) that is not one of the valid ones."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        self.kind = kind
        self.name = name
        self.valid = sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid)}")


class RecipeError(RetouchError):
    """A recipe, preset or override that is not valid."""


class SourceError(RetouchError):
    """A source that cannot be listed (missing folder, empty list, unreadable archive)."""


class StorageError(RetouchError):
    """Reading or writing storage failed after retries."""


class ModelError(RetouchError):
    """A model could not be made available or loaded."""


class ModelNotAvailableError(ModelError):
    """Weights are not on disk and cannot be fetched; the message lists the ways to provide them."""


class ModelChecksumError(ModelError):
    """A weight file does not match the size or sha256 recorded in the registry."""


class OperationError(RetouchError):
    """An operation failed on one image (the batch goes on)."""


def reason_of(exc: BaseException) -> str:
    """What to tell a user about ``exc``: its ``reason`` when it has one (an invalid file),
    else its message."""
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else str(exc)
