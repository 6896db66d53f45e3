"""Run the enhance flow's tasks on a Dask cluster (``prefect-dask``), of a fixed size or
adaptive; and how to scale Prefect process workers by queue depth.

Each Dask worker is a process of its own: the first task that needs a model there builds it
in that process's model pool and every later task on the same worker reuses it, so a model
is loaded once per Dask worker, however many chunks the worker processes.

    from retouch.deployments.scale import enhance_on_dask, local_cluster
    enhance_on_dask("tcp://scheduler:8786")(source, dest, preset="quick")   # an existing cluster
    enhance_on_dask(n_workers=2)(source, dest, recipe=recipe)          # a local one for the run
    enhance_on_dask(adapt=(1, 4))(source, dest, recipe=recipe)         # local, 1-4 workers

    with local_cluster(adapt=(1, 4)) as cluster:                       # a service: one cluster,
        flow = enhance_on_dask(cluster.scheduler_address)              # many runs
        flow(source, dest, recipe=recipe)

Dask workers report task runs to the Prefect server named by their ``PREFECT_API_URL``: set
it in the workers' environment (a temporary server per process would not be shared).

Adaptive clusters
-----------------
``adapt=(minimum, maximum)`` starts ``minimum`` single-threaded worker processes and lets
Dask's adaptive logic (``distributed.deploy.Adaptive``) move between the two every
``interval``: it asks for as many workers as the queued and running tasks need to finish in
``target_duration`` (from each kind of task's measured duration), never more than there are
tasks to run, and retires a worker only after it was found idle and closable at
``wait_count`` checks in a row.

- Which workers go: Dask's ``Scheduler.workers_to_close`` only offers workers with no task
  processing (and keeps enough memory for the data held), the choice must hold at
  ``wait_count`` checks in a row, and a retiring worker stops taking tasks, hands the results
  it alone holds to another worker, then closes. A chunk being computed is therefore not
  cut by a scale-down. What Dask does not promise is the instant between its last check and
  the retirement: a task sent to the worker then is, once the worker is gone, run again
  from the start on another one (the scheduler's ``remove-worker`` event lists such
  ``processing-tasks``; the adaptive test asserts there were none). A re-run chunk writes the
  same content-keyed results, each atomically: it costs time, not results.
- A retired worker takes its model pool with it; the next worker started loads the models
  again (once). ``wait_count`` x ``interval`` (10 s by default) is how long a worker must be
  idle before it goes, so the short gaps between a run's chunks never cost a reload.
- A flow run keeps at most the ``workers`` setting (``RETOUCH_WORKERS``) chunk task runs in
  flight, so one run never asks for more workers than that: set it to at least ``maximum``.
- A local cluster made for one run (``enhance_on_dask(adapt=...)``) closes with the run, so
  it is only worth it for long runs. A service starts one cluster (:func:`local_cluster`) and
  runs every flow on it: its workers, with their loaded models, outlive each run and are
  retired only once the queue stays empty.
- A cluster of its own (``dask scheduler`` + workers, dask-kubernetes, dask-jobqueue) is
  adapted by its own ``cluster.adapt(minimum=..., maximum=...)``; retouch connects by
  ``address`` and has no say in it.

Scaling Prefect process workers by queue depth
----------------------------------------------
``retouch deploy``'s work pool is a *process* pool: each ``prefect worker start --pool
retouch`` polls it and runs flow runs as child processes, at most ``--limit`` at a time. On
one host that limit, not a count of worker processes, is the parallelism: one worker with
``--limit N``, and the whole pool capped with ``prefect work-pool set-concurrency-limit
retouch N``. To follow the load (more hosts, or more runs where memory allows), scale on the
queue's depth, the runs due now that no worker has taken yet::

    from datetime import UTC, datetime
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter, FlowRunFilterNextScheduledStartTime, FlowRunFilterState,
        FlowRunFilterStateType, WorkPoolFilter, WorkPoolFilterName)
    from prefect.client.schemas.objects import StateType

    async def queue_depth(pool: str = "retouch") -> int:
        async with get_client() as client:
            return await client.count_flow_runs(
                work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(
                        any_=[StateType.SCHEDULED, StateType.PENDING])),
                    next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(
                        before_=datetime.now(UTC))))   # not tomorrow's nightly run

and start, every few seconds while ``queue_depth() > 0`` and fewer than MAX are running,
one more ``prefect worker start --pool retouch --run-once --limit K``. Such a worker polls
once, takes up to K due runs, waits for them to finish and exits by itself (checked against
a test server: 3 runs due and 1 scheduled for tomorrow gave a depth of 3; a run-once worker
with ``--limit 2`` took 2, exited 0 once both were final, and the depth was 1). Scaling in is
then nothing at all: a worker is never stopped with a run in its hands, so no run is cut.
The same count can drive a platform's autoscaler instead (a KEDA ScaledJob, a custom metric
of a cloud autoscaling group) with the same run-once command as its job.

There is no ``retouch workers`` command for this: starting, counting and reaping processes,
with restarts and logs, is what systemd, Kubernetes or a cloud autoscaler already do, and the
one thing they need from Prefect is the count above, which such a command would only wrap
(and would have to supervise and keep running itself).
"""

