"""What the phase tasks share: the backoff between retries of a chunk."""

from __future__ import annotations


def chunk_retry_delays() -> list[float]:
    """Backoff between retries of a whole chunk (storage hiccups outlasting lib's own retries)."""
    return [2.0, 10.0]
