"""The retouch deployments, defined here and only here: ``enhance`` and ``regenerate``.

Two ways to run them:

* ``retouch serve`` (or ``python -m retouch.deployments.serve``): one process serves them
  (schedules and event triggers included) for a single box; needs a Prefect server.
* ``retouch deploy`` (:mod:`retouch.deployments.deploy`): applies them to the configured
  Prefect server on a ``process`` work pool, where any number of
  ``prefect worker start --pool retouch`` processes, on any hosts, share the runs.

Runs started from the Prefect UI get their parameters as forms: ``enhance`` asks for
``source``, ``dest`` and a ``preset`` (a list of the shipped and saved presets, default the
same as ``retouch run``'s) with optional ``overrides``; ``regenerate`` for
``RegenerateOptions``.

``enhance`` carries an event trigger: every ``retouch.images.arrived`` event (sent by
``retouch watch``, by hand with ``prefect event emit``, or by any system) starts a run with
``source`` and ``dest`` taken from the event's payload, using the configured preset. With an
inbox configured it also has a nightly cron schedule over that inbox.

With a metrics port (``retouch serve --metrics-port N`` or ``RETOUCH_METRICS_PORT``), the
serving process answers Prometheus on ``/metrics``. Prefect runs each served flow run in a
process of its own (``multiprocessing`` spawn), so the served flows carry an ``on_running``
hook that makes that process write its progress events to the metrics server's spool
(:func:`retouch.lib.metrics.record_to_spool`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from retouch.lib.recipe import DEFAULT_PRESET

ARRIVED_EVENT = "retouch.images.arrived"
URGENT_QUEUE, BULK_QUEUE = "urgent", "bulk"


class TeamConfig(BaseSettings):
    """Where the shared deployments look and deliver; read from ``RETOUCH_TEAM_*``."""

    model_config = SettingsConfigDict(env_prefix="RETOUCH_TEAM_", extra="ignore")

    pool: str = Field("retouch", description="Process work pool the deployments run on")
    inbox: str | None = Field(
        None, description="Folder or prefix the nightly run enhances (no schedule when unset)"
    )
    nightly_dest: str | None = Field(
        None, description="Where the nightly run delivers (default INBOX/../delivery/nightly)"
    )
    nightly_cron: str = Field("0 2 * * *", description="When the nightly run starts (cron)")
    timezone: str = Field("UTC", description="Time zone of the cron schedule")
    preset: str = Field(DEFAULT_PRESET, description="Preset used by scheduled and triggered runs")


def _with_preset_choices(deployment: Any) -> Any:
    """Offer the shipped and saved presets as a list in the Prefect UI's run form (the flow
    signature can only say ``str``: saved presets are known when the deployment is made)."""
    from retouch.lib.recipe import preset_names

    prop = deployment._parameter_openapi_schema.properties.get("preset")
    if prop is not None:
        prop["enum"] = preset_names()
    return deployment


def nightly_dest(config: TeamConfig) -> str:
    from retouch.lib import storage

    if config.nightly_dest:
        return config.nightly_dest
    assert config.inbox is not None
    parent = config.inbox.rstrip("/").rsplit("/", 1)[0] or "/"
    return storage.join(parent, "delivery", "nightly")


SERVED_SUFFIX = "-served"
"""Added to the names of the deployments ``retouch serve`` serves: Prefect pauses a served
deployment when its process stops, and under the applied deployments' own names that paused
the team's schedule and trigger (``retouch deploy``) whenever a ``serve`` ended."""


