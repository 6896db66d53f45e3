"""How flow runs started from the command line (``retouch run``, ``regenerate``, the web
front door's batches) differ from served deployment runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

HEARTBEAT_VARS = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")

_ad_hoc = 0


def release_memory_after_run() -> None:
    """At the end of a flow run: give freed memory back to the system
    (:func:`retouch.lib.perf.release_memory`), which a long-running worker needs to stay flat
    batch after batch. Not in a command-line run (:func:`ad_hoc_run`): its process exits
    right after, and the full garbage collection costs ~0.3 s with the model stack loaded."""
    if _ad_hoc:
        return
    from retouch.lib import perf

    perf.release_memory()


@contextmanager
def ad_hoc_run() -> Iterator[None]:
    """Run a flow in this process without Prefect's flow-run heartbeat thread, unless the
    user set a heartbeat frequency.

    The heartbeat tells a server that a run's process is alive. A command-line run is watched
    by whoever started it (the terminal, or the web front door, which reports a vanished
    process itself), and the thread costs about a second at the end of every run: it sleeps in
    one-second steps and the flow engine joins it before the run counts as finished.
    Nor does the run give memory back at its end (:func:`release_memory_after_run`).
    """
    global _ad_hoc
    _ad_hoc += 1
    try:
        if any(os.environ.get(name) for name in HEARTBEAT_VARS):
            yield
            return
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield
    finally:
        _ad_hoc -= 1
