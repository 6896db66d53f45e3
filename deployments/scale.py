"""Run the enhance flow's tasks on a Dask cluster (``prefect-dask``).

Each Dask worker is a process of its own: the first task that needs a model there builds it
in that process's model pool and every later task on the same worker reuses it, so a model
is loaded once per Dask worker, however many chunks the worker processes.

    from retouch.deployments.scale import enhance_on_dask
    enhance_on_dask("tcp://scheduler:8786")(source, dest, preset="quick")   # an existing cluster
    enhance_on_dask(n_workers=2)(source, dest, recipe=recipe)          # a local one for the run

Dask workers report task runs to the Prefect server named by their ``PREFECT_API_URL``: set
it in the workers' environment (a temporary server per process would not be shared).
"""

from __future__ import annotations

from typing import Any


def dask_runner(address: str | None = None, n_workers: int = 2) -> Any:
    """A ``DaskTaskRunner`` on the cluster at ``address``, or on a local cluster of
    ``n_workers`` single-threaded worker processes started for the run."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": n_workers, "threads_per_worker": 1, "processes": True}
    )


def enhance_on_dask(address: str | None = None, n_workers: int = 2) -> Any:
    """The enhance flow with its prepare/process/review/export tasks on Dask."""
    from retouch.flows.enhance import enhance

    return enhance.with_options(task_runner=dask_runner(address, n_workers))