def record_metrics(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_running`` hook of the served flows, run in the flow run's own process: its events
    go to the serving process's metrics (nothing when that process serves no metrics)."""
    from retouch.lib.metrics import record_to_spool

    record_to_spool()


_MODULE = "retouch.deployments.serve"  # also when run as ``python -m`` (then __main__)
# The served flows with the metrics hook, by the attribute their entrypoints name.
_METRICS_FLOWS = {
    "enhance_with_metrics": ("retouch.flows.enhance", "enhance"),
    "regenerate_with_metrics": ("retouch.flows.regenerate", "regenerate"),
}


def __getattr__(name: str) -> Any:
    """``enhance_with_metrics`` and ``regenerate_with_metrics``: the flows a flow-run process of
    ``retouch serve --metrics-port`` loads by entrypoint. Built on first use, so that importing
    this module (``TeamConfig``, for the CLI) does not import the flows."""
    if name not in _METRICS_FLOWS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attr = _METRICS_FLOWS[name]
    flow = getattr(importlib.import_module(module), attr)
    return flow.with_options(on_running=[record_metrics])


def deployments(
    config: TeamConfig | None = None, *, served: bool = False, metrics: bool = False
) -> list[Any]:
    """The deployments (also used by ``deploy`` and by tests to check parameters,
    schedules and triggers); ``served``: named for ``retouch serve`` (``enhance-served``,
    ``regenerate-served``), apart from the applied ones; ``metrics``: their flow runs report to
    the serving process's ``/metrics`` (:func:`record_metrics`)."""
    from prefect.deployments.runner import EntrypointType
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Cron

    from retouch.flows.enhance import enhance
    from retouch.flows.regenerate import regenerate
    from retouch.lib.recipe import load_preset

    config = config or TeamConfig()
    suffix = SERVED_SUFFIX if served else ""
    load_preset(config.preset)  # an unknown preset fails here, naming the valid ones
    schedules = []
    if config.inbox:
        schedules.append(
            Cron(
                config.nightly_cron,
                timezone=config.timezone,
                slug="nightly-inbox" + suffix,
                parameters={
                    "source": config.inbox,
                    "dest": nightly_dest(config),
                    "preset": config.preset,
                },
            )
        )
    arrived = DeploymentEventTrigger(
        name="enhance-on-arrival" + suffix,
        description="Enhance each batch of images announced by a retouch.images.arrived event",
        expect={ARRIVED_EVENT},
        match={"prefect.resource.id": "retouch.*"},
        parameters={
            "source": "{{ event.payload.source }}",
            "dest": "{{ event.payload.dest }}",
            "preset": config.preset,
        },
    )
    built = [
        _with_preset_choices(
            enhance.to_deployment(
                name="enhance" + suffix,
                tags=["retouch"],
                description="Batch-enhance a folder, bucket prefix, list or ZIP with a preset",
                schedules=schedules,
                triggers=[arrived],
                work_queue_name=None if served else BULK_QUEUE,  # serve has no pool
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        ),
        regenerate.to_deployment(
            name="regenerate" + suffix,
            tags=["retouch"],
            description="Re-process selected images of an earlier run (recipe plus overrides), "
            "record new versions and re-deliver the run",
            work_queue_name=None if served else BULK_QUEUE,  # serve has no pool
            entrypoint_type=EntrypointType.MODULE_PATH,
        ),
    ]
    if metrics:
        # `serve` starts each flow run as `python -m prefect.engine`, which loads the flow by
        # its entrypoint: there, the same flow with the hook that reports to /metrics.
        for deployment, name in zip(built, _METRICS_FLOWS, strict=True):
            deployment.entrypoint = f"{_MODULE}.{name}"
    return built


def serve_deployments(
    config: TeamConfig | None = None,
    *,
    metrics_port: int = 0,
    metrics_host: str = "127.0.0.1",
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve the deployments from this process until it is stopped; with ``metrics_port``,
    Prometheus metrics of their runs on ``http://metrics_host:metrics_port/metrics``.
    ``announce`` gets the lines for the user (the metrics URL once it answers, what is served)."""
    from retouch.flows.runtime import serve  # prefect.serve, stopped in order (hand-back)
    from retouch.lib.metrics import MetricsServer

    server = MetricsServer(metrics_port, metrics_host) if metrics_port else None
    try:
        if server is not None and announce is not None:
            announce(f"metrics on {server.url}")
        built = deployments(config, served=True, metrics=server is not None)
        serve(*built, announce=announce or print)
    finally:
        if server is not None:
            server.close()


def main() -> None:
    from retouch.lib.settings import get_settings

    serve_deployments(metrics_port=get_settings().metrics_port, announce=print)


if __name__ == "__main__":
    main()
