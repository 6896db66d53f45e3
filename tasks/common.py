"""What the phase tasks share: the run's config (re-exported from lib) and retry delays."""

from __future__ import annotations

from retouch.lib.phases.context import RunConfig

__all__ = ["RunConfig", "chunk_retry_delays"]


def chunk_retry_delays() -> list[float]:
    """Backoff between retries of a whole chunk (storage hiccups outlasting lib's own retries)."""
    return [2.0, 10.0]
