"""Apply the retouch deployments to the configured Prefect server, on a ``process`` work pool.

    PREFECT_API_URL=http://prefect-host:4200/api retouch deploy
    prefect worker start --pool retouch        # on every host that should do the work

The pool is created when missing, with two work queues: ``urgent`` (priority 1) ahead of
``bulk`` (priority 2). Deployments put their runs on ``bulk``; a run created on ``urgent``
(:func:`submit`, ``retouch submit --urgent``) is picked up by the next free worker before any
queued bulk run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from retouch.deployments.serve import BULK_QUEUE, URGENT_QUEUE, TeamConfig, deployments

QUEUE_PRIORITIES = {URGENT_QUEUE: 1, BULK_QUEUE: 2}


def ensure_pool(pool: str) -> None:
    """Create the process work pool ``pool`` and its urgent/bulk queues when missing, and
    set the queue priorities (lower runs first)."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            found = client.read_work_pool(pool)
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template()
            found = client.create_work_pool(
                WorkPoolCreate(name=pool, type="process", base_job_template=template)
            )
        if found.type != "process":
            raise ValueError(
                f"work pool {pool!r} exists with type {found.type!r}; retouch needs a 'process' "
                "pool: give another name (RETOUCH_TEAM_POOL) or delete that pool"
            )
        for name, priority in QUEUE_PRIORITIES.items():
            try:
                queue = client.read_work_queue_by_name(name, work_pool_name=pool)
            except ObjectNotFound:
                queue = client.create_work_queue(name=name, work_pool_name=pool)
            if queue.priority != priority:
                client.update_work_queue(queue.id, priority=priority)


def apply(config: TeamConfig | None = None) -> dict[str, UUID]:
    """Create or update the deployments on the server (pool created when missing); returns
    their ids by name. Call it where no event loop is running (a CLI, a thread)."""
    config = config or TeamConfig()
    ensure_pool(config.pool)
    ids: dict[str, UUID] = {}
    for deployment in deployments(config):
        ids[deployment.name] = deployment.apply(work_pool_name=config.pool)
    return ids


def submit(
    name: str, parameters: dict[str, Any], *, urgent: bool = False, at: datetime | None = None
) -> UUID:
    """Queue a run of deployment ``name`` (``flow/deployment``) without waiting for it: on the
    urgent queue (ahead of every queued bulk run) with ``urgent``, else on the deployment's
    own queue; ``at`` schedules it for that time (timezone-aware) instead of now. Returns
    the flow run's id."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    if at is not None and at.tzinfo is None:
        raise ValueError(f"give the run time {at.isoformat()} with a timezone (e.g. +00:00)")
    run = run_deployment(
        name,
        parameters=parameters,
        work_queue_name=URGENT_QUEUE if urgent else None,
        scheduled_time=at,
        timeout=0,
        as_subflow=False,
    )
    # Called from synchronous code, run_deployment returns the flow run, not a coroutine.
    assert isinstance(run, FlowRun)
    return run.id


def wait_for(flow_run_id: UUID, poll_s: float = 2.0) -> str:
    """Wait until the flow run reaches a final state; returns that state's name."""
    import time

    from prefect import get_client

    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(flow_run_id).state
            if state is not None and state.is_final():
                return state.name or state.type.value
            time.sleep(poll_s)


def run_urgent(name: str, parameters: dict[str, Any]) -> UUID:
    """Queue a run of deployment ``name`` on the urgent queue (see :func:`submit`)."""
    return submit(name, parameters, urgent=True)
