"""How flow runs started from the command line (``retouch run``, ``regenerate``, the web
front door's batches) differ from served deployment runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

HEARTBEAT_VARS = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


@contextmanager
def ad_hoc_run() -> Iterator[None]:
    """Run a flow in this process without Prefect's flow-run heartbeat thread, unless the
    user set a heartbeat frequency.

    The heartbeat tells a server that a run's process is alive. A command-line run is watched
    by whoever started it (the terminal, or the web front door, which reports a vanished
    process itself), and the thread costs about a second at the end of every run: it sleeps in
    one-second steps and the flow engine joins it before the run counts as finished.
    """
    if any(os.environ.get(name) for name in HEARTBEAT_VARS):
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