from __future__ import annotations

from typing import Any

TARGET_DURATION = "1s"
"""Adaptive sizing: workers enough to finish the tasks in flight in this long. Short, because
a run keeps only a few chunk tasks in flight (the ``workers`` setting), each of which takes
seconds with a model: with Dask's own 5 s default, two 2-second chunks would never ask for
a second worker. With 1 s every chunk task of a second or more gets a worker (up to
``maximum``), while sub-second tasks share one."""

INTERVAL = "1s"
"""Adaptive sizing: how often the cluster's size is reconsidered (Dask's default)."""

WAIT_COUNT = 10
"""Adaptive sizing: checks in a row a worker must be found idle before it is retired
(x ``interval``: 10 s), longer than Dask's default 3 because a retired worker's models must
be loaded again by the next one."""


def adapt_options(
    adapt: tuple[int, int],
    *,
    target_duration: str | float = TARGET_DURATION,
    interval: str | float = INTERVAL,
    wait_count: int = WAIT_COUNT,
) -> dict[str, Any]:
    """The arguments of ``cluster.adapt`` for ``adapt=(minimum, maximum)`` workers.

    Raises ValueError unless 0 <= minimum <= maximum, 1 <= maximum and 1 <= wait_count.
    """
    minimum, maximum = adapt
    if not 0 <= minimum <= maximum or maximum < 1:
        raise ValueError(
            f"adapt={adapt!r}: give (minimum, maximum) workers with 0 <= minimum <= maximum "
            "and maximum >= 1, e.g. adapt=(1, 4)"
        )
    if wait_count < 1:
        raise ValueError(f"wait_count={wait_count}: give at least 1 (checks in a row)")
    return {
        "minimum": minimum,
        "maximum": maximum,
        "target_duration": target_duration,
        "interval": interval,
        "wait_count": wait_count,
    }


def _worker_options(n_workers: int) -> dict[str, Any]:
    # One thread per worker process: the models use every core through torch's own threads,
    # and a model pool per process is what "loaded once per worker" means.
    return {"n_workers": n_workers, "threads_per_worker": 1, "processes": True}


def local_cluster(
    n_workers: int = 2,
    adapt: tuple[int, int] | None = None,
    *,
    target_duration: str | float = TARGET_DURATION,
    interval: str | float = INTERVAL,
    wait_count: int = WAIT_COUNT,
    **cluster_kwargs: Any,
) -> Any:
    """A Dask ``LocalCluster`` of single-threaded worker processes that outlives flow runs:
    ``n_workers`` of them, or with ``adapt=(minimum, maximum)`` ``minimum`` to start with,
    sized by Dask's adaptive logic (see the module's notes). Run flows on it with
    ``enhance_on_dask(cluster.scheduler_address)``; close it (or use it as a context
    manager) when done. ``cluster_kwargs`` go to ``LocalCluster`` (``memory_limit``,
    ``dashboard_address``, ...)."""
    from distributed import LocalCluster

    options = (
        adapt_options(
            adapt, target_duration=target_duration, interval=interval, wait_count=wait_count
        )
        if adapt
        else None
    )
    start = options["minimum"] if options else n_workers
    cluster = LocalCluster(**{**_worker_options(start), **cluster_kwargs})
    if options:
        cluster.adapt(**options)
    return cluster


def dask_runner(
    address: str | None = None,
    n_workers: int = 2,
    adapt: tuple[int, int] | None = None,
    *,
    target_duration: str | float = TARGET_DURATION,
    interval: str | float = INTERVAL,
    wait_count: int = WAIT_COUNT,
) -> Any:
    """A ``DaskTaskRunner`` on the cluster at ``address``, or on a local cluster started for
    the run: ``n_workers`` single-threaded worker processes, or with ``adapt=(minimum,
    maximum)`` an adaptive one (see the module's notes)."""
    from prefect_dask import DaskTaskRunner

    if address:
        if adapt:
            raise ValueError(
                "adapt applies to a local cluster started for the run; a cluster at an "
                "address is sized by its own cluster.adapt(...): leave adapt out"
            )
        return DaskTaskRunner(address=address)
    if adapt:
        options = adapt_options(
            adapt, target_duration=target_duration, interval=interval, wait_count=wait_count
        )
        return DaskTaskRunner(
            cluster_kwargs=_worker_options(options["minimum"]), adapt_kwargs=options
        )
    return DaskTaskRunner(cluster_kwargs=_worker_options(n_workers))


def enhance_on_dask(
    address: str | None = None,
    n_workers: int = 2,
    adapt: tuple[int, int] | None = None,
    *,
    target_duration: str | float = TARGET_DURATION,
    interval: str | float = INTERVAL,
    wait_count: int = WAIT_COUNT,
) -> Any:
    """The enhance flow with its prepare/process/review/export tasks on Dask
    (:func:`dask_runner`'s cluster)."""
    from retouch.flows.enhance import enhance

    runner = dask_runner(
        address,
        n_workers,
        adapt,
        target_duration=target_duration,
        interval=interval,
        wait_count=wait_count,
    )
    return enhance.with_options(task_runner=runner)
