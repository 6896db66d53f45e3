"""``retouch deploy``, ``retouch serve``, ``retouch watch`` and ``retouch submit``: running
retouch for a team against a Prefect server (``PREFECT_API_URL``).

The deployments themselves are defined in :mod:`retouch.deployments.serve`; where they look
and deliver is read from ``RETOUCH_TEAM_*`` (see ``TeamConfig``) or given as options here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from retouch.cli.common import console, reported
from retouch.lib.recipe import DEFAULT_PRESET

if TYPE_CHECKING:
    from retouch.deployments.serve import TeamConfig


def _config(
    pool: str | None, inbox: str | None, cron: str | None, preset: str | None
) -> TeamConfig:
    """The ``RETOUCH_TEAM_*`` settings, with what the options give instead."""
    from retouch.deployments.serve import TeamConfig

    given = {"pool": pool, "inbox": inbox, "nightly_cron": cron, "preset": preset}
    return TeamConfig().model_copy(update={k: v for k, v in given.items() if v is not None})


PoolOpt = Annotated[
    str | None, typer.Option(help="Process work pool (default RETOUCH_TEAM_POOL or 'retouch')")
]
InboxOpt = Annotated[
    str | None,
    typer.Option(
        help="Folder or prefix for the nightly run (default RETOUCH_TEAM_INBOX; none: no schedule)"
    ),
]
CronOpt = Annotated[str | None, typer.Option(help="Nightly cron (default '0 2 * * *')")]
PresetOpt = Annotated[
    str | None,
    typer.Option(help=f"Preset for scheduled and triggered runs (default {DEFAULT_PRESET})"),
]


@reported(ValueError)
def deploy(
    pool: PoolOpt = None, inbox: InboxOpt = None, cron: CronOpt = None, preset: PresetOpt = None
) -> None:
    """Apply the deployments to the Prefect server on a process work pool (created with
    'urgent' and 'bulk' queues when missing). Then start workers:
    prefect worker start --pool retouch"""
    from retouch.deployments.deploy import apply

    config = _config(pool, inbox, cron, preset)
    ids = apply(config)
    for name, ident in ids.items():
        typer.echo(f"{name} {ident}")
    console.print(f"start workers with: prefect worker start --pool {escape(config.pool)}")


@reported(ValueError)
def serve(
    inbox: InboxOpt = None,
    cron: CronOpt = None,
    preset: PresetOpt = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve Prometheus metrics of the runs on this port at /metrics (default "
            "RETOUCH_METRICS_PORT; 0: off)",
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(help="Address /metrics listens on (0.0.0.0: every interface; no token)"),
    ] = "127.0.0.1",
) -> None:
    """Serve the deployments from this process (schedules and triggers included) on one box,
    as enhance-served and regenerate-served: apart from those `retouch deploy` applies, which
    keep running when this process stops.

    SIGTERM, SIGHUP or Ctrl-C stops it in order: no new run starts, each run in progress is
    stopped and handed back (AwaitingRetry: the next `retouch serve` runs it again, reusing
    the images finished before the stop); exit status 143 (128 + the signal)."""
    from retouch.deployments.serve import serve_deployments
    from retouch.lib.settings import get_settings

    port = get_settings().metrics_port if metrics_port is None else metrics_port
    serve_deployments(
        _config(None, inbox, cron, preset),
        metrics_port=port,
        metrics_host=metrics_host,
        announce=lambda line: console.print(escape(line)),
    )


@reported()
def watch(
    source: Annotated[str, typer.Argument(help="Folder or prefix to watch (s3://bucket/inbox)")],
    dest: Annotated[str, typer.Option(help="Deliveries go to DEST/<batch>")],
    settle: Annotated[float, typer.Option(min=0, help="Seconds a file must stay unchanged")] = 10.0,
    max_batch: Annotated[int, typer.Option(min=1, help="Most images per batch")] = 50,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between scans")] = 5.0,
    once: Annotated[bool, typer.Option(help="Scan once, announce what is ready, and exit")] = False,
) -> None:
    """Watch SOURCE and announce each settled batch of new images as a
    retouch.images.arrived event (the enhance deployment's trigger runs it)."""
    from retouch.deployments.watch import run_watcher

    def show(payload: dict[str, Any]) -> None:
        typer.echo(json.dumps({k: payload[k] for k in ("source", "dest", "count")}))

    try:
        run_watcher(
            source,
            dest,
            settle_s=settle,
            max_batch=max_batch,
            interval_s=interval,
            once=once,
            on_batch=show,
        )
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@reported(ValueError)
def submit(
    source: Annotated[str, typer.Argument(help="Folder, prefix, list file or ZIP")],
    dest: Annotated[str, typer.Option(help="Where to deliver")],
    preset: Annotated[
        str, typer.Option(help="Preset (shipped or saved) or recipe file")
    ] = DEFAULT_PRESET,
    overrides: Annotated[
        list[str], typer.Option("--set", help="STEP.PARAM=VALUE change to the preset (repeatable)")
    ] = [],  # noqa: B006 (typer reads the default; never mutated)
    urgent: Annotated[
        bool, typer.Option(help="Put the run on the urgent queue, ahead of queued bulk runs")
    ] = False,
    at: Annotated[
        str | None, typer.Option(help="Run at this time (ISO 8601 with timezone) instead of now")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the run to finish; exit 0 only if it completed")
    ] = False,
    served: Annotated[
        bool, typer.Option("--served", help="Queue it on `retouch serve`'s deployment instead")
    ] = False,
) -> None:
    """Queue an enhance run on the deployments (workers pick it up); prints its id."""
    from datetime import datetime

    from retouch.deployments.deploy import submit as submit_run
    from retouch.deployments.deploy import wait_for
    from retouch.deployments.serve import SERVED_SUFFIX
    from retouch.lib.recipe import apply_overrides, is_shipped_preset, load_preset

    when = datetime.fromisoformat(at) if at else None
    # Checked here, so a typo fails now rather than on a worker.
    recipe = apply_overrides(load_preset(preset), overrides)
    params: dict[str, Any] = {"source": source, "dest": dest}
    if is_shipped_preset(preset):
        params |= {"preset": preset, "overrides": overrides}
    else:  # a saved preset or a file exists only here: send it in full
        params["recipe"] = recipe.model_dump(mode="json")
    name = "retouch-enhance/enhance" + (SERVED_SUFFIX if served else "")
    ident = submit_run(name, params, urgent=urgent, at=when)
    typer.echo(str(ident))
    if wait:
        state = wait_for(ident)
        typer.echo(f"{ident}: {state}", err=True)
        raise typer.Exit(0 if state == "Completed" else 2)


def register(app: typer.Typer) -> None:
    """Add ``deploy``, ``serve``, ``watch`` and ``submit`` to the ``retouch`` command line."""
    app.command()(deploy)
    app.command()(serve)
    app.command()(watch)
    app.command()(submit)
