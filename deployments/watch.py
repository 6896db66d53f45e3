"""The watcher service: announce batches of new images as ``retouch.images.arrived`` events.

It polls a local folder or a bucket prefix (:class:`retouch.lib.watch.Watcher`: settle time,
batch size, what was seen kept in the workspace), writes each settled batch as a list file
in the workspace, and sends one Prefect event per batch; the ``enhance`` deployment's trigger
turns the event into a run. A batch is recorded as seen only once the server has accepted
its event, so a watcher stopped at any moment neither loses nor repeats a batch.

The event, which any system can send as well (``prefect event emit``)::

    event:    retouch.images.arrived
    resource: {"prefect.resource.id": "retouch.watch.<hash of the source>"}
    payload:  {"source": "<folder, prefix or list file>", "dest": "<delivery folder>",
               "uris": [...], "count": N}
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable
from typing import Any

from retouch.deployments.serve import ARRIVED_EVENT
from retouch.lib import storage
from retouch.lib.watch import Watcher, write_batch_list


def resource_id(source: str) -> str:
    return "retouch.watch." + hashlib.sha256(source.rstrip("/").encode()).hexdigest()[:16]


def batch_payload(source: str, batch: list[str], dest: str) -> dict[str, Any]:
    """The event payload for ``batch``: a list file as ``source`` and a delivery folder of its
    own under ``dest`` (named like the list file, so a re-sent batch delivers to one place)."""
    listed = write_batch_list(batch)
    name = listed.rsplit("/", 1)[-1].removesuffix(".txt")
    return {"source": listed, "dest": storage.join(dest, name), "uris": batch, "count": len(batch)}


def send_event(source: str, payload: dict[str, Any]) -> None:
    """Send one arrival event and return once the server has it (raises when it can't)."""
    from prefect.events import Event
    from prefect.events.clients import get_events_client

    event = Event(
        event=ARRIVED_EVENT,
        resource={
            "prefect.resource.id": resource_id(source),
            "prefect.resource.name": storage.redact(source),
        },
        payload=payload,
    )

    async def emit() -> None:
        async with get_events_client(reconnection_attempts=2) as client:
            await client.emit(event)

    asyncio.run(emit())


def run_watcher(
    source: str,
    dest: str,
    *,
    settle_s: float = 10.0,
    max_batch: int = 50,
    interval_s: float = 5.0,
    stop: threading.Event | None = None,
    once: bool = False,
    on_batch: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Poll ``source`` every ``interval_s`` seconds until ``stop`` is set (or after one
    poll with ``once``) and announce each settled batch; returns the number of batches sent."""
    watcher = Watcher(source, settle_s=settle_s, max_batch=max_batch)
    stop = stop or threading.Event()
    sent = 0
    while True:
        for batch in watcher.poll():
            payload = batch_payload(source, batch, dest)
            send_event(source, payload)
            watcher.mark_seen(batch)
            sent += 1
            if on_batch is not None:
                on_batch(payload)
        if once or stop.wait(interval_s):
            return sent
